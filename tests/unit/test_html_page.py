"""The HTML page without a browser: which charts it holds, and text from the server kept inert."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from partners.reports import render_html, write_html, write_workbook
from tests.report_samples import EXACT_SIZES, OWNERS, sample_report


def _ids(html: str, pattern: str) -> list[str]:
    return re.findall(rf'id="({pattern})"', html)


@pytest.mark.slow
@pytest.mark.parametrize("others", [1, 2, 4])
def test_the_charts_a_report_gets(others: int) -> None:
    names = [f"other-{i}" for i in range(others)]
    html = render_html(sample_report(others=names), owners=OWNERS, exact_sizes=EXACT_SIZES)
    charts = re.findall(r'data-chart="(\w+)"', html)
    # A Venn diagram only where circles can show the sets: two or three datasets.
    assert charts == (["venn"] if others <= 2 else []) + ["upset", "heatmap", "segments"]
    patterns = 2**others
    drawn = _ids(html, r"upset-(?:bar|withheld|partial)-\d+")
    assert len(drawn) == patterns
    assert len(_ids(html, r"upset-label-\d+")) == patterns
    datasets = others + 1
    assert len(_ids(html, r"heatmap-cell-\d+-\d+")) == datasets * (datasets - 1)
    assert "29,866" in html  # the caller's own dataset, exact, beside the report's figure


def test_exact_reports_have_no_intervals() -> None:
    html = render_html(sample_report(noise=False))
    assert not _ids(html, r"upset-interval-\d+")
    assert "95% interval" not in html
    noisy = render_html(sample_report(noise=True))
    assert _ids(noisy, r"upset-interval-\d+")
    assert "95% interval" in noisy


def test_labels_from_the_server_are_inert_text() -> None:
    hostile = '<script>alert("x")</script> $\\frac{1}{2}$ & co'
    report = sample_report(segments=(hostile, "ok"))
    report.segment_column = "<b>tier</b>"
    html = render_html(report)
    assert "<script" not in html
    assert "<b>tier</b>" not in html
    assert "&lt;script&gt;" in html
    # matplotlib drew the label as text, not as TeX: the dollar signs are still there.
    assert "$\\frac{1}{2}$" in html


def test_files(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    page = write_html(sample_report(), tmp_path / "r.html")
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    book = load_workbook(
        write_workbook(sample_report(), tmp_path / "r.xlsx", exact_sizes=EXACT_SIZES)
    )
    cells = list(book["Membership"].iter_rows(values_only=True))
    assert len(cells) == 1 + 8
    withheld = [row for row in cells[1:] if row[-1]]
    assert len(withheld) == 2
    assert all(row[4] is None for row in withheld)  # no count, never a zero


@pytest.mark.parametrize("missing", ["jinja2", "matplotlib_venn", "openpyxl"])
def test_without_the_reports_extra_the_error_says_what_to_install(
    missing: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from partners.errors import InputError

    monkeypatch.setitem(sys.modules, missing, None)  # as if it were not installed
    report = sample_report(others=("one-other",), segments=())

    def draw() -> object:
        if missing == "openpyxl":
            return write_workbook(report, tmp_path / "r.xlsx")
        return render_html(report)

    with pytest.raises(InputError) as error:
        draw()
    assert error.value.reason == "REPORT_LIBRARIES_MISSING"
    assert "cleanroom-partner[reports]" in error.value.message
