"""The installed package imports under every version its metadata admits.

The generated stubs refuse to import under a grpcio older than the grpcio-tools that made them
(`GRPC_GENERATED_VERSION`) and under a protobuf older than the one they were generated for
(`ValidateProtobufRuntimeVersion`). If the package declared a lower floor, a user whose
environment already holds that older version would install it cleanly and then fail on
`import causeway_client`. These tests read the generated files as text, so they hold whatever
versions this environment happens to have.
"""

from __future__ import annotations

import re
from importlib import resources

from packaging.version import Version

from floors import declared_floors

GRPC_GENERATED = re.compile(r"^GRPC_GENERATED_VERSION = '([0-9.]+)'$", re.MULTILINE)
PROTOBUF_GENERATED = re.compile(
    r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*"
    r"(\d+),\s*(\d+),\s*(\d+),"
)


def declared_floor(name: str) -> Version:
    """The lowest version of `name` that causeway-client's metadata admits."""
    floors = declared_floors()
    assert name in floors, f"causeway-client does not declare {name}"
    return floors[name]


def generated_sources(suffix: str) -> dict[str, str]:
    """The generated modules of `causeway_client.pb` ending in `suffix`, by file name."""
    files = resources.files("causeway_client.pb")
    sources = {
        entry.name: entry.read_text()
        for entry in files.iterdir()
        if entry.name.endswith(suffix)
    }
    assert sources, f"no generated *{suffix} in causeway_client.pb"
    return sources


def test_the_grpc_stubs_need_no_newer_grpcio_than_declared() -> None:
    floor = declared_floor("grpcio")
    for name, source in generated_sources("_pb2_grpc.py").items():
        found = GRPC_GENERATED.search(source)
        assert found, f"{name} has no GRPC_GENERATED_VERSION"
        needed = Version(found.group(1))
        assert needed <= floor, f"{name} needs grpcio {needed}, the package declares >={floor}"


def test_the_messages_need_no_newer_protobuf_than_declared() -> None:
    floor = declared_floor("protobuf")
    for name, source in generated_sources("_pb2.py").items():
        found = PROTOBUF_GENERATED.search(source)
        assert found, f"{name} has no protobuf runtime check"
        needed = Version(".".join(found.groups()))
        assert needed <= floor, f"{name} needs protobuf {needed}, the package declares >={floor}"
