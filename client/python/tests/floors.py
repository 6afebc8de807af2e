"""The lowest version of each dependency causeway-client declares, test extras included, read
from the installed package's metadata.

`tests/test_package.py` checks the generated stubs need no more than these. Run as a script,
this prints them as `name==version` lines, which .ci/run resolves together
(`pip install --dry-run -r`): a floor pip can never pick beside the others is a false promise.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import Version


def declared_floors() -> dict[str, Version]:
    """Each declared dependency's lowest admitted version, by name. Fails on a dependency
    declared without a lower bound."""
    floors: dict[str, Version] = {}
    for text in metadata.requires("causeway-client") or []:
        requirement = Requirement(text)
        bounds = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        if not bounds:
            raise ValueError(f"{requirement.name} is declared without a lower bound: {text}")
        floors[requirement.name] = max(bounds)
    return floors


if __name__ == "__main__":
    try:
        floors = declared_floors()
    except ValueError as err:
        sys.exit(str(err))
    for name, version in floors.items():
        print(f"{name}=={version}")
