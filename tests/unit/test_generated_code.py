"""The committed generated code is exactly what `make proto` writes from the protos."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "generate_protos", ROOT / "scripts/generate_protos.py"
    )
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    written = generator.generate(tmp_path)
    committed = sorted(
        p.relative_to(ROOT)
        for p in (ROOT / "cleanroom/v1").iterdir()
        if p.is_file() and p.suffix in {".py", ".pyi"}
    )
    assert written == committed, "generated files differ from committed ones: run `make proto`"
    stale = [str(p) for p in written if (tmp_path / p).read_bytes() != (ROOT / p).read_bytes()]
    assert stale == [], "run `make proto` and commit the result"
