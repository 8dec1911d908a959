"""The report as an Excel workbook (openpyxl): facts, datasets, pairwise overlap, cells.

Counts are numbers (a spreadsheet can chart and sum them); a withheld count is an empty
cell marked suppressed beside it, never a zero. The membership sheet is the wide form of
`partners.render.report_wide_rows`, the same rows as `--csv wide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cleanroom.v1 import overlap_report_pb2
from partners import render
from partners.errors import InputError
from partners.figures import Figure, ReportFigures, short
from partners.reports.page import EXTRA


def _count(figure: Figure, scale: float | None) -> list[Any]:
    interval = figure.interval(scale)
    return [
        figure.value,
        None if interval is None else interval[0],
        None if interval is None else interval[1],
        figure.withheld or None,
    ]


def write_workbook(
    report: overlap_report_pb2.OverlapReport,
    path: Path,
    *,
    owners: Mapping[str, str] | None = None,
    exact_sizes: Mapping[str, int] | None = None,
) -> Path:
    """Writes the report as an `.xlsx` workbook to `path` and returns the path.

    Raises:
        InputError: openpyxl (the toolkit's `reports` extra) is missing.
    """
    try:
        from openpyxl import Workbook  # noqa: PLC0415 (on use)
        from openpyxl.styles import Font  # noqa: PLC0415
    except ImportError:
        raise InputError(
            "REPORT_LIBRARIES_MISSING",
            f"Writing a workbook needs openpyxl: install the toolkit with its '{EXTRA}' extra"
            f" (pip install 'cleanroom-partner[{EXTRA}]').",
            {"module": "openpyxl"},
        ) from None
    found = ReportFigures(report, owners or {}, exact_sizes or {})
    scale = found.scale
    book = Workbook()
    facts = book.active
    assert facts is not None  # a new workbook has its first sheet
    facts.title = "Facts"
    for line in render.report_facts(found):
        facts.append([line])

    sizes = book.create_sheet("Datasets")
    sizes.append(
        [
            "dataset",
            "owner",
            "rows",
            "interval_low",
            "interval_high",
            "suppression",
            "exact_rows_your_upload",
            "what it is",
        ]
    )
    for dataset in found.datasets:
        figure = found.size(dataset)
        sizes.append(
            [
                short(dataset),
                short(found.owners.get(dataset, "")) or None,
                *_count(figure, scale),
                found.exact_sizes.get(dataset),
                figure.source,
            ]
        )

    pairs = book.create_sheet("Pairwise")
    pairs.append(
        [
            "rows_of",
            "matching",
            "matched_rows",
            "interval_low",
            "interval_high",
            "suppression",
            "match_rate",
            "what it is",
        ]
    )
    for p in report.pairwise_overlaps:
        figure = found.pair(p.dataset, p.matched_dataset)
        pairs.append(
            [
                short(p.dataset),
                short(p.matched_dataset),
                *_count(figure, scale),
                found.match_rate(p.dataset, p.matched_dataset),
                figure.source,
            ]
        )

    cells = book.create_sheet("Membership")
    header, rows = render.report_wide_rows(report)
    cells.append(header)
    for row in rows:
        cells.append([None if value == "" else value for value in row])
    for sheet in (sizes, pairs, cells):
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        sheet.freeze_panes = "A2"
    book.save(path)
    return path
