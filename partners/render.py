"""How the toolkit shows reports, datasets and log events: terminal tables, JSON and CSV.

Derived figures (match rates, shares) come from released counts only; a
figure that would need a suppressed count is shown as suppressed, never estimated.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from rich.console import Group
from rich.table import Table

from cleanroom.v1 import audit_event_pb2, dataset_pb2, overlap_report_pb2
from partners.inert import inert, inert_json

SUPPRESSED = "suppressed"


def short(name: str) -> str:
    """The last part of a resource name, for people."""
    return name.rsplit("/", 1)[-1]


_INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
# Bytes fields that hold text (the log's canonical JSON entries); every other is a hash.
_TEXT_BYTES = frozenset({"entry"})


def message_data(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data with the API's field names, for people and scripts.

    Unlike protobuf's JSON mapping, 64-bit integers stay numbers, and bytes are hashes in
    hex (as in the audit export and the verifier's output), or the text that they hold.
    """
    return _typed(message, json_format.MessageToDict(message, preserving_proto_field_name=True))


def _typed(message: Message, data: dict[str, Any]) -> dict[str, Any]:
    for field in message.DESCRIPTOR.fields:
        if field.name not in data:
            continue
        value = getattr(message, field.name)
        kind = field.message_type
        if kind is not None:
            if kind.full_name.startswith("google.protobuf.") or kind.GetOptions().map_entry:
                continue  # well-known types (timestamps) keep their JSON form; maps as they are
            if field.is_repeated:
                data[field.name] = [
                    _typed(v, d) for v, d in zip(value, data[field.name], strict=True)
                ]
            else:
                data[field.name] = _typed(value, data[field.name])
        elif field.type in _INTEGERS:
            data[field.name] = [int(v) for v in value] if field.is_repeated else int(value)
        elif field.type == FieldDescriptor.TYPE_BYTES:
            data[field.name] = (
                [_bytes(field.name, v) for v in value]
                if field.is_repeated
                else (_bytes(field.name, value))
            )
    return data


def _bytes(name: str, value: bytes) -> str:
    return value.decode("utf-8", "replace") if name in _TEXT_BYTES else value.hex()


def as_json(messages: Iterable[Message] | Message) -> str:
    """Messages as JSON (an array for several), with the API's field names."""
    if isinstance(messages, Message):
        return inert_json(json.dumps(message_data(messages), indent=2, ensure_ascii=False))
    return inert_json(json.dumps([message_data(m) for m in messages], indent=2, ensure_ascii=False))


def json_line(message: Message) -> str:
    """A message as one line of JSON (for JSON Lines output)."""
    return inert_json(json.dumps(message_data(message), ensure_ascii=False))


def count_text(count: overlap_report_pb2.ReleasedCount, threshold: int) -> str:
    """A released count for people: the number (with its 95% interval), or "suppressed".

    A suppressed count says nothing more, not even whether it is below the threshold.
    """
    if count.HasField("value"):
        if count.HasField("interval_low"):
            return f"{count.value:,} ({count.interval_low:,}-{count.interval_high:,})"
        return f"{count.value:,}"
    return SUPPRESSED


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def report_rows(report: overlap_report_pb2.OverlapReport) -> list[dict[str, Any]]:
    """Every figure of a report as one flat row, for CSV and spreadsheets."""
    rows: list[dict[str, Any]] = []

    def add(figure: str, count: overlap_report_pb2.ReleasedCount, **where: Any) -> None:
        noisy = count.HasField("interval_low")
        rows.append(
            {
                "figure": figure,
                "dataset": "",
                "matched_datasets": "",
                "segment": "",
                **where,
                "value": count.value if count.HasField("value") else "",
                "suppression": "" if count.HasField("value") else SUPPRESSED,
                "noise_scale": f"{count.noise_scale:g}" if noisy else "",
                "interval_low": count.interval_low if noisy else "",
                "interval_high": count.interval_high if noisy else "",
            }
        )

    for size in report.dataset_sizes:
        add("dataset_size", size.row_count, dataset=size.dataset)
    for pair in report.pairwise_overlaps:
        add("pairwise_overlap", pair.matched_row_count, dataset=pair.dataset,
            matched_datasets=pair.matched_dataset)  # fmt: skip
    for cell in report.membership_cells:
        add("membership_cell", cell.base_row_count, dataset=report.base_dataset,
            matched_datasets=";".join(cell.matched_datasets), segment=cell.segment)  # fmt: skip
    return rows


def report_csv(report: overlap_report_pb2.OverlapReport) -> str:
    """The report's figures as CSV, one figure a row."""
    rows = report_rows(report)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: inert(v, markup=False) for k, v in row.items()} for row in rows)
    return out.getvalue()


def report_tables(report: overlap_report_pb2.OverlapReport) -> Group:
    """The report as terminal tables: sizes, pairwise overlaps, membership cells."""
    k = report.minimum_threshold
    sizes = {s.dataset: s.row_count for s in report.dataset_sizes}
    noise = (
        f"discrete Laplace noise of scale {report.noise.scale:g} (epsilon {report.noise.epsilon:g};"
        " 95% intervals in brackets)"
        if report.HasField("noise")
        else "exact counts"
    )
    title = (
        f"Overlap report {inert(short(report.name))}: base {inert(short(report.base_dataset))}"
        f" ({noise}; threshold {k}; {report.released_count} counts released,"
        f" {report.suppressed_count} suppressed)"
    )
    size_table = Table(title="Datasets", title_justify="left")
    size_table.add_column("dataset")
    size_table.add_column("rows", justify="right")
    for name, count in sizes.items():
        size_table.add_row(inert(short(name)), count_text(count, k))

    pair_table = Table(title="Pairwise overlap", title_justify="left")
    for column, justify in [("rows of", "left"), ("matching", "left"), ("matched rows", "right"),
                            ("match rate", "right")]:  # fmt: skip
        pair_table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for pair in report.pairwise_overlaps:
        pair_table.add_row(
            inert(short(pair.dataset)),
            inert(short(pair.matched_dataset)),
            count_text(pair.matched_row_count, k),
            ("above " if pair.match_rate_capped else "")
            + _percent(pair.match_rate if pair.HasField("match_rate") else None),
        )

    cell_table = Table(
        title=f"Membership of {inert(short(report.base_dataset))}", title_justify="left"
    )
    if report.segment_column:
        cell_table.add_column(inert(report.segment_column))
    others = list(report.other_datasets)
    for other in others:
        cell_table.add_column(f"in {inert(short(other))}", justify="center")
    cell_table.add_column("base rows", justify="right")
    cell_table.add_column("share", justify="right")
    segment_totals = _segment_totals(report)
    for cell in report.membership_cells:
        marks = ["yes" if o in cell.matched_datasets else "-" for o in others]
        total = segment_totals.get(cell.segment)
        share = (
            cell.base_row_count.value / total
            if cell.base_row_count.HasField("value") and total
            else None
        )
        segment = (
            [inert(cell.segment) if cell.segment else "(none)"] if report.segment_column else []
        )
        cell_table.add_row(*segment, *marks, count_text(cell.base_row_count, k), _percent(share))
    if report.withheld_segments:
        withheld = ", ".join(s or "(none)" for s in report.withheld_segments)
        cell_table.caption = f"not split out (fewer than {k} base rows): {withheld}"
    return Group(title, size_table, pair_table, cell_table)


def _segment_totals(report: overlap_report_pb2.OverlapReport) -> dict[str, int]:
    """Base rows per segment, only where every cell of the segment was released."""
    totals: dict[str, int] = {}
    complete: dict[str, bool] = {}
    for cell in report.membership_cells:
        released = cell.base_row_count.HasField("value")
        complete[cell.segment] = complete.get(cell.segment, True) and released
        totals[cell.segment] = totals.get(cell.segment, 0) + cell.base_row_count.value
    return {s: t for s, t in totals.items() if complete[s]}


def datasets_table(datasets: Iterable[dataset_pb2.Dataset]) -> Table:
    """Datasets as a terminal table."""
    table = Table(title="Datasets", title_justify="left")
    for column in ("dataset", "owner", "rows", "identifier types", "segments", "created"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for d in datasets:
        table.add_row(
            inert(d.name),
            inert(short(d.owner)),
            f"{d.row_count:,}",
            inert(", ".join(d.identifier_types)),
            inert(", ".join(d.segment_columns) or "-"),
            d.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def audit_table(events: Iterable[audit_event_pb2.AuditEvent]) -> Table:
    """Query log events as a terminal table."""
    table = Table(title="Query log", title_justify="left")
    for column in ("#", "time (UTC)", "caller", "roles", "method", "resources", "outcome"):
        table.add_column(
            column, justify="right" if column == "#" else "left", no_wrap=column == "time (UTC)"
        )
    for e in events:
        outcome = e.outcome.status_code
        if e.outcome.reason:
            outcome += f" {e.outcome.reason}"
        if e.outcome.released_count or e.outcome.suppressed_count:
            outcome += (
                f" (released {e.outcome.released_count}, suppressed {e.outcome.suppressed_count})"
            )
        table.add_row(
            str(e.index),
            e.event_time.ToDatetime().strftime("%m-%d %H:%M:%S"),
            inert(short(e.caller)),
            inert(",".join(e.caller_roles) or "-"),
            inert(e.method.rsplit("/", 1)[-1]),
            # One resource a line: the newlines are the table's, never the server's.
            "\n".join(inert(short(r)) for r in e.resources) or "-",
            inert(outcome),
        )
    return table
