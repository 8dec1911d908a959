"""A witness of a query log: cosign its checkpoints, only ever along one history.

Run by an auditor or any brand on its own machine with its own Ed25519 key (C2SP
tlog-witness, in pull form): fetch the log's latest checkpoint, check the log's signature
and that it is consistent (RFC 9162) with the last checkpoint this witness cosigned, then
give the server a `cosignature/v1` of it. A fork, a rollback or a bad signature is refused:
nothing is cosigned and the saved checkpoint stays, so the fork stays caught.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cleanroom.proofs import merkle
from cleanroom.proofs.cosignature import WitnessSigner
from cleanroom.proofs.signed_note import Checkpoint, KeyRing, NoteError
from partners.client import CleanRoomClient

_NOTE = "cosigned.note"


@dataclass(frozen=True)
class Witnessed:
    """What one witness run did.

    Attributes:
        log: The log's origin.
        checkpoint: The checkpoint it was shown, if one verified.
        previous_size: The size of the checkpoint it cosigned before, if any.
        cosigned: Whether it cosigned the checkpoint.
        problem: Why it refused, or None.
    """

    log: str
    checkpoint: Checkpoint | None
    previous_size: int | None
    cosigned: bool
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the run found nothing wrong."""
        return self.problem is None


class WitnessState:
    """The last checkpoint this witness cosigned for one log, kept on its machine."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self) -> str | None:
        """The saved checkpoint note, or None before the first cosignature."""
        path = self.directory / _NOTE
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else None

    def save(self, note: str) -> None:
        """Replaces the saved checkpoint whole."""
        self.directory.mkdir(parents=True, exist_ok=True)
        scratch = self.directory / f".{_NOTE}.tmp"
        scratch.write_text(note, encoding="utf-8")
        os.replace(scratch, self.directory / _NOTE)


def witness_once(
    client: CleanRoomClient,
    parent: str,
    log_keys: KeyRing,
    signer: WitnessSigner,
    state: WitnessState,
    *,
    clock: Callable[[], float] = time.time,
) -> Witnessed:
    """Checks the latest checkpoint of `parent` and cosigns it if it extends the saved one."""
    origin = f"{log_keys.name}/{parent}"
    saved = state.load()
    previous: Checkpoint | None = None
    if saved is not None:
        try:
            previous, _ = log_keys.open_checkpoint(saved)
        except NoteError as error:
            return Witnessed(origin, None, None, False, f"the saved checkpoint: {error}")
    previous_size = previous.tree_size if previous else None
    note = client.get_checkpoint(parent)
    try:
        checkpoint, _ = log_keys.open_checkpoint(note)
    except NoteError as error:
        return Witnessed(origin, None, previous_size, False, f"the checkpoint: {error}")

    def refuse(problem: str) -> Witnessed:
        return Witnessed(origin, checkpoint, previous_size, False, problem)

    if checkpoint.origin != origin:
        return refuse(f"the checkpoint is of log {checkpoint.origin!r}, not {origin!r}")
    if previous is not None:
        if checkpoint.tree_size < previous.tree_size:
            return refuse(
                f"the log shrank from {previous.tree_size} to {checkpoint.tree_size} events:"
                " rolled back or forked"
            )
        if checkpoint.tree_size == previous.tree_size:
            consistent = checkpoint.root_hash == previous.root_hash
        else:
            proof = client.consistency_proof(parent, previous.tree_size, checkpoint.tree_size)
            consistent = merkle.verify_consistency(
                previous.tree_size,
                checkpoint.tree_size,
                previous.root_hash,
                checkpoint.root_hash,
                proof,
            )
        if not consistent:
            return refuse(
                f"checkpoint {checkpoint.tree_size} does not extend checkpoint"
                f" {previous.tree_size} that this witness cosigned: a fork"
            )
    line = signer.cosign(checkpoint.body(), int(clock()))
    client.add_cosignature(parent, checkpoint.tree_size, line)
    state.save(note)
    return Witnessed(origin, checkpoint, previous_size, True)


def parse_interval(text: str) -> float:
    """Seconds of an interval such as `60s`, `5m`, `1h` or `90`.

    Raises:
        ValueError: It is not a positive number with an optional unit s, m or h.
    """
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    seconds = float(number) * unit
    if not 1 <= seconds <= 86400 * 7:
        raise ValueError(f"{text!r} is not from 1s to 7 days")
    return seconds
