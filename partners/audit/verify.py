"""The auditor's verification of a query log, with a pinned public key and nothing else.

Like Certificate Transparency monitors and CloudTrail's `validate-logs`: fetch the latest
signed checkpoint and check its signature; download every event and recompute the Merkle
root from the events' own bytes; check that the log extends the checkpoint saved by the
previous run (and the events seen then, unchanged); name the first bad index otherwise.
A bad root is located by comparing the roots of growing prefixes with the checkpoints the
server signed at each size.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cleanroom.proofs import merkle
from cleanroom.proofs.signed_note import Checkpoint, NoteError, NoteVerifier
from partners.client import CleanRoomClient
from partners.errors import ServerError

_NOTE, _LEAVES = "checkpoint.note", "leaves.bin"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification."""

    log: str
    events_checked: int
    checkpoint: Checkpoint | None
    previous_size: int | None
    first_bad_index: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the log verified."""
        return self.problem is None


class AuditorState:
    """What the previous verification saw: its checkpoint and the leaf hashes it checked."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self) -> tuple[str | None, list[bytes]]:
        """The saved signed checkpoint (None on the first run) and leaf hashes."""
        note_file, leaves_file = self.directory / _NOTE, self.directory / _LEAVES
        if not note_file.exists():
            return None, []
        data = leaves_file.read_bytes() if leaves_file.exists() else b""
        leaves = [data[i : i + merkle.HASH_BYTES] for i in range(0, len(data), merkle.HASH_BYTES)]
        return note_file.read_text(encoding="utf-8"), leaves

    def save(self, note: str, leaves: list[bytes]) -> None:
        """Saves what this verification saw, each file replaced whole."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, data in ((_LEAVES, b"".join(leaves)), (_NOTE, note.encode())):
            scratch = self.directory / f".{name}.tmp"
            scratch.write_bytes(data)
            os.replace(scratch, self.directory / name)


def verify_log(
    client: CleanRoomClient, parent: str, verifier: NoteVerifier, state: AuditorState
) -> Verdict:
    """Verifies the query log of `parent` (`collaborations/{id}`) and saves what it saw."""
    origin = f"{verifier.name}/{parent}"
    saved_note, saved_leaves = state.load()
    previous = verifier.open_checkpoint(saved_note) if saved_note else None
    previous_size = previous.tree_size if previous else None

    def fail(checkpoint: Checkpoint | None, checked: int, index: int, problem: str) -> Verdict:
        return Verdict(origin, checked, checkpoint, previous_size, index, problem)

    note = client.get_checkpoint(parent)
    try:
        checkpoint = verifier.open_checkpoint(note)
    except NoteError as error:
        return fail(None, 0, 0, f"the latest checkpoint does not verify: {error}")
    if checkpoint.origin != origin:
        return fail(checkpoint, 0, 0, f"the checkpoint is of log {checkpoint.origin!r}")
    size = checkpoint.tree_size
    if previous and size < previous.tree_size:
        shrunk = f"the log has {size} events, fewer than the {previous.tree_size} of the saved"
        return fail(checkpoint, 0, size, shrunk + " checkpoint: truncated or rolled back")
    leaves, found = _download(client, parent, size)
    if found is None:
        found = _compare(leaves, saved_leaves)
    if found is None:
        found = _locate(client, parent, verifier, leaves, checkpoint)
    if found is None and previous:
        proof = client.consistency_proof(parent, previous.tree_size, size)
        if not merkle.verify_consistency(
            previous.tree_size, size, previous.root_hash, checkpoint.root_hash, proof
        ):
            found = previous.tree_size - 1, "the log does not extend the saved checkpoint"
    if found is not None:
        return fail(checkpoint, len(leaves), *found)
    if size:
        proof = client.inclusion_proof(parent, size - 1, size)
        if not merkle.verify_inclusion(size - 1, size, leaves[-1], proof, checkpoint.root_hash):
            return fail(checkpoint, size, size - 1, "the server's inclusion proof does not verify")
    state.save(note, leaves)
    return Verdict(origin, size, checkpoint, previous_size)


Finding = tuple[int, str]


def _download(
    client: CleanRoomClient, parent: str, size: int
) -> tuple[list[bytes], Finding | None]:
    """The leaf hashes of events 0 to size - 1, recomputed from their bytes."""
    leaves: list[bytes] = []
    for event in client.list_audit_events(parent, end_index=size, page_size=1000):
        position = len(leaves)
        if event.index != position:
            return leaves, (position, f"event {position} is missing from the log")
        if json.loads(event.entry).get("index") != position:
            return leaves, (position, f"event {position} holds the bytes of another position")
        leaves.append(merkle.leaf_hash(event.entry))
    if len(leaves) < size:
        return leaves, (len(leaves), f"the checkpoint covers {size} events; {len(leaves)} exist")
    return leaves, None


def _compare(leaves: list[bytes], saved: list[bytes]) -> Finding | None:
    """The first event that changed since the previous verification, if any."""
    for index, (now, before) in enumerate(zip(leaves, saved, strict=False)):
        if now != before:
            return index, f"event {index} changed since the previous verification"
    return None


def _locate(
    client: CleanRoomClient,
    parent: str,
    verifier: NoteVerifier,
    leaves: list[bytes],
    checkpoint: Checkpoint,
) -> Finding | None:
    """None if the events make the checkpoint's root; else the first event that does not."""
    frontier = merkle.Frontier()
    roots = [merkle.root([])]
    for leaf in leaves:
        frontier.append(leaf)
        roots.append(frontier.root())
    if roots[checkpoint.tree_size] == checkpoint.root_hash:
        return None
    low, high = 1, checkpoint.tree_size  # the smallest signed size whose root differs
    while low < high:
        middle = (low + high) // 2
        try:
            signed = verifier.open_checkpoint(client.get_checkpoint(parent, middle))
            matches = signed.root_hash == roots[middle]
        except (NoteError, ServerError):
            matches = False
        low, high = (middle + 1, high) if matches else (low, middle)
    return low - 1, f"event {low - 1} does not match the checkpoints signed when it was logged"
