"""Reports as tidy pandas DataFrames, for pipelines and notebooks.

One row per released figure, with the rate or share derived from released counts only, and
suppression stated (a suppressed count is missing, never estimated). pandas is an optional
dependency of the toolkit (`pip install cleanroom-partner[pandas]`): it is imported when a
frame is made, never when the toolkit is.
"""

from __future__ import annotations

from typing import Any

from cleanroom.v1 import overlap_report_pb2

COLUMNS = (
    "report",
    "figure",
    "dataset",
    "matched_datasets",
    "segment",
    "count",
    "suppressed",
    "suppression_reason",
    "rate",
)
"""The columns of a report frame, in order."""


def report_frame(report: overlap_report_pb2.OverlapReport) -> Any:
    """Return the figures of an overlap report as a tidy pandas DataFrame.

    Rows: each dataset size (`figure` = `dataset_size`), each pairwise overlap
    (`pairwise_overlap`, with `rate` its match rate), each membership cell
    (`membership_cell`, `matched_datasets` the others it is in joined by `;`, `rate` its
    share of the segment's base rows when every cell of that segment was released).
    Dataset names are short ids. `count` is a nullable integer: missing where suppressed.

    Args:
        report: A report from `CleanRoomClient.create_report` or `get_report`.

    Returns:
        A `pandas.DataFrame` with the columns of `COLUMNS`.
    """
    import pandas as pd  # noqa: PLC0415 (an optional dependency, loaded on use)

    report_id = _short(report.name)
    rows: list[dict[str, Any]] = []

    def add(
        figure: str,
        count: overlap_report_pb2.ReleasedCount,
        *,
        dataset: str,
        matched: str = "",
        segment: str = "",
        rate: float | None = None,
    ) -> None:
        released = count.HasField("value")
        rows.append(
            {
                "report": report_id,
                "figure": figure,
                "dataset": _short(dataset),
                "matched_datasets": matched,
                "segment": segment,
                "count": count.value if released else None,
                "suppressed": not released,
                "suppression_reason": "" if released else "suppressed",
                "rate": rate,
            }
        )  # fmt: skip

    for size in report.dataset_sizes:
        add("dataset_size", size.row_count, dataset=size.dataset)
    for pair in report.pairwise_overlaps:
        add(
            "pairwise_overlap",
            pair.matched_row_count,
            dataset=pair.dataset,
            matched=_short(pair.matched_dataset),
            rate=pair.match_rate if pair.HasField("match_rate") else None,
        )
    totals = _segment_totals(report)
    for cell in report.membership_cells:
        total = totals.get(cell.segment)
        released = cell.base_row_count.HasField("value")
        add(
            "membership_cell",
            cell.base_row_count,
            dataset=report.base_dataset,
            matched=";".join(_short(name) for name in cell.matched_datasets),
            segment=cell.segment,
            rate=cell.base_row_count.value / total if released and total else None,
        )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"count": "Int64", "rate": "Float64", "suppressed": "bool"})


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _segment_totals(report: overlap_report_pb2.OverlapReport) -> dict[str, int]:
    """Base rows per segment, only where every cell of the segment was released."""
    totals: dict[str, int] = {}
    complete: dict[str, bool] = {}
    for cell in report.membership_cells:
        released = cell.base_row_count.HasField("value")
        complete[cell.segment] = complete.get(cell.segment, True) and released
        totals[cell.segment] = totals.get(cell.segment, 0) + cell.base_row_count.value
    return {segment: total for segment, total in totals.items() if complete[segment]}
