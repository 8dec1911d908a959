"""Signed checkpoints: the C2SP `tlog-checkpoint` body in a C2SP `signed-note`, with Ed25519.

A checkpoint says "the log named `origin` had `tree_size` entries with this root hash",
signed by the server's key. An auditor pins the verifier key (`name+keyid+base64key`, the
form of Go's `golang.org/x/mod/sumdb/note`) and checks checkpoints with it offline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space
_NAME = re.compile(r"[^\s+]+")
_HASH_BYTES = 32


class NoteError(ValueError):
    """A key, note or checkpoint is malformed, or no trusted signature verifies."""


def _key_id(name: str, public_key: bytes, kind: bytes = ED25519) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + kind + public_key).digest()[:4]


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class Checkpoint:
    """The body of a checkpoint: which log, how many entries, which root."""

    origin: str
    tree_size: int
    root_hash: bytes

    def body(self) -> str:
        """The note text: origin, size and base64 root, each on a line."""
        return f"{self.origin}\n{self.tree_size}\n{base64.b64encode(self.root_hash).decode()}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Reads a checkpoint body (extension lines after the third are ignored)."""
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not lines[0]:
            raise NoteError("a checkpoint is an origin, a size and a root hash, one per line")
        if not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
            raise NoteError(f"checkpoint tree size {lines[1]!r} is not a decimal number")
        root_hash = _b64decode(lines[2], "checkpoint root hash")
        if len(root_hash) != _HASH_BYTES:
            raise NoteError("checkpoint root hash is not 32 bytes")
        return cls(lines[0], int(lines[1]), root_hash)


class NoteSigner:
    """Signs notes with one Ed25519 key under one key name."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = _check_name(name)
        self._private_key = private_key
        self._public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._key_id = _key_id(name, self._public)

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        """A signer with a new random key."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_key(cls, text: str) -> NoteSigner:
        """Reads a signer key: `PRIVATE+KEY+{name}+{keyid hex}+{base64(0x01 || seed)}`."""
        parts = text.strip().split("+", 4)  # base64 may hold "+" too
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signer key reads PRIVATE+KEY+name+keyid+base64key")
        raw = _b64decode(parts[4], "signer key")
        if len(raw) != 33 or raw[:1] != ED25519:
            raise NoteError("the signer key is not an Ed25519 key")
        signer = cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer._key_id.hex() != parts[3]:
            raise NoteError("the signer key's id does not match its key")
        return signer

    def key_text(self) -> str:
        """The signer key in the form `from_key` reads. Keep it secret."""
        seed = self._private_key.private_bytes_raw()
        encoded = base64.b64encode(ED25519 + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self._key_id.hex()}+{encoded}"

    @property
    def verifier_key(self) -> str:
        """The public verifier key that auditors pin: `{name}+{keyid hex}+{base64key}`."""
        encoded = base64.b64encode(ED25519 + self._public).decode()
        return f"{self.name}+{self._key_id.hex()}+{encoded}"

    @property
    def key_id(self) -> str:
        """The key's 4-byte id, in hex: what its signature lines start with."""
        return self._key_id.hex()

    def add_signature(self, note: str) -> str:
        """The note with this key's signature added after those it already carries.

        A rotated key signs the last checkpoint of the old key this way, so that one note
        carries both: the handover that ties the new key to the old key's history.
        """
        text, lines = signature_lines(note)
        if any(name == self.name and blob[:4] == self._key_id for name, blob in lines):
            return note
        return note + self.sign(text).rpartition("\n\n")[2]

    def sign(self, text: str) -> str:
        """The signed note of `text` (which must end in a newline)."""
        if not text.endswith("\n"):
            raise NoteError("note text must end with a newline")
        signature = self._private_key.sign(text.encode())
        encoded = base64.b64encode(self._key_id + signature).decode()
        return f"{text}\n{SIGNATURE_PREFIX}{self.name} {encoded}\n"


class NoteVerifier:
    """Opens notes signed by one pinned key."""

    def __init__(self, verifier_key: str) -> None:
        parts = verifier_key.strip().split("+", 2)  # base64 may hold "+" too
        if len(parts) != 3:
            raise NoteError("a verifier key reads name+keyid+base64key")
        name, key_id, encoded = parts
        raw = _b64decode(encoded, "verifier key")
        if len(raw) != 33 or raw[:1] != ED25519:
            raise NoteError("the verifier key is not an Ed25519 key")
        self.name = _check_name(name)
        self._key_id = _key_id(name, raw[1:])
        if self._key_id.hex() != key_id:
            raise NoteError("the verifier key's id does not match its key")
        self._public_key = Ed25519PublicKey.from_public_bytes(raw[1:])

    @property
    def key_id(self) -> str:
        """The key's 4-byte id, in hex."""
        return self._key_id.hex()

    @property
    def verifier_key(self) -> str:
        """The key in the form it was given: `{name}+{keyid hex}+{base64key}`."""
        raw = self._public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return f"{self.name}+{self.key_id}+{base64.b64encode(ED25519 + raw).decode()}"

    def signed(self, note: str) -> bool:
        """Whether the note carries a signature line of this key (valid or not)."""
        try:
            _, lines = signature_lines(note)
        except NoteError:
            return False
        return any(name == self.name and blob[:4] == self._key_id for name, blob in lines)

    def open(self, note: str) -> str:
        """The text of a note signed by this key.

        Raises:
            NoteError: The note is malformed, or this key's signature is absent or wrong.
        """
        text, lines = signature_lines(note)
        for name, blob in lines:
            if name != self.name or blob[:4] != self._key_id:
                continue  # another key's signature: ignored, as the spec requires
            try:
                self._public_key.verify(blob[4:], text.encode())
            except InvalidSignature:
                raise NoteError(f"the signature of {self.name!r} does not verify") from None
            return text
        raise NoteError(f"the note carries no signature of the pinned key {self.name!r}")

    def open_checkpoint(self, note: str) -> Checkpoint:
        """The checkpoint of a note signed by this key."""
        return Checkpoint.parse(self.open(note))


def signature_lines(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The text of a signed note and its signature lines as (key name, key id || signature).

    Raises:
        NoteError: The note is not text, a blank line, then well-formed signature lines.
    """
    if not isinstance(note, str):
        raise NoteError("a signed note is text")
    text, separator, signatures = note.rpartition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise NoteError("a signed note is text, a blank line, then signature lines")
    lines = []
    for line in signatures[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("a signature line starts with an em dash and a space")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        blob = _b64decode(encoded, "note signature")
        if len(blob) < 5:
            raise NoteError("a note signature is a key id and a signature")
        lines.append((name, blob))
    return text + "\n", lines


class KeyRing:
    """The verifier keys of one log, oldest first: the current key and those it replaced.

    A checkpoint is trusted when any of them signed it; `open_checkpoint` says which.
    """

    def __init__(self, verifiers: Sequence[NoteVerifier]) -> None:
        if not verifiers:
            raise NoteError("give at least one verifier key")
        names = {v.name for v in verifiers}
        if len(names) != 1:
            raise NoteError("the keys of one log share one name (rotation keeps the name)")
        self.verifiers = tuple(verifiers)
        self.name = verifiers[0].name

    @classmethod
    def of(cls, *keys: str) -> KeyRing:
        """A ring of verifier keys given as text."""
        return cls([NoteVerifier(key) for key in keys])

    def open_checkpoint(self, note: str) -> tuple[Checkpoint, NoteVerifier]:
        """The checkpoint of a note and the newest key of the ring that signed it.

        Raises:
            NoteError: The note is malformed, or no key of the ring signed it validly.
        """
        problem: NoteError | None = None
        for verifier in reversed(self.verifiers):
            if not verifier.signed(note):
                continue
            try:
                return verifier.open_checkpoint(note), verifier
            except NoteError as error:
                problem = error
        if problem is not None:
            raise problem
        signature_lines(note)  # a malformed note says so rather than "no key"
        raise NoteError(
            "the checkpoint carries no signature of a trusted key"
            f" ({', '.join(v.key_id for v in self.verifiers)})"
        )

    def position(self, verifier: NoteVerifier) -> int:
        """How many keys of the ring came before this one."""
        return [v.key_id for v in self.verifiers].index(verifier.key_id)
