"""The operator's offline check of the stored query logs (`cleanroom audit check`).

It reads the database of a data directory without a server and replays each log as the
server does at start (`integrity`), but checks every stored checkpoint, not only the
latest: one per size, each signed by a key of the ring over exactly the events before it,
no retired key after its successor. It names the first bad index of each log.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cleanroom.audit.integrity import replay, stored_logs
from cleanroom.proofs.signed_note import KeyRing, NoteVerifier
from cleanroom.storage.database import Database


@dataclass(frozen=True)
class LogCheck:
    """What the check found in one log."""

    log: str
    events: int
    checkpoints: int
    first_bad_index: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        """Whether the log verified."""
        return self.problem is None


def check_logs(data_dir: Path, keys: KeyRing | NoteVerifier) -> list[LogCheck]:
    """Checks every query log stored under `data_dir` against the log keys."""
    ring = keys if isinstance(keys, KeyRing) else KeyRing([keys])
    database = Database(data_dir / "cleanroom.sqlite3", read_only=True)
    try:
        with database.reading() as db:
            return [_check_log(db, log, ring) for log in stored_logs(db)]
    finally:
        database.close()


def _check_log(db: sqlite3.Connection, log: str, ring: KeyRing) -> LogCheck:
    origin = f"{ring.name}/collaborations/{log}"
    result = replay(db, log, ring, origin, every_checkpoint=True)
    (events,) = db.execute("SELECT COUNT(*) FROM audit_events WHERE log = ?", (log,)).fetchone()
    finding = result.finding
    return LogCheck(
        log,
        int(events),
        result.checkpoints,
        finding.index if finding else None,
        finding.problem if finding else None,
    )
