"""The query log: one event per RPC, allowed or refused, per collaboration (SPEC section 6).

Each event is stored as canonical JSON bytes (sorted keys, no spaces, UTF-8): the exact
bytes its Merkle tree hashes, which auditors receive as they are. Events name resources
and summarize the request and outcome; they never hold an identifier or a digest.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cleanroom.audit.integrity import Finding, Replay, replay, stored_logs
from cleanroom.errors import InvalidArgumentError, NotFoundError, UnavailableError
from cleanroom.proofs import merkle
from cleanroom.proofs.cosignature import WitnessVerifier
from cleanroom.proofs.merkle import Frontier
from cleanroom.proofs.signed_note import (
    Checkpoint,
    KeyRing,
    NoteError,
    NoteSigner,
    NoteVerifier,
)
from cleanroom.storage.database import Database

_log = logging.getLogger(__name__)


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

    def matches(self, entry: bytes) -> bool:
        """Whether the event of these canonical bytes passes (bytes that do not parse pass).

        The filter reads the hashed entry, never the table's columns, so that no column
        rewritten on disk can hide an event that verification would still accept.
        """
        try:
            data = json.loads(entry)
            time = datetime.fromisoformat(data["event_time"])
            method, caller = str(data["method"]), str(data["caller"])
        except (ValueError, KeyError, TypeError):
            return True  # served as it is, for the auditor's verification to name it
        if self.start_time and time < self.start_time.astimezone(UTC):
            return False
        if self.end_time and time >= self.end_time.astimezone(UTC):
            return False
        if self.method and method != self.method and not method.endswith("/" + self.method):
            return False
        return not self.caller or caller == self.caller


class AuditLog:
    """The append-only, tamper-evident query logs of every collaboration (and the server log).

    Each log is a Merkle tree (RFC 9162) over its events' canonical bytes. Every append
    stores the leaf hash, updates the tree's frontier and stores a checkpoint signed by
    the server's key, all in one transaction: an auditor can then prove offline that an
    event is in the log and that the log has only grown.
    """

    def __init__(
        self,
        database: Database,
        signer: NoteSigner,
        previous_keys: Sequence[NoteVerifier] = (),
    ) -> None:
        self.database = database
        self.signer = signer
        self.keys = KeyRing([*previous_keys, NoteVerifier(signer.verifier_key)])
        self._lock = threading.Lock()
        self._heads: dict[str, Frontier] = {}
        self._notes: dict[str, str] = {}
        self._broken: dict[str, Finding] = {}
        self._check_all()

    def _check_all(self) -> None:
        """At start: replay every log; a log that is not what this server signed is refused.

        A log whose latest checkpoint a retired key signed gets the current key's
        signature on that same checkpoint: the handover that ties the keys together.
        """
        with self.database.reading() as db:
            logs = stored_logs(db)
        for log in logs:
            with self.database.reading() as db:
                result = replay(db, log, self.keys, self.origin(log), every_checkpoint=False)
            self._adopt(result)
            note = self._notes.get(log)
            if note is not None and result.latest_key != self.keys.verifiers[-1].key_id:
                handover = self.signer.add_signature(note)
                with self.database.transaction() as db:
                    db.execute(
                        "UPDATE audit_checkpoints SET signed_note = ?"
                        " WHERE log = ? AND tree_size = ?",
                        (handover, log, self._heads[log].size),
                    )
                self._notes[log] = handover

    def _adopt(self, result: Replay) -> None:
        if result.finding is not None:
            self._broken[result.log] = result.finding
            _log.error(
                "query log %s does not extend its last signed checkpoint, first bad index %d:"
                " %s; its collaboration is refused until the data directory is restored",
                log_resource(result.log), result.finding.index, result.finding.problem,
            )  # fmt: skip
            return
        self._heads[result.log] = result.frontier
        if result.latest_note is not None:
            self._notes[result.log] = result.latest_note

    def inconsistency(self, log: str) -> Finding | None:
        """What is wrong with a log the server refuses to extend, or None if it is sound."""
        return self._broken.get(log)

    def require_consistent(self, log: str) -> None:
        """Raises UNAVAILABLE `AUDIT_LOG_INCONSISTENT` if the server refuses this log."""
        finding = self._broken.get(log)
        if finding is not None:
            raise UnavailableError(
                "AUDIT_LOG_INCONSISTENT",
                f"The query log of {log_resource(log)} does not extend the server's own last"
                f" signed checkpoint (first bad index {finding.index}: {finding.problem}), so"
                " the server serves"
                " nothing of this collaboration rather than sign over it. The operator must"
                " restore the data directory; `cleanroom audit check` shows the problem.",
                log=log_resource(log),
                first_bad_index=finding.index,
            )

    def origin(self, log: str) -> str:
        """The checkpoint origin of a log: the signer's name and the log's resource."""
        return f"{self.signer.name}/{log_resource(log)}"

    def append(self, event: AuditEvent) -> AuditEvent:
        """Appends the event at the end of its log, setting its index; returns it.

        Before signing, the stored head and latest checkpoint must be those this server
        left (O(log n)); if the store changed under it, the log is replayed once to name
        the first bad index, and refused from then on.

        Raises:
            UnavailableError: AUDIT_LOG_INCONSISTENT, the stored log is not what it signed.
        """
        with self._lock:
            self.require_consistent(event.log)
            head = self._heads.get(event.log, Frontier())
            with self.database.transaction() as db:
                stored = self._changed(db, event.log, head)
                if stored is not None:
                    found = replay(
                        db, event.log, self.keys, self.origin(event.log), every_checkpoint=False
                    ).finding
                    changed = Finding(
                        min(stored, head.size),
                        f"the stored log (size {stored}) is not the one of size {head.size}"
                        " this server signed last: truncated or rewritten while it ran",
                    )
                    self._adopt(Replay(event.log, finding=found or changed))
                    self.require_consistent(event.log)
                frontier = Frontier(head.size, list(head.hashes or []))
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
                note = self.signer.sign(checkpoint.body())
                db.execute(
                    "INSERT INTO audit_checkpoints VALUES (?, ?, ?)",
                    (event.log, frontier.size, note),
                )
            self._heads[event.log] = frontier
            self._notes[event.log] = note
        return event

    def _changed(self, db: Any, log: str, head: Frontier) -> int | None:
        """The stored tree size if the store is not as this server left it, else None.

        As left: the stored head is the server's own, and so is the latest checkpoint.
        """
        row = db.execute(
            "SELECT tree_size, frontier FROM audit_logs WHERE log = ?", (log,)
        ).fetchone()
        stored = (int(row[0]), bytes(row[1])) if row else (0, b"")
        latest = db.execute(
            "SELECT tree_size, signed_note FROM audit_checkpoints WHERE log = ?"
            " ORDER BY tree_size DESC LIMIT 1",
            (log,),
        ).fetchone()
        signed = (int(latest[0]), str(latest[1])) if latest else (0, None)
        if stored == (head.size, head.to_bytes()) and signed == (head.size, self._notes.get(log)):
            return None
        return stored[0]

    def events(self, log: str, where: AuditFilter, *, after: int, limit: int) -> list[AuditEvent]:
        """Events of a log with index above `after` that pass the filter, oldest first."""
        return [
            AuditEvent.from_entry(entry)
            for _, entry in self.entries(log, where, after=after, limit=limit)
        ]

    def entries(
        self, log: str, where: AuditFilter, *, after: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """The stored (index, canonical bytes) of the events `events` would return.

        Filters apply to the hashed bytes (`AuditFilter.matches`), read in index order a
        chunk at a time; the time, caller and method columns are not trusted for this.
        """
        found: list[tuple[int, bytes]] = []
        cursor = max(after, where.start_index - 1)
        end = where.end_index
        while len(found) < limit:
            query = "SELECT log_index, entry FROM audit_events WHERE log = ? AND log_index > ?"
            args: list[object] = [log, cursor]
            if end is not None:
                query += " AND log_index < ?"
                args.append(end)
            with self.database.reading() as db:
                rows = db.execute(query + " ORDER BY log_index LIMIT ?", [*args, _CHUNK]).fetchall()
            for index, stored in rows:
                # A tampered row may hold text instead of bytes: serve it as it is.
                entry = stored if isinstance(stored, bytes) else str(stored).encode()
                if where.matches(entry):
                    found.append((int(index), entry))
                    if len(found) == limit:
                        break
            if len(rows) < _CHUNK:
                break
            cursor = int(rows[-1][0])
        return found

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

    def add_cosignature(
        self, log: str, tree_size: int, line: str, witnesses: Sequence[WitnessVerifier]
    ) -> str:
        """Stores a witness's cosignature of the checkpoint of `tree_size`; returns the note.

        Only a valid `cosignature/v1` of one of the collaboration's witnesses is kept
        (one per witness and size), so that the stored set is what auditors count.

        Raises:
            NotFoundError: CHECKPOINT_NOT_FOUND, the log has no checkpoint of that size.
            InvalidArgumentError: The line is no cosignature of a configured witness.
        """
        self._check_size(log, tree_size, "tree_size")
        note = self.checkpoint(log, tree_size)
        body = note.partition("\n\n")[0] + "\n"
        for witness in witnesses:
            try:
                found = witness.check_line(body, line)
            except NoteError as error:
                raise InvalidArgumentError(
                    "INVALID_COSIGNATURE",
                    f"`cosignature` is not a valid cosignature/v1 of checkpoint {tree_size}:"
                    f" {error}.",
                    field="cosignature",
                    tree_size=tree_size,
                ) from None
            if found is not None:
                with self.database.transaction() as db:
                    db.execute(
                        "INSERT OR REPLACE INTO audit_cosignatures VALUES (?, ?, ?, ?)",
                        (log, tree_size, found.key_id, line),
                    )
                return self.cosigned_note(log, tree_size)
        raise InvalidArgumentError(
            "UNKNOWN_WITNESS",
            "`cosignature` is not signed by a witness of this collaboration: the operator"
            " lists witnesses' public keys in its `witnesses` setting.",
            field="cosignature",
        )

    def cosigned_note(self, log: str, tree_size: int) -> str:
        """The checkpoint of `tree_size` with every stored cosignature line appended."""
        note = self.checkpoint(log, tree_size)
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT signature_line FROM audit_cosignatures WHERE log = ? AND tree_size = ?"
                " ORDER BY witness_key_id",
                (log, tree_size),
            ).fetchall()
        return note + "".join(f"{row[0]}\n" for row in rows)

    def latest_cosigned(self, log: str, minimum: int) -> int:
        """The largest size with at least `minimum` stored cosignatures, or 0 if none."""
        with self.database.reading() as db:
            row = db.execute(
                "SELECT tree_size FROM audit_cosignatures WHERE log = ? GROUP BY tree_size"
                " HAVING COUNT(*) >= ? ORDER BY tree_size DESC LIMIT 1",
                (log, minimum),
            ).fetchone()
        return int(row[0]) if row else 0

    def witnessed_notes(self, log: str) -> list[str]:
        """For each witness, the latest checkpoint it cosigned, with its cosignature line."""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT c.tree_size, c.signature_line FROM audit_cosignatures c"
                " JOIN (SELECT witness_key_id, MAX(tree_size) AS size FROM audit_cosignatures"
                "       WHERE log = ? GROUP BY witness_key_id) latest"
                " ON c.witness_key_id = latest.witness_key_id AND c.tree_size = latest.size"
                " WHERE c.log = ? ORDER BY c.witness_key_id",
                (log, log),
            ).fetchall()
        notes = []
        for tree_size, line in rows:
            try:
                notes.append(f"{self.checkpoint(log, int(tree_size))}{line}\n")
            except NotFoundError:
                continue  # a checkpoint gone from the store: the auditor counts one fewer
        return notes

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


_CHUNK = 1000


def log_resource(log: str) -> str:
    """The resource name of a log's collaboration: `collaborations/{log}`."""
    return f"collaborations/{log}"
