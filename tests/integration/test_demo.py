"""`make demo`'s job, small: the whole path from certificates to the query log exits 0."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from cleanroom.demo.run import run_demo


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = io.StringIO()
    status = run_demo(work_dir=tmp_path / "demo", rows=2_000, console=Console(file=out, width=160))
    text = out.getvalue()
    assert status == 0
    assert "three-way overlap report" in text
    assert "server exited with status 0" in text
    # The marketer's HTML report of the three-way question, where the demo says it is.
    page = tmp_path / "demo" / "acme-report.html"
    assert str(page) in text.replace("\n", "")
    html = page.read_text(encoding="utf-8")
    assert 'data-chart="venn"' in html
    assert 'data-chart="upset"' in html
    # The server's data directory holds the three committed datasets and nothing half-written.
    data = tmp_path / "demo" / "data"
    assert len(list((data / "datasets").iterdir())) == 3
    assert list((data / "tmp").iterdir()) == []
