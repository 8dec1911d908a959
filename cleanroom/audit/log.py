"""The query log: one event per RPC, allowed or refused, per collaboration (SPEC section 6).

Each event is stored as canonical JSON bytes (sorted keys, no spaces, UTF-8): the exact
bytes its Merkle tree hashes, which auditors receive as they are. Events name resources
and summarize the request and outcome; they never hold an identifier or a digest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cleanroom.errors import InvalidArgumentError, NotFoundError
from cleanroom.proofs import merkle
from cleanroom.proofs.merkle import Frontier
from cleanroom.proofs.signed_note import Checkpoint, NoteSigner
from cleanroom.storage.database import Database


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
    """Which events to list: by index range, time range, method and caller; unset matches all."""

    start_time: datetime | None = None
    end_time: datetime | None = None
    method: str | None = None
    caller: str | None = None
    start_index: int = 0
    end_index: int | None = None


class AuditLog:
    """The append-only, tamper-evident query logs of every collaboration (and the server log).

    Each log is a Merkle tree (RFC 9162) over its events' canonical bytes. Every append
    stores the leaf hash, updates the tree's frontier and stores a checkpoint signed by
    the server's key, all in one transaction: an auditor can then prove offline that an
    event is in the log and that the log has only grown.
    """

    def __init__(self, database: Database, signer: NoteSigner) -> None:
        self.database = database
        self.signer = signer

    def origin(self, log: str) -> str:
        """The checkpoint origin of a log: the signer's name and the log's resource."""
        return f"{self.signer.name}/{log_resource(log)}"

    def append(self, event: AuditEvent) -> AuditEvent:
        """Appends the event at the end of its log, setting its index; returns it."""
        with self.database.transaction() as db:
            row = db.execute(
                "SELECT tree_size, frontier FROM audit_logs WHERE log = ?", (event.log,)
            ).fetchone()
            frontier = Frontier.from_bytes(row[0], row[1]) if row else Frontier()
            event.index = frontier.size
            entry = event.entry()
            leaf = merkle.leaf_hash(entry)
            frontier.append(leaf)
            db.execute(
                "INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.log,
                    event.index,
                    event.event_time.isoformat(timespec="microseconds"),
                    event.caller,
                    event.method,
                    entry,
                    leaf,
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO audit_logs VALUES (?, ?, ?)",
                (event.log, frontier.size, frontier.to_bytes()),
            )
            checkpoint = Checkpoint(self.origin(event.log), frontier.size, frontier.root())
            db.execute(
                "INSERT INTO audit_checkpoints VALUES (?, ?, ?)",
                (event.log, frontier.size, self.signer.sign(checkpoint.body())),
            )
        return event

    def events(self, log: str, where: AuditFilter, *, after: int, limit: int) -> list[AuditEvent]:
        """Events of a log with index above `after` that pass the filter, oldest first."""
        return [
            AuditEvent.from_entry(entry)
            for _, entry in self.entries(log, where, after=after, limit=limit)
        ]

    def entries(
        self, log: str, where: AuditFilter, *, after: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """The stored (index, canonical bytes) of the events `events` would return."""
        query = "SELECT log_index, entry FROM audit_events WHERE log = ? AND log_index > ?"
        args: list[object] = [log, max(after, where.start_index - 1)]
        if where.end_index is not None:
            query += " AND log_index < ?"
            args.append(where.end_index)
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
        # A tampered row may hold text instead of bytes: serve it as it is, for auditors to see.
        return [(int(index), e if isinstance(e, bytes) else str(e).encode()) for index, e in rows]

    def size(self, log: str) -> int:
        """The number of events in a log."""
        with self.database.reading() as db:
            row = db.execute("SELECT tree_size FROM audit_logs WHERE log = ?", (log,)).fetchone()
        return int(row[0]) if row else 0

    def sizes(self) -> dict[str, int]:
        """The number of events in every log that has one."""
        with self.database.reading() as db:
            rows = db.execute("SELECT log, tree_size FROM audit_logs").fetchall()
        return {str(log): int(size) for log, size in rows}

    def checkpoint(self, log: str, tree_size: int | None = None) -> str:
        """The signed checkpoint of a log at `tree_size` (the latest if None).

        Raises:
            NotFoundError: The log has no checkpoint of that size (it is empty, or smaller).
        """
        with self.database.reading() as db:
            if tree_size is None:
                row = db.execute(
                    "SELECT signed_note FROM audit_checkpoints WHERE log = ?"
                    " ORDER BY tree_size DESC LIMIT 1",
                    (log,),
                ).fetchone()
            else:
                row = db.execute(
                    "SELECT signed_note FROM audit_checkpoints WHERE log = ? AND tree_size = ?",
                    (log, tree_size),
                ).fetchone()
        if row is None:
            raise NotFoundError(
                "CHECKPOINT_NOT_FOUND",
                f"The query log of {log_resource(log)} has no checkpoint"
                + (f" of size {tree_size}" if tree_size is not None else " yet")
                + f"; it holds {self.size(log)} events.",
                log=log_resource(log),
                tree_size=tree_size if tree_size is not None else "latest",
            )
        return str(row[0])

    def _leaves(self, log: str, tree_size: int) -> list[bytes]:
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT leaf_hash FROM audit_events WHERE log = ? AND log_index < ?"
                " ORDER BY log_index",
                (log, tree_size),
            ).fetchall()
        return [bytes(row[0]) for row in rows]

    def _check_size(self, log: str, tree_size: int, field: str) -> None:
        size = self.size(log)
        if not 0 < tree_size <= size:
            raise InvalidArgumentError(
                "TREE_SIZE_OUT_OF_RANGE",
                f"`{field}` is {tree_size}, but the query log of {log_resource(log)} has"
                f" {size} events: ask for a size from 1 to {size}.",
                field=field,
                tree_size=tree_size,
                log_size=size,
            )

    def inclusion_proof(self, log: str, index: int, tree_size: int) -> list[bytes]:
        """The RFC 9162 audit path of event `index` in the tree of `tree_size` events."""
        self._check_size(log, tree_size, "tree_size")
        if not 0 <= index < tree_size:
            raise InvalidArgumentError(
                "INDEX_OUT_OF_RANGE",
                f"`index` is {index}; the tree of size {tree_size} holds indices 0 to"
                f" {tree_size - 1}.",
                field="index",
                index=index,
                tree_size=tree_size,
            )
        return merkle.inclusion_proof(index, self._leaves(log, tree_size))

    def consistency_proof(self, log: str, first: int, second: int) -> list[bytes]:
        """The RFC 9162 proof that the tree of size `second` extends the one of size `first`."""
        self._check_size(log, second, "second_tree_size")
        if not 0 < first <= second:
            raise InvalidArgumentError(
                "TREE_SIZE_OUT_OF_RANGE",
                f"`first_tree_size` must be from 1 to `second_tree_size` ({second}), got {first}.",
                field="first_tree_size",
                tree_size=first,
            )
        return merkle.consistency_proof(first, self._leaves(log, second))


def log_resource(log: str) -> str:
    """The resource name of a log's collaboration: `collaborations/{log}`."""
    return f"collaborations/{log}"
