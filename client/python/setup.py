"""Build step of causeway-client: generate the gRPC stubs from the API's .proto files.

The stubs are never committed. `build_py` runs `grpc_tools.protoc` (a build requirement, see
pyproject.toml) over `causeway/v1/*.proto` and writes the modules into the built package as
`causeway_client.pb`, rewriting protoc's absolute imports (`from causeway.v1 import ...`) so the
package installs no top-level `causeway` module. The descriptors keep their proto names
(`causeway/v1/event.proto`), as the server's reflection service knows them.

The protos come from `proto/` beside this file when present (an sdist carries a copy there, made
by the `sdist` step below), else from the repository's `proto/` two folders up, so
`pip install ./client/python` works from a clean clone.
"""

import re
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
API_DIR = Path("causeway") / "v1"
PROTOC_IMPORT = re.compile(r"^from causeway\.v1 import ", re.MULTILINE)
PROTO_IMPORT = re.compile(r'^import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', re.MULTILINE)


def proto_root() -> Path:
    """The folder that holds `causeway/v1/*.proto`: the sdist's copy or the repository's."""
    for candidate in (HERE / "proto", HERE.parent.parent / "proto"):
        if (candidate / API_DIR).is_dir():
            return candidate
    raise RuntimeError(
        "cannot find causeway/v1/*.proto: build from the repository (client/python) "
        "or from an sdist made there"
    )


def generate_stubs(package_dir: Path) -> None:
    """Writes the generated modules into `package_dir/pb`, imports rewritten to the package."""
    import grpc_tools
    from grpc_tools import protoc

    root = proto_root()
    protos = sorted(str(path.relative_to(root)) for path in (root / API_DIR).glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files in {root / API_DIR}")
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out_dir = package_dir / "pb"
    with tempfile.TemporaryDirectory() as scratch:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{well_known}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                f"--grpc_python_out={scratch}",
                *protos,
            ]
        )
        if status != 0:
            raise RuntimeError(f"grpc_tools.protoc failed with status {status}")
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        for generated in sorted((Path(scratch) / API_DIR).iterdir()):
            text = PROTOC_IMPORT.sub("from causeway_client.pb import ", generated.read_text())
            (out_dir / generated.name).write_text(text)
    (out_dir / "__init__.py").write_text(
        '"""Generated from proto/causeway/v1 when the package was built; do not edit."""\n'
    )


class BuildPyWithStubs(build_py):
    """`build_py` that also generates `causeway_client.pb` into the build folder."""

    def run(self) -> None:
        super().run()
        if not self.dry_run:
            generate_stubs(Path(self.build_lib) / "causeway_client")

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        # The wheel's file list must name the generated modules too.
        pb_dir = Path(self.build_lib) / "causeway_client" / "pb"
        generated = [str(path) for path in pb_dir.glob("*")] if pb_dir.is_dir() else []
        return list(super().get_outputs(include_bytecode)) + generated


def protos_needed(root: Path) -> list[Path]:
    """`causeway/v1/*.proto` under `root` and every file under `root` they import, directly or
    not (such as `google/rpc/status.proto`), relative to `root`. An import that is not under
    `root` is one of protoc's well-known types, which grpcio-tools carries."""
    needed = sorted(path.relative_to(root) for path in (root / API_DIR).glob("*.proto"))
    seen = set(needed)
    waiting = list(needed)
    while waiting:
        for name in PROTO_IMPORT.findall((root / waiting.pop()).read_text()):
            path = Path(name)
            if path not in seen and (root / path).is_file():
                seen.add(path)
                waiting.append(path)
    return sorted(seen)


class SdistWithProtos(sdist):
    """`sdist` that copies the API's .proto files in, with every file they import from the
    repository's `proto/`, so the sdist builds on its own."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        root = proto_root()
        for proto in protos_needed(root):
            target = Path(base_dir) / "proto" / proto
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / proto, target)


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos})
