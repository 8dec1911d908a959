"""Whether a stored query log is the tree its server signed: replayed from the database.

Used twice: by the server at start (and when an append finds the store changed under it),
so that it never signs a checkpoint over a rewritten history, and by the operator's
offline check. Both replay every event: consecutive indices, canonical JSON that names
its own index, the stored leaf hash that of the stored bytes, the filter columns those of
the bytes, the stored frontier that of the events; then the signed checkpoints: one per
size, each signed by a key of the ring (never an older key after a newer one), the
latest over exactly the events stored. A mismatch names the first bad index.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from cleanroom.proofs import merkle
from cleanroom.proofs.merkle import Frontier
from cleanroom.proofs.signed_note import Checkpoint, KeyRing, NoteError


@dataclass(frozen=True)
class Finding:
    """The first thing wrong with a log: the index of the first event it affects, and why."""

    index: int
    problem: str


@dataclass
class Replay:
    """What a replay of one stored log found."""

    log: str
    frontier: Frontier = field(default_factory=Frontier)
    checkpoints: int = 0
    latest_note: str | None = None
    latest_key: str | None = None
    finding: Finding | None = None

    @property
    def ok(self) -> bool:
        """Whether the log is the tree its server signed."""
        return self.finding is None


def stored_logs(db: sqlite3.Connection) -> list[str]:
    """Every log the database holds anything of."""
    rows = db.execute(
        "SELECT log FROM audit_logs UNION SELECT log FROM audit_checkpoints"
        " UNION SELECT DISTINCT log FROM audit_events ORDER BY 1"
    )
    return [str(row[0]) for row in rows]


def replay(
    db: sqlite3.Connection, log: str, keys: KeyRing, origin: str, *, every_checkpoint: bool
) -> Replay:
    """Replays a stored log; `every_checkpoint` checks every signature, not only the latest.

    The events are read one at a time and only their leaf hashes kept (32 bytes each, to
    locate a bad root), never their entries. Roots of other sizes than the latest are
    computed only to check every checkpoint or to locate a mismatch.
    """
    result = Replay(log)
    leaves: list[bytes] = []
    cursor = db.execute(
        "SELECT log_index, event_time, caller, method, entry, leaf_hash FROM audit_events"
        " WHERE log = ? ORDER BY log_index",
        (log,),
    )
    for position, row in enumerate(cursor):
        problem = _event_problem(position, row)
        if problem is not None:
            result.finding = Finding(position, problem)
            cursor.close()
            break
        leaves.append(bytes(row[5]))
        result.frontier.append(leaves[-1])
    size = len(leaves)
    notes = db.execute(
        "SELECT tree_size, signed_note FROM audit_checkpoints WHERE log = ? ORDER BY tree_size",
        (log,),
    ).fetchall()
    result.checkpoints = len(notes)
    checkpoint_finding = _checkpoints_problem(
        notes, leaves, result.frontier, keys, origin, every_checkpoint
    )
    if checkpoint_finding is not None and (
        result.finding is None or checkpoint_finding.index < result.finding.index
    ):
        result.finding = checkpoint_finding
    if notes:
        result.latest_note = str(notes[-1][1])
    if result.finding is None:
        result.finding = _head_problem(db, log, result.frontier, size, len(notes))
    if result.finding is None and result.latest_note is not None:
        result.latest_key = keys.open_checkpoint(result.latest_note)[1].key_id
    return result


def _event_problem(position: int, row: tuple[Any, ...]) -> str | None:
    index, event_time, caller, method, entry, stored_leaf = row
    if index != position:
        return f"event {position} is missing (the next stored is {index})"
    data = parse_entry(entry)
    if isinstance(data, str):
        return f"event {position} {data}"
    if data.get("index") != position:
        return f"event {position} holds the bytes of another position"
    if not isinstance(stored_leaf, bytes) or merkle.leaf_hash(entry) != stored_leaf:
        return f"event {position} was changed after it was logged"
    columns = {"event_time": event_time, "caller": caller, "method": method}
    changed = [name for name, value in columns.items() if data.get(name) != value]
    if changed:
        return f"event {position}'s {changed[0]} column differs from its hashed entry"
    return None


def parse_entry(entry: object) -> dict[str, Any] | str:
    """A stored entry's JSON object, or what is wrong with it."""
    if not isinstance(entry, bytes):
        return "is not stored as bytes"
    try:
        data = json.loads(entry)
    except (ValueError, UnicodeDecodeError):
        return "is not JSON"
    return data if isinstance(data, dict) else "is not a JSON object"


def _checkpoints_problem(  # noqa: PLR0917 - the parts of one replay
    notes: list[tuple[Any, ...]],
    leaves: list[bytes],
    frontier: Frontier,
    keys: KeyRing,
    origin: str,
    every_checkpoint: bool,
) -> Finding | None:
    """The first signed size that is missing, forged or over other events, if any."""
    sizes = [int(size) for size, _ in notes]
    uncovered = _coverage_problem(sizes, len(leaves))
    if uncovered is not None:
        return uncovered
    if not notes:
        return None

    def problem(tree_size: int, root: bytes) -> tuple[str | None, int]:
        """What is wrong with the checkpoint of a size, and its key's place in the ring."""
        try:
            checkpoint, verifier = keys.open_checkpoint(str(notes[tree_size - 1][1]))
        except NoteError as error:
            return f"checkpoint {tree_size}: {error}", -1
        return _mismatch(checkpoint, tree_size, root, origin), keys.position(verifier)

    if every_checkpoint:
        position, growing = -1, Frontier()
        for tree_size in sizes:
            growing.append(leaves[tree_size - 1])
            found, place = problem(tree_size, growing.root())
            if found is None and place < position:
                found = f"checkpoint {tree_size} is signed by a retired key after its successor"
            if found is not None:
                return Finding(tree_size - 1, found)
            position = place
        return None
    latest, _ = problem(sizes[-1], frontier.root())
    if latest is None:
        return None
    low, high = 1, sizes[-1]  # the smallest signed size that does not hold
    while low < high:
        middle = (low + high) // 2
        found, _ = problem(middle, merkle.root(leaves[:middle]))
        low, high = (middle + 1, high) if found is None else (low, middle)
    return Finding(low - 1, problem(low, merkle.root(leaves[:low]))[0] or latest)


def _coverage_problem(sizes: list[int], replayed: int) -> Finding | None:
    """A finding unless there is one checkpoint per size, for exactly the stored events."""
    if sizes != list(range(1, len(sizes) + 1)):
        expected = range(1, len(sizes) + 2)
        missing = next(s for s, want in zip([*sizes, 0], expected, strict=False) if s != want)
        return Finding(missing - 1, f"the signed checkpoint of size {missing} is missing")
    if len(sizes) > replayed:
        return Finding(replayed, f"checkpoints cover {len(sizes)} events; {replayed} are stored")
    if len(sizes) < replayed:
        return Finding(
            len(sizes), f"events {len(sizes)} to {replayed - 1} are under no signed checkpoint"
        )
    return None


def _mismatch(checkpoint: Checkpoint, tree_size: int, root: bytes, origin: str) -> str | None:
    if checkpoint.origin != origin:
        return f"checkpoint {tree_size} is of log {checkpoint.origin!r}"
    if checkpoint.tree_size != tree_size:
        return f"checkpoint stored as size {tree_size} says size {checkpoint.tree_size}"
    if checkpoint.root_hash != root:
        return f"checkpoint {tree_size} does not match the events stored before it"
    return None


def _head_problem(
    db: sqlite3.Connection, log: str, frontier: Frontier, size: int, checkpoints: int
) -> Finding | None:
    row = db.execute("SELECT tree_size, frontier FROM audit_logs WHERE log = ?", (log,)).fetchone()
    stored_size, stored = (int(row[0]), bytes(row[1])) if row else (0, b"")
    if stored_size != size or stored != frontier.to_bytes():
        return Finding(
            min(stored_size, size, checkpoints),
            f"the stored tree head (size {stored_size}) is not that of the {size} stored events",
        )
    return None
