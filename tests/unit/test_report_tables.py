"""Terminal tables, golden files at 80 and 160 columns, with Thai, Vietnamese and CJK labels.

The files under `golden/` are what a marketer sees; `UPDATE_GOLDEN=1` rewrites them after
a deliberate change (read the diff before committing it). Widths are measured as a
terminal does (rich's cell widths: Thai vowel marks take no column, CJK takes two).
"""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console, RenderableType

from cleanroom.v1 import dataset_pb2
from partners import render
from tests.report_samples import EXACT_SIZES, OWNERS, dataset, sample_report

GOLDEN = Path(__file__).parent / "golden"


def _text(renderable: RenderableType, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(renderable)
    return out.getvalue()


def _matches_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text(encoding="utf-8")


def _shared() -> list[dataset_pb2.SharedDataset]:
    found = []
    for dataset_id, owner, segments in [
        ("acme-crm", "acme", ["ระดับ tier"]),
        ("brightmart-loyalty-members", "brightmart", ["hạng thành viên", "vùng", "会员等级"]),
        ("corvid-app-users", "corvid", []),
    ]:
        item = dataset_pb2.SharedDataset(
            name=dataset(dataset_id),
            owner=f"partners/{owner}",
            identifier_types=["email", "phone"],
            segment_columns=segments,
        )
        item.create_time.FromDatetime(datetime(2026, 11, 29, 8, 0, tzinfo=UTC))
        found.append(item)
    return found


@pytest.mark.parametrize("width", [80, 160])
@pytest.mark.parametrize("noise", [True, False], ids=["noisy", "exact"])
def test_report_tables(width: int, noise: bool) -> None:
    tables = render.report_tables(
        sample_report(noise=noise), owners=OWNERS, exact_sizes=EXACT_SIZES, plain=True
    )
    text = _text(tables, width)
    assert all(cell_len(line) <= width for line in text.splitlines())
    assert "…" not in text  # nothing is cut short: long names fold onto a second line
    assert "ลูกค้าทอง" in text
    assert "Khách hàng bạc" in text
    _matches_golden(f"report-{'noisy' if noise else 'exact'}-{width}.txt", text)


@pytest.mark.parametrize("width", [80, 160])
def test_report_list_and_shared_datasets(width: int) -> None:
    exact = sample_report(noise=False, segments=())
    reports = render.reports_table([sample_report(), exact], plain=True)
    shared = render.shared_datasets_table(_shared(), plain=True)
    text = _text(reports, width) + _text(shared, width)
    assert all(cell_len(line) <= width for line in text.splitlines())
    for words in ("noisy", "exact", "ระดับ", "vùng", "会员等级", "brightmart"):
        assert words in text
    _matches_golden(f"lists-{width}.txt", text)


def test_thai_columns_line_up() -> None:
    """Rows with Thai and Vietnamese labels end at the same terminal column as the others."""
    text = _text(render.report_tables(sample_report(), plain=True), 160)
    rows = [
        line
        for line in text.splitlines()
        if ("ลูกค้าทอง" in line or "Khách hàng bạc" in line) and "shares are" not in line
    ]
    assert len(rows) == 8
    # The last column (share) is right-justified: its right edge is where each row ends.
    ends = {cell_len(line.rstrip()) for line in rows}
    assert len(ends) == 1, ends


def test_boxes_in_a_terminal_plain_text_when_piped() -> None:
    boxed = _text(render.report_tables(sample_report(), plain=False), 120)
    plain = _text(render.report_tables(sample_report(), plain=True), 120)
    assert "┃" in boxed
    assert not {"┃", "│", "┏"} & set(plain)
    assert "\x1b" not in plain


def test_wide_csv_has_a_column_per_dataset() -> None:
    rows = render.report_csv_wide(sample_report()).splitlines()
    header = rows[0].split(",")
    assert header[:4] == ["ระดับ tier", "acme-crm", "brightmart-loyalty-members", "corvid-app-users"]
    assert header[4:] == ["base_rows", "interval_low", "interval_high", "share", "suppression"]
    assert len(rows) == 1 + 2 * 4
    withheld = [r for r in rows[1:] if "suppressed" in r]
    assert len(withheld) == 2
    for row in withheld:
        fields = row.split(",")
        assert fields[4:8] == ["", "", "", ""]  # no count, no interval, no share
