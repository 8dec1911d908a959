"""Generates the Python code of the protos in `protos/` into `cleanroom/v1/`.

Messages and gRPC stubs come from grpcio-tools' protoc; their typed `.pyi` stubs from
mypy-protobuf's plugins, so that mypy checks every use of the API.

`make proto` runs it; `tests/unit/test_generated_code.py` runs it into a temporary
directory and fails when the committed code differs.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("cleanroom") / "v1"
INIT = '"""Code generated from protos/cleanroom/v1 by `make proto`. Do not edit."""\n'


def proto_files() -> list[Path]:
    """The proto files of the API, relative to the proto root, sorted."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Generates the code into `out_dir` and returns the files written, relative to it."""
    include = resources.files("grpc_tools") / "_proto"
    plugins = Path(sys.executable).parent  # mypy-protobuf's plugins, beside this Python
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_dir / PACKAGE / "__init__.py").write_text(INIT)
    return sorted(p.relative_to(out_dir) for p in (out_dir / PACKAGE).iterdir() if p.is_file())


if __name__ == "__main__":
    written = generate(ROOT)
    sys.stdout.write("".join(f"wrote {p}\n" for p in written))
