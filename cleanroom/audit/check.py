"""The operator's offline check of the stored query logs (`cleanroom audit check`).

It reads the database of a data directory without a server and checks each log the way
an auditor would: events in order with no gaps, each leaf hash that of its stored bytes,
and every stored checkpoint signed by the server's key over the root of exactly the
events before it. It names the first bad index of each log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cleanroom.proofs import merkle
from cleanroom.proofs.signed_note import NoteError, NoteVerifier
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


def check_logs(data_dir: Path, verifier: NoteVerifier) -> list[LogCheck]:
    """Checks every query log stored under `data_dir`."""
    database = Database(data_dir / "cleanroom.sqlite3", read_only=True)
    try:
        with database.reading() as db:
            logs = [row[0] for row in db.execute("SELECT log FROM audit_logs ORDER BY log")]
        return [_check_log(database, log, verifier) for log in logs]
    finally:
        database.close()


def _check_log(database: Database, log: str, verifier: NoteVerifier) -> LogCheck:
    with database.reading() as db:
        events = db.execute(
            "SELECT log_index, entry, leaf_hash FROM audit_events WHERE log = ? ORDER BY log_index",
            (log,),
        ).fetchall()
        notes = db.execute(
            "SELECT tree_size, signed_note FROM audit_checkpoints WHERE log = ? ORDER BY tree_size",
            (log,),
        ).fetchall()
        (size,) = db.execute("SELECT tree_size FROM audit_logs WHERE log = ?", (log,)).fetchone()

    roots, found = _replay(events)
    for tree_size, note in notes:
        if found:
            break
        found = _checkpoint_problem(verifier, note, int(tree_size), roots)
    if not found and size != len(events):
        found = min(size, len(events)), f"the log records {size} events; {len(events)} are stored"
    index, problem = found or (None, None)
    return LogCheck(log, len(events), len(notes), index, problem)


Finding = tuple[int, str]


def _replay(events: list[tuple[int, bytes, bytes]]) -> tuple[list[bytes], Finding | None]:
    """The root after each event, up to the first event that is missing, moved or changed."""
    frontier = merkle.Frontier()
    roots = [merkle.root([])]
    for position, (index, entry, stored_leaf) in enumerate(events):
        if index != position:
            return roots, (position, f"event {position} is missing (the next stored is {index})")
        if json.loads(entry).get("index") != position:
            return roots, (position, f"event {position} holds the bytes of another position")
        leaf = merkle.leaf_hash(entry)
        if leaf != stored_leaf:
            return roots, (position, f"event {position} was changed after it was logged")
        frontier.append(leaf)
        roots.append(frontier.root())
    return roots, None


def _checkpoint_problem(
    verifier: NoteVerifier, note: str, tree_size: int, roots: list[bytes]
) -> Finding | None:
    """What is wrong with the checkpoint stored for `tree_size`, given the replayed roots."""
    last = tree_size - 1
    try:
        checkpoint = verifier.open_checkpoint(note)
    except NoteError as error:
        return last, f"checkpoint {tree_size}: {error}"
    if checkpoint.tree_size != tree_size:
        return last, f"checkpoint stored as size {tree_size} says size {checkpoint.tree_size}"
    if tree_size >= len(roots):
        return len(roots) - 1, f"checkpoint {tree_size} covers events that are no longer stored"
    if checkpoint.root_hash != roots[tree_size]:
        return last, f"checkpoint {tree_size} does not match the events stored before it"
    return None
