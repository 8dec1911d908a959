"""Builds the partner toolkit's wheel (`make toolkit`): `partners/` and the common part only.

The files are staged in a temporary folder beside packaging/cleanroom-partner/pyproject.toml,
so that the wheel holds exactly what a brand needs and nothing of the server.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging" / "cleanroom-partner"
# What the toolkit's distribution holds, as paths from the repository's root.
CONTENTS = [
    "partners",
    "cleanroom/__init__.py",
    "cleanroom/py.typed",
    "cleanroom/v1",
    "cleanroom/proofs",
    "cleanroom/group",
]


def build(out: Path) -> Path:
    """Builds the wheel into `out` and returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="toolkit-") as staging:
        stage = Path(staging)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(PACKAGING / name, stage / name)
        for item in CONTENTS:
            source, target = ROOT / item, stage / item
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, target)
        before = set(out.glob("cleanroom_partner-*.whl"))
        for old in before:
            old.unlink()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "-w",
                str(out),
                str(stage),
            ],
            check=True,
        )
    (wheel,) = out.glob("cleanroom_partner-*.whl")
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="Where to write the wheel.")
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
