"""How the toolkit shows reports, datasets and log events: terminal tables, JSON and CSV.

Derived figures (match rates, shares) come from released counts only; a
figure that would need a suppressed count is shown as suppressed, never estimated.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from cleanroom.v1 import audit_event_pb2, dataset_pb2, overlap_report_pb2
from partners import figures
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


def _text(value: str) -> Text:
    """Text from the server for a table cell: no markup read, nothing in it that acts."""
    return Text(inert(value, markup=False))


def _table(title: str, plain: bool) -> Table:
    """A table that reads well in a terminal, and as plain text when piped."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE if plain else box.HEAVY_HEAD,
        safe_box=True,
    )


def _interval_text(figure: figures.Figure, scale: float | None) -> str:
    interval = figure.interval(scale)
    return "" if interval is None else f"{interval[0]:,}-{interval[1]:,}"


def _figure_text(figure: figures.Figure) -> str:
    return figure.withheld if figure.value is None else f"{figure.value:,}"


def report_facts(found: figures.ReportFigures) -> list[str]:
    """The report's facts, one line each: question, mode, threshold, time, deleted inputs."""
    report = found.report
    if report.HasField("noise"):
        mode = (
            f"{report.noise.mechanism or 'discrete_laplace'} noise of scale"
            f" {report.noise.scale:g} (epsilon {report.noise.epsilon:g}); intervals hold"
            f" the count before noise with {figures.CONFIDENCE:.0%} probability"
        )
    else:
        mode = "exact counts (no noise)"

    def who(name: str) -> str:
        return inert(found.who(name), markup=False)

    lines = [
        f"Overlap report {inert(short(report.name), markup=False)}: base"
        f" {who(report.base_dataset)} vs {', '.join(who(o) for o in report.other_datasets)}"
        + (
            f", split by {inert(report.segment_column, markup=False)}"
            if report.segment_column
            else ""
        ),
        f"{mode}; threshold {report.minimum_threshold}; {report.released_count} counts"
        f" released, {report.suppressed_count} suppressed;"
        f" released {report.create_time.ToDatetime():%Y-%m-%d %H:%M} UTC",
    ]
    if report.deleted_inputs:
        deleted = ", ".join(inert(short(d), markup=False) for d in report.deleted_inputs)
        lines.append(f"inputs deleted since: {deleted}")
    return lines


def _counted(table: Table, title: str, scale: float | None) -> None:
    """Adds a count column and, with noise, its interval column."""
    table.add_column(title, justify="right", overflow="fold")
    if scale:
        table.add_column("95% interval", justify="right", no_wrap=True)


def _count_cells(figure: figures.Figure, scale: float | None) -> list[str]:
    return [_figure_text(figure), *([_interval_text(figure, scale)] if scale else [])]


def _sizes_table(found: figures.ReportFigures, plain: bool) -> Table:
    table = _table("Datasets", plain)
    table.add_column("dataset", overflow="fold")
    _counted(table, "in this report", found.scale)
    table.add_column("exact (your upload)", justify="right", overflow="fold")
    for name in found.datasets:
        exact = found.exact_sizes.get(name)
        table.add_row(
            _text(found.who(name)),
            *_count_cells(found.size(name), found.scale),
            "" if exact is None else f"{exact:,}",
        )
    return table


def _pairs_table(found: figures.ReportFigures, plain: bool) -> Table:
    table = _table("Pairwise overlap", plain)
    table.add_column("rows of", overflow="fold")
    table.add_column("matching", overflow="fold")
    _counted(table, "matched rows", found.scale)
    table.add_column("match rate", justify="right", no_wrap=True)
    for pair in found.report.pairwise_overlaps:
        table.add_row(
            _text(short(pair.dataset)),
            _text(short(pair.matched_dataset)),
            *_count_cells(found.pair(pair.dataset, pair.matched_dataset), found.scale),
            found.match_rate(pair.dataset, pair.matched_dataset),
        )
    return table


def _cells_table(found: figures.ReportFigures, plain: bool) -> tuple[Table, list[str]]:
    report = found.report
    table = _table(f"Membership of {short(report.base_dataset)}", plain)
    if report.segment_column:
        table.add_column(_text(report.segment_column), overflow="fold")
    for other in found.others:
        table.add_column(_text(f"in {short(other)}"), justify="center", overflow="fold")
    _counted(table, "base rows", found.scale)
    table.add_column("share", justify="right", no_wrap=True)
    notes: list[str] = []
    for segment in found.segments if report.segment_column else [None]:
        patterns = found.patterns(segment)
        shares, note = found.shares(patterns)
        notes.append(f"{segment or '(none)'}: {note}" if report.segment_column else note)
        label = [_text(segment or "(none)")] if report.segment_column else []
        for pattern, share in zip(patterns, shares, strict=True):
            table.add_row(
                *label,
                *("yes" if o in pattern.matched else "-" for o in found.others),
                *_count_cells(pattern.figure, found.scale),
                share.text,
            )
        if report.segment_column:
            table.add_section()
    if report.withheld_segments:
        withheld = ", ".join(inert(s, markup=False) or "(none)" for s in report.withheld_segments)
        notes.append(f"not split out (fewer than {report.minimum_threshold} base rows): {withheld}")
    return table, notes


def report_tables(
    report: overlap_report_pb2.OverlapReport,
    *,
    owners: Mapping[str, str] | None = None,
    exact_sizes: Mapping[str, int] | None = None,
    plain: bool = False,
) -> Group:
    """The report as terminal tables: facts, sizes, pairwise overlaps, membership cells.

    Args:
        report: The report.
        owners: Dataset name to owner, to show beside short ids.
        exact_sizes: The exact sizes of the caller's own datasets, shown beside the report's.
        plain: Plain text (no box drawing), for output that is piped.
    """
    found = figures.ReportFigures(report, owners or {}, exact_sizes or {})
    cells, notes = _cells_table(found, plain)
    derivation = [
        "match rate = matched rows / rows of the first dataset, both as released;"
        " rates and shares are rounded to one decimal of a percent."
    ]
    if found.scale:
        derivation.append(
            "The base's size and its matched rows are sums of the membership cells"
            " (so they agree with them); an interval widens with the number of noisy counts"
            " a figure adds up."
        )
    return Group(
        *(Text(line) for line in report_facts(found)),
        _sizes_table(found, plain),
        _pairs_table(found, plain),
        *(Text(d) for d in derivation),
        cells,
        *(_text(n) for n in notes),
    )


def datasets_table(datasets: Iterable[dataset_pb2.Dataset]) -> Table:
    """Datasets as a terminal table; in a double-blind collaboration, with their matching."""
    listed = list(datasets)
    blind = any(d.mask_set for d in listed)
    table = Table(title="Datasets", title_justify="left")
    columns = ["dataset", "owner", "rows", "identifier types", "segments", "created"]
    for column in [*columns, *(["matching"] if blind else [])]:
        table.add_column(column, justify="right" if column == "rows" else "left")
    for d in listed:
        cells = [
            inert(short(d.name)),
            inert(short(d.owner)),
            f"{d.row_count:,}",
            inert(", ".join(d.identifier_types)),
            inert(", ".join(d.segment_columns) or "-"),
            d.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
        ]
        if blind:
            cells.append(matching_state(d))
        table.add_row(*cells)
    return table


def matching_state(dataset: dataset_pb2.Dataset) -> str:
    """Whether reports can match a dataset yet, and whose masking hops it waits for."""
    if dataset.matching_state != dataset_pb2.MATCHING_STATE_MASKING:
        return "matchable"
    waiting = ", ".join(short(p) for p in dataset.pending_maskers)
    return inert(f"masking: waits for {waiting}" if waiting else "masking")


def shared_datasets_table(
    datasets: Iterable[dataset_pb2.SharedDataset], *, plain: bool = False
) -> Table:
    """The datasets shared in a collaboration (every member's) as a terminal table."""
    table = _table("Datasets shared in the collaboration", plain)
    for column in ("dataset", "owner", "identifier types", "segments", "uploaded (UTC)"):
        table.add_column(column, overflow="fold", no_wrap=column == "uploaded (UTC)")
    for d in datasets:
        table.add_row(
            _text(short(d.name)),
            _text(short(d.owner)),
            _text(", ".join(d.identifier_types)),
            _text(", ".join(d.segment_columns) or "-"),
            d.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M"),
        )
    return table


def reports_table(
    reports: Iterable[overlap_report_pb2.OverlapReport], *, plain: bool = False
) -> Table:
    """Reports as a terminal table: what each asked (base, others, segment) and how."""
    table = _table("Overlap reports", plain)
    for column in ("report", "released (UTC)", "base", "others", "segment", "mode", "epsilon"):
        table.add_column(
            column,
            justify="right" if column == "epsilon" else "left",
            overflow="fold",
            no_wrap=column == "released (UTC)",
        )
    for r in reports:
        noisy = r.HasField("noise")
        table.add_row(
            _text(short(r.name)),
            r.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M"),
            _text(short(r.base_dataset)),
            _text(", ".join(short(o) for o in r.other_datasets)),
            _text(r.segment_column or "-"),
            "noisy" if noisy else "exact",
            f"{r.noise.epsilon:g}" if noisy else "-",
        )
    return table


def report_wide_rows(
    report: overlap_report_pb2.OverlapReport,
) -> tuple[list[str], list[list[Any]]]:
    """The membership cells as one row per pattern (and segment), for charts in a spreadsheet.

    A yes/no column per other dataset, then the base rows, their 95% interval (empty for
    exact counts), the share and, for a withheld cell, why.
    """
    found = figures.ReportFigures(report)
    others = found.others
    header = [
        *([report.segment_column] if report.segment_column else []),
        short(report.base_dataset),
        *(short(o) for o in others),
        "base_rows",
        "interval_low",
        "interval_high",
        "share",
        "suppression",
    ]
    rows: list[list[Any]] = []
    for segment in found.segments if report.segment_column else [None]:
        patterns = found.patterns(segment)
        shares, _ = found.shares(patterns)
        for pattern, share in zip(patterns, shares, strict=True):
            interval = pattern.figure.interval(found.scale)
            rows.append(
                [
                    *([segment] if report.segment_column else []),
                    "yes",
                    *("yes" if o in pattern.matched else "no" for o in others),
                    "" if pattern.figure.value is None else pattern.figure.value,
                    "" if interval is None else interval[0],
                    "" if interval is None else interval[1],
                    "" if pattern.figure.value is None else share.text,
                    pattern.figure.withheld,
                ]
            )
    return header, rows


def report_csv_wide(report: overlap_report_pb2.OverlapReport) -> str:
    """The membership cells as wide CSV: one row per pattern, a yes/no column per dataset."""
    header, rows = report_wide_rows(report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([inert(h, markup=False) for h in header])
    writer.writerows(
        [inert(v, markup=False) if isinstance(v, str) else v for v in row] for row in rows
    )
    return out.getvalue()


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
