"""The auditor's verification of a query log, with pinned public keys and nothing else.

Like Certificate Transparency monitors and CloudTrail's `validate-logs`: fetch the latest
signed checkpoint (or, with witnesses, the latest one a quorum of them cosigned) and check
its signatures; download every event the server lists, check that the fields it shows are
those of the hashed bytes, and recompute the Merkle root from those bytes; check that the
log extends the checkpoint saved by the previous run (and the events seen then, unchanged)
and that no retired key signed after its successor. Every problem is a verdict naming the
first bad index (or the checkpoint), never an exception: the data comes from the operator.
A bad root is located by comparing the roots of growing prefixes with the checkpoints the
server signed at each size.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2

from cleanroom.proofs import merkle
from cleanroom.proofs.cosignature import WitnessVerifier
from cleanroom.proofs.signed_note import Checkpoint, KeyRing, NoteError, NoteVerifier
from cleanroom.v1 import audit_event_pb2
from partners.client import CleanRoomClient
from partners.errors import ServerError

_NOTE, _LEAVES, _KEYS = "checkpoint.note", "leaves.bin", "keys.json"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification.

    Attributes:
        log: The log's origin.
        events_checked: How many events are proved by the trusted checkpoint.
        checkpoint: The trusted checkpoint, if one verified.
        previous_size: The size of the checkpoint saved by the previous run, if any.
        first_bad_index: The first event a problem affects (None: the checkpoint itself).
        problem: What is wrong, or None if the log verified.
        events_listed: How many events the server listed; those from `events_checked` on
            are not yet under the trusted checkpoint.
        witnesses: The witnesses whose cosignature of the checkpoint verified.
        signed_by: The id of the log key that signed the checkpoint.
        entries: The canonical bytes of the events under the checkpoint, oldest first.
    """

    log: str
    events_checked: int
    checkpoint: Checkpoint | None
    previous_size: int | None
    first_bad_index: int | None = None
    problem: str | None = None
    events_listed: int = 0
    witnesses: tuple[str, ...] = ()
    signed_by: str | None = None
    entries: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """Whether the log verified."""
        return self.problem is None


class AuditorState:
    """What the previous verification saw: its checkpoint, leaf hashes and keys' ranges."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self) -> tuple[str | None, list[bytes]]:
        """The saved signed checkpoint (None on the first run) and leaf hashes."""
        note_file, leaves_file = self.directory / _NOTE, self.directory / _LEAVES
        if not note_file.exists():
            return None, []
        data = leaves_file.read_bytes() if leaves_file.exists() else b""
        leaves = [data[i : i + merkle.HASH_BYTES] for i in range(0, len(data), merkle.HASH_BYTES)]
        return note_file.read_text(encoding="utf-8", errors="replace"), leaves

    def key_ranges(self) -> dict[str, list[int]]:
        """For each log key seen, the smallest and largest checkpoint size it signed."""
        try:
            data = json.loads((self.directory / _KEYS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): [int(v[0]), int(v[1])] for k, v in data.items() if _pair(v)}

    def save(self, note: str, leaves: list[bytes], key_ranges: dict[str, list[int]]) -> None:
        """Saves what this verification saw, each file replaced whole."""
        self.directory.mkdir(parents=True, exist_ok=True)
        keys = json.dumps(key_ranges, sort_keys=True).encode()
        for name, data in ((_LEAVES, b"".join(leaves)), (_KEYS, keys), (_NOTE, note.encode())):
            scratch = self.directory / f".{name}.tmp"
            scratch.write_bytes(data)
            os.replace(scratch, self.directory / name)


def _pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)


Finding = tuple[int | None, str]


def verify_log(
    client: CleanRoomClient,
    parent: str,
    keys: KeyRing | NoteVerifier,
    state: AuditorState,
    *,
    witnesses: Sequence[WitnessVerifier] = (),
    quorum: int = 0,
) -> Verdict:
    """Verifies the query log of `parent` (`collaborations/{id}`) and saves what it saw.

    Args:
        client: A connection as an auditor (or administrator).
        parent: The collaboration's resource name.
        keys: The log's verifier keys: the current one and those it replaced, oldest first.
        state: Where the previous run's checkpoint is kept.
        witnesses: The witnesses' public keys.
        quorum: How many of them must have cosigned (or extended) the events trusted.
    """
    ring = keys if isinstance(keys, KeyRing) else KeyRing([keys])
    origin = f"{ring.name}/{parent}"
    saved_note, saved_leaves = state.load()
    ranges = state.key_ranges()
    previous: Checkpoint | None = None
    if saved_note is not None:
        try:
            previous, _ = ring.open_checkpoint(saved_note)
        except NoteError as error:
            return Verdict(
                origin, 0, None, None, None,
                f"the saved checkpoint does not verify with the keys given ({error}): give"
                " every key the log was signed with, oldest first",
            )  # fmt: skip
    previous_size = previous.tree_size if previous else None

    def fail(checkpoint: Checkpoint | None, checked: int, found: Finding, **more: Any) -> Verdict:
        return Verdict(origin, checked, checkpoint, previous_size, found[0], found[1], **more)

    try:
        note, witnessed = client.get_witnessed_checkpoints(parent)
    except ServerError as error:
        if error.reason == "CHECKPOINT_NOT_FOUND":
            return _without_checkpoint(client, parent, origin, previous_size, quorum)
        return fail(None, 0, _refusal(error))
    checkpoint, found, signer = _open(ring, note, origin)
    if found is None and checkpoint is not None and signer is not None:
        found = _key_order(ring, signer, checkpoint.tree_size, ranges, previous)
        found = found or _shrunk(checkpoint, previous)
    if found is not None or checkpoint is None or signer is None:
        return fail(checkpoint, 0, found or (None, "no checkpoint"))
    size = checkpoint.tree_size
    entries, leaves, found = _download(client, parent)
    listed = len(entries)
    if found is None and listed < size:
        found = listed, f"the checkpoint covers {size} events; the server lists {listed}"
    found = found or _compare(leaves, saved_leaves)
    found = found or _locate(client, parent, ring, leaves, checkpoint)
    found = found or _proofs(client, parent, leaves, checkpoint, previous)
    trusted = size
    cosigners: tuple[str, ...] = ()
    if found is None and quorum:
        trusted, cosigners, found = _witnessed(
            client, parent, ring=ring, origin=origin, notes=witnessed,
            witnesses=witnesses, quorum=quorum, leaves=leaves[:size],
        )  # fmt: skip
    if found is not None:
        return fail(checkpoint, min(listed, size), found, events_listed=listed)
    first, last = ranges.get(signer.key_id, [size, size])
    ranges[signer.key_id] = [min(first, size), max(last, size)]
    state.save(note, leaves[:size], ranges)
    return Verdict(
        origin, trusted, checkpoint, previous_size,
        events_listed=listed, witnesses=cosigners, signed_by=signer.key_id,
        entries=tuple(entries[:size]),
    )  # fmt: skip


def _refusal(error: ServerError) -> Finding:
    """The finding of a server that refuses its own log; other errors go on up."""
    if error.reason != "AUDIT_LOG_INCONSISTENT":
        raise error
    index = error.metadata.get("first_bad_index")
    bad = int(index) if index and index.isdigit() else None
    return bad, f"the server refuses its own log: {error.message}"


def _shrunk(checkpoint: Checkpoint, previous: Checkpoint | None) -> Finding | None:
    size = checkpoint.tree_size
    if previous is None or size >= previous.tree_size:
        return None
    return size, (
        f"the log has {size} events, fewer than the {previous.tree_size} of the saved"
        " checkpoint: truncated or rolled back"
    )


def _proofs(
    client: CleanRoomClient,
    parent: str,
    leaves: list[bytes],
    checkpoint: Checkpoint,
    previous: Checkpoint | None,
) -> Finding | None:
    """The server's own proofs: consistency with the saved checkpoint, the last inclusion."""
    size = checkpoint.tree_size
    if previous:
        proof = client.consistency_proof(parent, previous.tree_size, size)
        if not merkle.verify_consistency(
            previous.tree_size, size, previous.root_hash, checkpoint.root_hash, proof
        ):
            return previous.tree_size - 1, "the log does not extend the saved checkpoint"
    if size:
        proof = client.inclusion_proof(parent, size - 1, size)
        root = checkpoint.root_hash
        if not merkle.verify_inclusion(size - 1, size, leaves[size - 1], proof, root):
            return size - 1, "the server's inclusion proof does not verify"
    return None


def _witnessed(
    client: CleanRoomClient,
    parent: str,
    *,
    ring: KeyRing,
    origin: str,
    notes: Sequence[str],
    witnesses: Sequence[WitnessVerifier],
    quorum: int,
    leaves: list[bytes],
) -> tuple[int, tuple[str, ...], Finding | None]:
    """How many events a quorum of witnesses vouch for, who, or what is wrong.

    Each witness vouches for the tree it cosigned and every prefix of it; the events
    trusted are those up to the size that `quorum` witnesses each cosigned or extended,
    after checking that every cosigned root is that of the events listed.
    """
    sizes: dict[str, int] = {}
    bad: list[tuple[int | None, str]] = []
    for note in notes:
        try:
            checkpoint, _ = ring.open_checkpoint(note)
        except NoteError as error:
            bad.append((_claimed_size(note), f"a cosigned checkpoint: {error}"))
            continue
        if checkpoint.origin != origin:
            continue
        for witness in witnesses:
            try:
                found = witness.find(note)
            except NoteError as error:
                bad.append((checkpoint.tree_size, str(error)))
                continue
            if found is None:
                continue
            if checkpoint.tree_size > len(leaves):
                return 0, (), (
                    len(leaves),
                    f"{witness.name} cosigned {checkpoint.tree_size} events; the log now has"
                    f" {len(leaves)}: truncated or rolled back",
                )  # fmt: skip
            mismatch = _locate(client, parent, ring, leaves, checkpoint)
            if mismatch is not None:
                return 0, (), (
                    mismatch[0],
                    f"the checkpoint of size {checkpoint.tree_size} that {witness.name}"
                    f" cosigned does not match the events: history rewritten ({mismatch[1]})",
                )  # fmt: skip
            sizes[witness.name] = max(sizes.get(witness.name, 0), checkpoint.tree_size)
    if len(sizes) < quorum:
        detail = "".join(f"; {problem}" for _, problem in bad)
        where = min((s for s, _ in bad if s), default=None)
        rewritten = (
            f": the history up to event {where - 1} is not the one they cosigned, or their"
            " cosignatures were altered"
            if where
            else ""
        )
        return 0, (), (
            where - 1 if where else None,
            f"valid cosignatures of {len(sizes)} of the witnesses"
            f" ({', '.join(sorted(sizes)) or 'none'}); the quorum is {quorum}{detail}{rewritten}",
        )  # fmt: skip
    trusted = sorted(sizes.values(), reverse=True)[quorum - 1]
    return trusted, tuple(name for name in sizes), None


def _without_checkpoint(
    client: CleanRoomClient, parent: str, origin: str, previous_size: int | None, quorum: int
) -> Verdict:
    """The verdict when the server has no (cosigned) checkpoint: only an empty log passes."""
    listed = sum(1 for _ in client.list_audit_events(parent, page_size=1000))
    if previous_size:
        return Verdict(
            origin, 0, None, previous_size, 0,
            f"the server has no checkpoint, but one of size {previous_size} was saved:"
            " truncated or rolled back",
            events_listed=listed,
        )  # fmt: skip
    if listed and quorum:
        return Verdict(
            origin, 0, None, None, None,
            f"no checkpoint is cosigned by {quorum} witnesses, so none of the {listed} events"
            " listed is trusted: the witnesses must run `cleanroom-partner audit witness`",
            events_listed=listed,
        )  # fmt: skip
    # Events listed after "no checkpoint yet" came after it, such as this auditor's calls.
    return Verdict(origin, 0, None, None, events_listed=listed)


def _open(
    ring: KeyRing, note: str, origin: str
) -> tuple[Checkpoint | None, Finding | None, NoteVerifier | None]:
    """The checkpoint of a note, checked against the key ring and the log's origin."""
    try:
        checkpoint, signer = ring.open_checkpoint(note)
    except NoteError as error:
        size = _claimed_size(note)
        what = f"the latest checkpoint (size {size})" if size is not None else "the checkpoint"
        return None, (None, f"{what} does not verify with the log's keys: {error}"), None
    if checkpoint.origin != origin:
        return checkpoint, (None, f"the checkpoint is of log {checkpoint.origin!r}"), None
    return checkpoint, None, signer


def _claimed_size(note: str) -> int | None:
    lines = note.split("\n")
    return int(lines[1]) if len(lines) > 2 and lines[1].isdigit() else None


def _key_order(
    ring: KeyRing,
    signer: NoteVerifier,
    size: int,
    ranges: dict[str, list[int]],
    previous: Checkpoint | None,
) -> Finding | None:
    """A finding if a retired key signed past the sizes its successors took over."""
    position = ring.position(signer)
    for verifier in ring.verifiers[position + 1 :]:
        seen = ranges.get(verifier.key_id)
        if seen is not None:
            return (
                seen[0] - 1 if previous else None,
                f"checkpoint {size} is signed by key {signer.key_id}, retired since key"
                f" {verifier.key_id} signed size {seen[0]}",
            )
    return None


def _download(
    client: CleanRoomClient, parent: str
) -> tuple[list[bytes], list[bytes], tuple[int, str] | None]:
    """Every listed event's bytes and recomputed leaf hash, each event's fields checked."""
    entries: list[bytes] = []
    leaves: list[bytes] = []
    for event in client.list_audit_events(parent, page_size=1000):
        position = len(entries)
        if event.index != position:
            return entries, leaves, (position, f"event {position} is missing from the log")
        problem = _event_problem(position, event)
        if problem:
            return entries, leaves, (position, problem)
        entries.append(event.entry)
        leaves.append(merkle.leaf_hash(event.entry))
    return entries, leaves, None


def _event_problem(position: int, event: audit_event_pb2.AuditEvent) -> str | None:
    """What is wrong with one listed event: its bytes, or fields shown beside them."""
    data = _parsed(event.entry)
    if isinstance(data, str):
        return f"event {position} {data}"
    if data.get("index") != position:
        return f"event {position} holds the bytes of another position"
    return _shown_problem(position, event, data)


def shown_problem(event: audit_event_pb2.AuditEvent) -> str | None:
    """What differs between a listed event's fields and its hashed bytes, if anything.

    `audit list` checks every event it shows this way, so that the fields printed (and
    filtered on by the server) are those the log's hashes cover.
    """
    data = _parsed(event.entry)
    if isinstance(data, str):
        return f"event {event.index} {data}"
    if data.get("index") != event.index:
        return f"event {event.index} holds the bytes of event {data.get('index')!r}"
    return _shown_problem(event.index, event, data)


def _shown_problem(
    position: int, event: audit_event_pb2.AuditEvent, data: dict[str, Any]
) -> str | None:
    if event.leaf_hash and event.leaf_hash != merkle.leaf_hash(event.entry):
        return f"event {position}'s leaf hash is not that of its bytes"
    try:
        shown, hashed = _shown_fields(event), _hashed_fields(data)
    except (ValueError, KeyError, TypeError, OverflowError) as error:
        return f"event {position} lacks a field of an event ({error})"
    differ = [name for name, value in shown.items() if hashed[name] != value]
    if differ:
        return f"event {position}'s {differ[0]} as the server shows it differs from its bytes"
    return None


def _parsed(entry: bytes) -> dict[str, Any] | str:
    """An entry's JSON object, or what is wrong with it."""
    try:
        data = json.loads(entry)
    except (ValueError, UnicodeDecodeError):
        return "is not JSON"
    return data if isinstance(data, dict) else "is not a JSON object"


def _shown_fields(event: audit_event_pb2.AuditEvent) -> dict[str, Any]:
    outcome = event.outcome
    return {
        "event_time": event.event_time.ToDatetime(tzinfo=UTC),
        "caller": event.caller,
        "caller_roles": list(event.caller_roles),
        "method": event.method,
        "resources": list(event.resources),
        "request_summary": json_format.MessageToDict(event.request_summary),
        "outcome": [
            outcome.status_code, outcome.reason, outcome.message,
            outcome.released_count, outcome.suppressed_count, outcome.epsilon_spent,
        ],
    }  # fmt: skip


def _hashed_fields(data: dict[str, Any]) -> dict[str, Any]:
    outcome = data["outcome"]
    epsilon = float(outcome["epsilon_spent"])
    if not math.isfinite(epsilon):
        raise ValueError("epsilon_spent is not a number")
    return {
        "event_time": datetime.fromisoformat(data["event_time"]).astimezone(UTC),
        "caller": data["caller"],
        "caller_roles": list(data["caller_roles"]),
        "method": data["method"],
        "resources": list(data["resources"]),
        "request_summary": _as_struct(data["request_summary"]),
        "outcome": [
            outcome["status_code"], outcome["reason"], outcome["message"],
            outcome["released_count"], outcome["suppressed_count"], epsilon,
        ],
    }  # fmt: skip


def _as_struct(summary: Any) -> dict[str, Any]:
    """The summary as the API's Struct shows it (numbers as doubles), for comparison."""
    struct = struct_pb2.Struct()
    struct.update(summary)
    return json_format.MessageToDict(struct)


def _compare(leaves: list[bytes], saved: list[bytes]) -> Finding | None:
    """The first event that changed since the previous verification, if any."""
    for index, (now, before) in enumerate(zip(leaves, saved, strict=False)):
        if now != before:
            return index, f"event {index} changed since the previous verification"
    return None


def _locate(
    client: CleanRoomClient,
    parent: str,
    ring: KeyRing,
    leaves: list[bytes],
    checkpoint: Checkpoint,
) -> Finding | None:
    """None if the events make the checkpoint's root; else the first event that does not."""
    frontier = merkle.Frontier()
    roots = [merkle.root([])]
    for leaf in leaves[: checkpoint.tree_size]:
        frontier.append(leaf)
        roots.append(frontier.root())
    if roots[checkpoint.tree_size] == checkpoint.root_hash:
        return None
    low, high = 1, checkpoint.tree_size  # the smallest signed size whose root differs
    while low < high:
        middle = (low + high) // 2
        try:
            signed, _ = ring.open_checkpoint(client.get_checkpoint(parent, middle))
            matches = signed.root_hash == roots[middle]
        except (NoteError, ServerError):
            matches = False
        low, high = (middle + 1, high) if matches else (low, middle)
    return low - 1, f"event {low - 1} does not match the checkpoints signed when it was logged"
