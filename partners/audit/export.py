"""Exporting a query log as JSON Lines, CSV or Parquet, each row checkable later.

Every row carries the event's leaf index, its leaf hash and its canonical bytes (`entry`,
JSON text), so that anyone can recompute `SHA-256(0x00 || entry)` and check it against a
signed checkpoint's tree with an inclusion proof.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from cleanroom.v1 import audit_event_pb2
from partners.errors import InputError

FORMATS = ("jsonl", "csv", "parquet")
_FIELDS: list[pa.Field[Any]] = [
    pa.field("index", pa.int64()),
    pa.field("leaf_hash", pa.string()),
    pa.field("event_time", pa.timestamp("us", tz="UTC")),
    pa.field("caller", pa.string()),
    pa.field("caller_roles", pa.list_(pa.string())),
    pa.field("method", pa.string()),
    pa.field("resources", pa.list_(pa.string())),
    pa.field("request_summary", pa.string()),
    pa.field("status_code", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("message", pa.string()),
    pa.field("released_count", pa.int64()),
    pa.field("suppressed_count", pa.int64()),
    pa.field("epsilon_spent", pa.float64()),
    pa.field("entry", pa.string()),
]
SCHEMA = pa.schema(_FIELDS)


def event_row(event: audit_event_pb2.AuditEvent) -> dict[str, Any]:
    """One event as a flat row, read from its canonical bytes."""
    data = json.loads(event.entry)
    outcome = data["outcome"]
    return {
        "index": event.index,
        "leaf_hash": event.leaf_hash.hex(),
        "event_time": datetime.fromisoformat(data["event_time"]),
        "caller": data["caller"],
        "caller_roles": list(data["caller_roles"]),
        "method": data["method"],
        "resources": list(data["resources"]),
        "request_summary": json.dumps(data["request_summary"], sort_keys=True),
        "status_code": outcome["status_code"],
        "reason": outcome["reason"],
        "message": outcome["message"],
        "released_count": outcome["released_count"],
        "suppressed_count": outcome["suppressed_count"],
        "epsilon_spent": outcome["epsilon_spent"],
        "entry": event.entry.decode("utf-8"),
    }


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(type(value))


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A row for CSV, which has no lists: roles comma-joined, resources space-joined."""
    return {
        **row,
        "event_time": _iso(row["event_time"]),
        "caller_roles": ",".join(row["caller_roles"]),
        "resources": " ".join(row["resources"]),
    }


def export_events(
    events: Iterable[audit_event_pb2.AuditEvent], destination: Path, file_format: str
) -> int:
    """Writes the events to `destination` (replaced whole) and returns how many."""
    if file_format not in FORMATS:
        raise InputError(
            "UNSUPPORTED_EXPORT_FORMAT",
            f"Cannot export as {file_format!r}: choose one of {', '.join(FORMATS)}.",
            {"format": file_format},
        )
    rows = [event_row(event) for event in events]
    scratch = destination.with_name(f".{destination.name}.tmp")
    try:
        if file_format == "jsonl":
            with scratch.open("w", encoding="utf-8") as out:
                out.writelines(
                    json.dumps(row, ensure_ascii=False, default=_iso) + "\n" for row in rows
                )
        elif file_format == "csv":
            pa_csv.write_csv(pa.Table.from_pylist([_flat(row) for row in rows]), str(scratch))
        else:
            pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), str(scratch))
        os.replace(scratch, destination)
    except OSError as error:
        raise InputError(
            "EXPORT_UNWRITABLE",
            f"Cannot write {destination}: {error.strerror}. Choose a writable path.",
            {"path": str(destination)},
        ) from None
    finally:
        scratch.unlink(missing_ok=True)
    return len(rows)
