"""The query log: one event per RPC, allowed or refused, per collaboration (SPEC section 6).

Each event is stored as canonical JSON bytes (sorted keys, no spaces, UTF-8): the exact
bytes a tamper-evident Merkle tree will hash. Events name resources and summarize the
request and outcome; they never hold an identifier or a digest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cleanroom.database import Database


@dataclass
class AuditOutcome:
    """How a call ended."""

    status_code: str = "OK"
    reason: str = ""
    message: str = ""
    released_count: int = 0
    suppressed_count: int = 0
    epsilon_spent: float = 0.0


@dataclass
class AuditEvent:
    """One entry of a query log, filled in while the call runs and appended when it ends."""

    method: str
    caller: str
    log: str = "-"
    caller_roles: tuple[str, ...] = ()
    resources: list[str] = field(default_factory=list)
    request_summary: dict[str, Any] = field(default_factory=dict)
    outcome: AuditOutcome = field(default_factory=AuditOutcome)
    event_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    index: int = -1

    def entry(self) -> bytes:
        """The canonical bytes of the event, as stored and hashed."""
        data = {
            "log": self.log,
            "index": self.index,
            "event_time": self.event_time.isoformat(timespec="microseconds"),
            "caller": self.caller,
            "caller_roles": sorted(self.caller_roles),
            "method": self.method,
            "resources": self.resources,
            "request_summary": self.request_summary,
            "outcome": vars(self.outcome),
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_entry(cls, entry: bytes) -> AuditEvent:
        """Reads an event back from its canonical bytes."""
        data = json.loads(entry)
        return cls(
            method=data["method"],
            caller=data["caller"],
            log=data["log"],
            caller_roles=tuple(data["caller_roles"]),
            resources=list(data["resources"]),
            request_summary=data["request_summary"],
            outcome=AuditOutcome(**data["outcome"]),
            event_time=datetime.fromisoformat(data["event_time"]),
            index=data["index"],
        )


@dataclass(frozen=True)
class AuditFilter:
    """Which events to list: by time range, method and caller; unset fields match all."""

    start_time: datetime | None = None
    end_time: datetime | None = None
    method: str | None = None
    caller: str | None = None


class AuditLog:
    """The append-only query logs of every collaboration (and the server log `-`)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def append(self, event: AuditEvent) -> AuditEvent:
        """Appends the event at the end of its log, setting its index; returns it."""
        with self.database.transaction() as db:
            (last,) = db.execute(
                "SELECT MAX(log_index) FROM audit_events WHERE log = ?", (event.log,)
            ).fetchone()
            event.index = -1 if last is None else int(last)
            event.index += 1
            db.execute(
                "INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?)",
                (
                    event.log,
                    event.index,
                    event.event_time.isoformat(timespec="microseconds"),
                    event.caller,
                    event.method,
                    event.entry(),
                ),
            )
        return event

    def events(self, log: str, where: AuditFilter, *, after: int, limit: int) -> list[AuditEvent]:
        """Events of a log with index above `after` that pass the filter, oldest first."""
        query = "SELECT entry FROM audit_events WHERE log = ? AND log_index > ?"
        args: list[object] = [log, after]
        if where.start_time:
            query += " AND event_time >= ?"
            args.append(where.start_time.astimezone(UTC).isoformat(timespec="microseconds"))
        if where.end_time:
            query += " AND event_time < ?"
            args.append(where.end_time.astimezone(UTC).isoformat(timespec="microseconds"))
        if where.method:
            query += " AND (method = ? OR method LIKE ? ESCAPE '\\')"
            escaped = where.method.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args += [where.method, f"%/{escaped}"]
        if where.caller:
            query += " AND caller = ?"
            args.append(where.caller)
        with self.database.reading() as db:
            rows = db.execute(query + " ORDER BY log_index LIMIT ?", [*args, limit]).fetchall()
        return [AuditEvent.from_entry(row[0]) for row in rows]

    def size(self, log: str) -> int:
        """The number of events in a log."""
        with self.database.reading() as db:
            (size,) = db.execute(
                "SELECT COUNT(*) FROM audit_events WHERE log = ?", (log,)
            ).fetchone()
        return int(size)
