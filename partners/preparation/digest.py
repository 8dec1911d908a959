"""The cryptography of identifier digests (SPEC section 2).

The brands of a collaboration share a secret out of band. From it each derives one key per
identifier type, and turns every normalized identifier into an HMAC digest under that key. The
server only ever sees digests, and cannot compute them because it never sees the secret.

```
K_type = HKDF-SHA256(secret, salt=collaboration_id, info="cleanroom/v1/" + type, 32 bytes)
digest = HMAC-SHA256(K_type, SHA256(normalized value))
```

Hashing the value before the HMAC lets a partner that only holds SHA-256 hashes of normalized
identifiers (as ad platforms and UID2 exchange them) compute the same digests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives import hmac
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from partners.errors import InputError
from partners.preparation._arrow import (
    ByteMatrix,
    Mask,
    byte_lengths,
    fixed_binary,
    from_mask,
    string_data,
    string_offsets,
    to_mask,
)
from partners.preparation.files import write_new_private
from partners.preparation.normalize import ASCII_WHITESPACE, InvalidIdentifierError

SECRET_BYTES = 32
"""The size of a new collaboration secret, and the least a secret may have."""

KEY_BYTES = 32
"""The size of a derived key and of a digest."""

MALFORMED_SHA256 = "malformed_sha256"
"""The reason `decode_sha256` gives for text that is not a SHA-256 hash."""

_INFO_PREFIX = "cleanroom/v1/"
_KCV_INFO = b"cleanroom/v1/kcv"
_KCV_MESSAGE = b"cleanroom key check"
_KCV_BYTES = 8
_HEX_PATTERN = re.compile(rb"(?:[0-9a-fA-F]{2})+")
_SHA256_HEX_LENGTH = 64
_SHA256_BASE64_LENGTH = 44
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_A_DIGIT = 255


def _decoding_table(digits: bytes, *, either_case: bool) -> ByteMatrix:
    """Map each byte to its value as a digit of `digits`, or to `_NOT_A_DIGIT`."""
    table = np.full(256, _NOT_A_DIGIT, dtype=np.uint8)
    for value, digit in enumerate(digits):
        table[digit] = value
        if either_case:
            table[ord(chr(digit).upper())] = value
    return table


_HEX_TABLE = _decoding_table(b"0123456789abcdef", either_case=True)
_BASE64_TABLE = _decoding_table(_BASE64_ALPHABET, either_case=False)

DIGEST_TYPE = pa.binary(KEY_BYTES)
"""The Arrow type of a column of digests (and of decoded SHA-256 hashes)."""


def new_secret() -> bytes:
    """Return a new random collaboration secret of `SECRET_BYTES` bytes."""
    return secrets.token_bytes(SECRET_BYTES)


def write_secret(path: str | os.PathLike[str], secret: bytes) -> None:
    """Write a secret to a new file as lowercase hex and a newline, readable by the owner only.

    Args:
        path: Where to write. The file must not exist yet.
        secret: The collaboration secret, at least `SECRET_BYTES` bytes.

    Raises:
        InputError: If the file exists (SECRET_FILE_EXISTS), cannot be created
            (SECRET_FILE_UNWRITABLE), or the secret is too short (SECRET_TOO_SHORT).
    """
    _check_secret(secret)
    path = Path(path)
    write_new_private(
        path,
        secret.hex() + "\n",
        exists=lambda: InputError(
            "SECRET_FILE_EXISTS",
            f"Secret file {path} exists already; choose another path, or delete it only if no "
            "digests made with it are still needed.",
            {"path": str(path)},
        ),
        unwritable=lambda error: _unwritable(path, error),
    )


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """Read a secret written by `write_secret` (hex digits, surrounding whitespace ignored).

    Args:
        path: The secret file.

    Returns:
        The secret.

    Raises:
        InputError: If the file is missing (SECRET_FILE_NOT_FOUND) or unreadable
            (SECRET_FILE_UNREADABLE), does not hold hex digits (SECRET_NOT_HEX), or holds
            fewer than `SECRET_BYTES` bytes (SECRET_TOO_SHORT).
    """
    path = Path(path)
    metadata = {"path": str(path)}
    try:
        text = path.read_bytes().strip()
    except FileNotFoundError:
        raise InputError(
            "SECRET_FILE_NOT_FOUND",
            f"Secret file {path} does not exist; check the path, or get the collaboration's "
            "secret file from the partner who created it.",
            metadata,
        ) from None
    except OSError as error:
        raise InputError(
            "SECRET_FILE_UNREADABLE",
            f"Secret file {path} cannot be read ({error.strerror}); check its permissions.",
            metadata,
        ) from None
    if _HEX_PATTERN.fullmatch(text) is None:
        raise InputError(
            "SECRET_NOT_HEX",
            f"Secret file {path} does not hold a secret: it must contain only hex digits "
            "(an even number of them), as written by the secret generation command.",
            metadata,
        )
    secret = bytes.fromhex(text.decode("ascii"))
    _check_secret(secret, path)
    return secret


def type_key(secret: bytes, collaboration_id: str, identifier_type: str) -> bytes:
    """Derive the key of one identifier type in one collaboration.

    Args:
        secret: The collaboration secret.
        collaboration_id: The collaboration's id; keys of different collaborations differ.
        identifier_type: The identifier type, for example `email`.

    Returns:
        A `KEY_BYTES`-byte key: HKDF-SHA256 with the collaboration id as salt and
        `cleanroom/v1/<type>` as info.

    Raises:
        InputError: If the secret is too short (SECRET_TOO_SHORT).
    """
    _check_secret(secret)
    return _hkdf(secret, collaboration_id, (_INFO_PREFIX + identifier_type).encode())


def key_check_value(secret: bytes, collaboration_id: str) -> str:
    """Compute the key check value that travels with every upload.

    The server compares it with the one the collaboration expects, so a brand holding the
    wrong secret is told at once instead of seeing no matches. It reveals nothing of the
    type keys: it comes from a key derived with its own info string.

    Args:
        secret: The collaboration secret.
        collaboration_id: The collaboration's id.

    Returns:
        16 lowercase hex characters.

    Raises:
        InputError: If the secret is too short (SECRET_TOO_SHORT).
    """
    _check_secret(secret)
    mac = _hmac(_hkdf(secret, collaboration_id, _KCV_INFO))
    mac.update(_KCV_MESSAGE)
    return mac.finalize()[:_KCV_BYTES].hex()


def digest_normalized(key: bytes, values: Sequence[str]) -> list[bytes]:
    """Digest normalized identifiers: HMAC-SHA256(key, SHA256(UTF-8 of the value)).

    Args:
        key: The type key from `type_key`.
        values: Identifiers already normalized for that type.

    Returns:
        One 32-byte digest per value, in order.
    """
    return _digest_utf8(key, (value.encode() for value in values))


def digest_column(key: bytes, values: pa.Array[Any]) -> pa.FixedSizeBinaryArray:
    """Digest a column of normalized identifiers, as `digest_normalized` does.

    Args:
        key: The type key from `type_key`.
        values: Identifiers already normalized for that type (strings); nulls stay null.

    Returns:
        A `fixed_size_binary(32)` column: the digest of each value, null where it was null.
    """
    present = to_mask(pc.is_valid(values))
    encoded = cast(list[bytes], values.filter(from_mask(present)).cast(pa.binary()).to_pylist())
    return _place_digests(present, _digest_utf8(key, encoded))


def digest_sha256_column(key: bytes, hashes: pa.Array[Any]) -> pa.FixedSizeBinaryArray:
    """Digest a column of SHA-256 hashes, as `digest_sha256` does.

    Args:
        key: The type key from `type_key`.
        hashes: A `fixed_size_binary(32)` column (see `decode_sha256_column`); nulls stay null.

    Returns:
        A `fixed_size_binary(32)` column: the digest of each hash, null where it was null.
    """
    present = to_mask(pc.is_valid(hashes))
    valid_hashes = cast(list[bytes], hashes.filter(from_mask(present)).to_pylist())
    return _place_digests(present, digest_sha256(key, valid_hashes))


def _digest_utf8(key: bytes, values: Iterable[bytes]) -> list[bytes]:
    """HMAC-SHA256(key, SHA256(value)) of each UTF-8 value, in order."""
    base = _hmac(key)
    copy = base.copy
    sha256 = _SHORT_SHA256
    digests: list[bytes] = []
    append = digests.append
    # Copying a keyed HMAC skips the key setup per value; measured faster than both
    # `hmac.digest` and copies of the standard library's `hmac.new`. This loop is the cost
    # that remains per value (about 0.8 us): everything around it works on whole columns.
    for value in values:
        mac = copy()
        mac.update(sha256(value).digest())
        append(mac.finalize())
    return digests


def _short_value_sha256() -> Callable[[bytes], Any]:
    """Return the fastest SHA-256 for short values that gives the right answer.

    For values of a few dozen bytes most of the time goes to setting up a hash object, not
    to hashing. CPython's own SHA-256 (`_sha256`, `_sha2` from 3.12) sets up faster than
    OpenSSL's, which `hashlib.sha256` prefers: about 0.13 us less per value. It is used only
    if present and right on a known answer; otherwise `hashlib.sha256`.
    """
    for module_name in ("_sha2", "_sha256"):
        try:
            constructor: Callable[[bytes], Any] = importlib.import_module(module_name).sha256
        except (ImportError, AttributeError):
            continue
        if constructor(b"abc").digest() == hashlib.sha256(b"abc").digest():
            return constructor
    return hashlib.sha256


_SHORT_SHA256 = _short_value_sha256()


def _place_digests(present: Mask, digests: list[bytes]) -> pa.FixedSizeBinaryArray:
    """Build a digest column from the digests of its non-null rows, in order."""
    data = np.zeros((len(present), KEY_BYTES), dtype=np.uint8)
    if digests:
        data[present] = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, KEY_BYTES)
    return fixed_binary(data, present)


def digest_sha256(key: bytes, hashes: Sequence[bytes]) -> list[bytes]:
    """Digest identifiers given as SHA-256 hashes of their normalized form.

    The result equals `digest_normalized` of the normalized values the hashes were made from.

    Args:
        key: The type key from `type_key`.
        hashes: 32-byte SHA-256 hashes (use `decode_sha256` for hex or base64 text).

    Returns:
        One 32-byte digest per hash, in order.

    Raises:
        InvalidIdentifierError: If a hash is not 32 bytes long.
    """
    base = _hmac(key)
    digests: list[bytes] = []
    for sha256 in hashes:
        if len(sha256) != KEY_BYTES:
            raise InvalidIdentifierError(
                MALFORMED_SHA256, f"a SHA-256 hash has 32 bytes, not {len(sha256)}"
            )
        mac = base.copy()
        mac.update(sha256)
        digests.append(mac.finalize())
    return digests


def decode_sha256(text: str) -> bytes:
    """Decode a SHA-256 hash written as 64 hex digits or 44 base64 characters.

    Args:
        text: The hash as text; surrounding whitespace is ignored.

    Returns:
        The 32 bytes of the hash.

    Raises:
        InvalidIdentifierError: If the text is neither form (reason `malformed_sha256`).
    """
    text = text.strip()
    decoded = b""
    try:
        if len(text) == _SHA256_HEX_LENGTH:
            decoded = bytes.fromhex(text)
        elif len(text) == _SHA256_BASE64_LENGTH:
            decoded = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        pass
    # 44 base64 characters without padding hold 33 bytes, not a hash.
    if len(decoded) == KEY_BYTES:
        return decoded
    raise InvalidIdentifierError(
        MALFORMED_SHA256, "a SHA-256 hash is 64 hex digits or 44 base64 characters"
    )


@dataclass(frozen=True)
class DecodedHashes:
    """A column of SHA-256 hashes written as text, decoded.

    Attributes:
        hashes: A `fixed_size_binary(32)` column: each hash, null where the cell was empty or
            not a hash.
        values_read: Cells that were not empty (cells of only whitespace count as empty).
        malformed: Cells that held something other than a hash.
    """

    hashes: pa.FixedSizeBinaryArray
    values_read: int
    malformed: int


def decode_sha256_column(cells: pa.Array[Any]) -> DecodedHashes:
    """Decode a column of SHA-256 hashes written as hex or base64, as `decode_sha256` does.

    Args:
        cells: Strings: 64 hex digits in either case, or 44 base64 characters; surrounding
            whitespace is ignored.

    Returns:
        The hashes and what was found.
    """
    if cells.type != pa.string():
        cells = cells.cast(pa.string())
    count = len(cells)
    text = pc.ascii_trim(cells, characters=ASCII_WHITESPACE)
    ascii_text = to_mask(pc.string_is_ascii(cells))
    lengths = byte_lengths(text)
    data = np.zeros((count, KEY_BYTES), dtype=np.uint8)
    valid = np.zeros(count, dtype=bool)
    decoders = ((_SHA256_HEX_LENGTH, _decode_hex), (_SHA256_BASE64_LENGTH, _decode_base64))
    for length, decode in decoders:
        rows = ascii_text & (lengths == length)
        if rows.any():
            decoded, ok = decode(_fixed_width(text.filter(from_mask(rows)), length))
            indices = np.flatnonzero(rows)
            data[indices[ok]] = decoded[ok]
            valid[indices[ok]] = True
    read = ascii_text & (lengths > 0)
    # Text that is not ASCII (non-ASCII whitespace around a hash, say) takes the scalar rule.
    others = np.flatnonzero(~ascii_text & to_mask(pc.is_valid(cells)))
    for row, cell in zip(others.tolist(), cells.take(others).to_pylist(), strict=True):
        text_cell = cast(str, cell)
        read[row] = bool(text_cell.strip())
        try:
            data[row] = np.frombuffer(decode_sha256(text_cell), dtype=np.uint8)
        except InvalidIdentifierError:
            continue
        valid[row] = True
    values_read = int(read.sum())
    return DecodedHashes(fixed_binary(data, valid), values_read, values_read - int(valid.sum()))


def _fixed_width(values: pa.Array[Any], width: int) -> ByteMatrix:
    """Return strings that all have `width` bytes as a (rows, width) matrix of bytes."""
    start = int(string_offsets(values)[0])
    return string_data(values)[start : start + width * len(values)].reshape(len(values), width)


def _decode_hex(text: ByteMatrix) -> tuple[ByteMatrix, Mask]:
    """Decode rows of 64 hex digits; return the bytes and which rows were hex."""
    digits = _HEX_TABLE[text]
    ok: Mask = (digits != _NOT_A_DIGIT).all(axis=1)
    decoded: ByteMatrix = (digits[:, 0::2] << np.uint8(4)) | digits[:, 1::2]
    return decoded, ok


def _decode_base64(text: ByteMatrix) -> tuple[ByteMatrix, Mask]:
    """Decode rows of 44 base64 characters (43 and one `=`); return bytes and which were."""
    sextets = _BASE64_TABLE[text[:, :43]]
    ok: Mask = (sextets != _NOT_A_DIGIT).all(axis=1) & (text[:, 43] == ord("="))
    quads = np.concatenate([sextets, np.zeros((len(text), 1), np.uint8)], axis=1)
    quads = quads.reshape(len(text), 11, 4).astype(np.uint8)
    first = (quads[:, :, 0] << 2) | (quads[:, :, 1] >> 4)
    second = ((quads[:, :, 1] & 0x0F) << 4) | (quads[:, :, 2] >> 2)
    third = ((quads[:, :, 2] & 0x03) << 6) | quads[:, :, 3]
    decoded: ByteMatrix = np.stack([first, second, third], axis=2).reshape(len(text), 33)
    return decoded[:, :KEY_BYTES], ok


def _hkdf(secret: bytes, collaboration_id: str, info: bytes) -> bytes:
    """Derive a 32-byte key with HKDF-SHA256, salted with the collaboration id."""
    kdf = HKDF(
        algorithm=SHA256(),
        length=KEY_BYTES,
        salt=collaboration_id.encode(),
        info=info,
    )
    return kdf.derive(secret)


def _hmac(key: bytes) -> hmac.HMAC:
    """Return an HMAC-SHA256 keyed with `key`, ready for `update` or `copy`."""
    return hmac.HMAC(key, SHA256())


def _check_secret(secret: bytes, path: Path | None = None) -> None:
    """Refuse a secret shorter than `SECRET_BYTES`: it would make digests guessable."""
    if len(secret) >= SECRET_BYTES:
        return
    where = f"Secret file {path} holds" if path else "The secret has"
    raise InputError(
        "SECRET_TOO_SHORT",
        f"{where} {len(secret)} bytes; a collaboration secret needs at least {SECRET_BYTES} "
        "random bytes. Use the collaboration's secret file as it was generated.",
        {"secret_bytes": str(len(secret)), "minimum_bytes": str(SECRET_BYTES)}
        | ({"path": str(path)} if path else {}),
    )


def _unwritable(path: Path, error: OSError) -> InputError:
    """Describe a secret file that could not be written."""
    return InputError(
        "SECRET_FILE_UNWRITABLE",
        f"Secret file {path} cannot be written ({error.strerror}); check that its folder "
        "exists and is writable.",
        {"path": str(path)},
    )
