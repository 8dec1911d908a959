"""Witness cosignatures of checkpoints: the Ed25519 `cosignature/v1` of C2SP tlog-cosignature.

A witness that has checked a checkpoint against the last one it cosigned (RFC 9162
consistency) signs the line `cosignature/v1`, the line `time {t}`, then the checkpoint
body. The signature line reads `— {witness name} base64(key id || u64 timestamp ||
signature)`, with the key id `SHA-256(name || newline || 0x04 || public key)[:4]`. It is
one more line of the checkpoint's signed note, so that the note with cosignatures is
still a C2SP note.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cleanroom.proofs.signed_note import (
    SIGNATURE_PREFIX,
    NoteError,
    _b64decode,
    _check_name,
    _key_id,
    signature_lines,
)

COSIGNATURE_V1 = b"\x04"
_HEADER = "cosignature/v1\n"
_MAX_TIMESTAMP = 2**63 - 1


def signed_message(body: str, timestamp: int) -> bytes:
    """The bytes a `cosignature/v1` signs: header, time line, then the checkpoint body."""
    return f"{_HEADER}time {timestamp}\n{body}".encode()


class WitnessSigner:
    """A witness's Ed25519 key, which cosigns checkpoints it has checked."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = _check_name(name)
        self._private_key = private_key
        self._public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._key_id = _key_id(name, self._public, COSIGNATURE_V1)

    @classmethod
    def generate(cls, name: str) -> WitnessSigner:
        """A witness with a new random key."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_key(cls, text: str) -> WitnessSigner:
        """Reads a witness key: `PRIVATE+KEY+{name}+{keyid hex}+{base64(0x04 || seed)}`."""
        parts = text.strip().split("+", 4)  # base64 may hold "+" too
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a witness key reads PRIVATE+KEY+name+keyid+base64key")
        raw = _b64decode(parts[4], "witness key")
        if len(raw) != 33 or raw[:1] != COSIGNATURE_V1:
            raise NoteError("the witness key is not an Ed25519 cosignature/v1 key")
        signer = cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer._key_id.hex() != parts[3]:
            raise NoteError("the witness key's id does not match its key")
        return signer

    def key_text(self) -> str:
        """The witness key in the form `from_key` reads. Keep it secret."""
        seed = self._private_key.private_bytes_raw()
        encoded = base64.b64encode(COSIGNATURE_V1 + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self._key_id.hex()}+{encoded}"

    @property
    def verifier_key(self) -> str:
        """The public key that the operator and auditors name: `{name}+{keyid}+{base64}`."""
        encoded = base64.b64encode(COSIGNATURE_V1 + self._public).decode()
        return f"{self.name}+{self._key_id.hex()}+{encoded}"

    def cosign(self, body: str, timestamp: int) -> str:
        """The cosignature line of a checkpoint body, at a POSIX time."""
        if not 0 <= timestamp <= _MAX_TIMESTAMP:
            raise NoteError(f"cosignature time {timestamp} is out of range")
        signature = self._private_key.sign(signed_message(body, timestamp))
        blob = self._key_id + struct.pack(">Q", timestamp) + signature
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(blob).decode()}"


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: which witness, and when it signed."""

    witness: str
    key_id: str
    timestamp: int


class WitnessVerifier:
    """Checks one witness's cosignatures, by its public key."""

    def __init__(self, verifier_key: str) -> None:
        parts = verifier_key.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("a witness key reads name+keyid+base64key")
        name, key_id, encoded = parts
        raw = _b64decode(encoded, "witness key")
        if len(raw) != 33 or raw[:1] != COSIGNATURE_V1:
            raise NoteError("the witness key is not an Ed25519 cosignature/v1 key")
        self.name = _check_name(name)
        self._key_id = _key_id(name, raw[1:], COSIGNATURE_V1)
        if self._key_id.hex() != key_id:
            raise NoteError("the witness key's id does not match its key")
        self._public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
        self.verifier_key = verifier_key.strip()

    @property
    def key_id(self) -> str:
        """The witness key's id, in hex."""
        return self._key_id.hex()

    def check_line(self, body: str, line: str) -> Cosignature | None:
        """The cosignature a signature line holds, if it is this witness's and valid.

        Raises:
            NoteError: The line is this witness's, but malformed or its signature is wrong.
        """
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("a signature line starts with an em dash and a space")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        blob = _b64decode(encoded, "cosignature")
        return self._check(body, name, blob)

    def _check(self, body: str, name: str, blob: bytes) -> Cosignature | None:
        if name != self.name or blob[:4] != self._key_id:
            return None
        if len(blob) != 4 + 8 + 64:
            raise NoteError(f"the cosignature of {self.name!r} is not 76 bytes")
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        if timestamp > _MAX_TIMESTAMP:
            raise NoteError(f"the cosignature of {self.name!r} has an impossible time")
        try:
            self._public_key.verify(blob[12:], signed_message(body, timestamp))
        except InvalidSignature:
            raise NoteError(f"the cosignature of {self.name!r} does not verify") from None
        return Cosignature(self.name, self.key_id, timestamp)

    def find(self, note: str) -> Cosignature | None:
        """This witness's valid cosignature in a signed note, or None.

        Raises:
            NoteError: The note is malformed, or carries a bad cosignature of this witness.
        """
        body, lines = signature_lines(note)
        for name, blob in lines:
            found = self._check(body, name, blob)
            if found:
                return found
        return None
