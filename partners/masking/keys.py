"""Blind keys: the scalar `k_b` with which a brand masks its identifiers in one collaboration.

A blind key is made and kept on the brand's machine, like the collaboration secret, and
never leaves it. Its file holds two lines: a header naming the format and the collaboration
the key is for, then the scalar as 64 lowercase hex digits:

```
cleanroom-blind-key/v1 spring-launch
<64 hex digits>
```

so that a key of another collaboration is refused rather than silently masking with it
(a brand that masked with a wrong key matches nothing, and learns it only from a report).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cleanroom.group.ristretto255 import SCALAR_BYTES, new_scalar
from partners.errors import InputError

BLIND_KEY_FORMAT = "cleanroom-blind-key/v1"
"""The first word of a blind key file."""

# The order of the ristretto255 group: a key is a canonical scalar, below it and not zero.
GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
_COLLABORATION_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
_HEX_KEY = re.compile(r"[0-9a-f]{64}")


def new_blind_key() -> bytes:
    """A new random blind key: a uniformly random non-zero scalar of ristretto255."""
    return new_scalar()


def write_blind_key(path: str | os.PathLike[str], key: bytes, *, collaboration: str) -> None:
    """Write a blind key to a new file, readable by the owner only.

    Args:
        path: Where to write. The file must not exist yet.
        key: The scalar, as `new_blind_key` makes it.
        collaboration: The id of the collaboration the key is for, written in the header.

    Raises:
        InputError: If the file exists (BLIND_KEY_FILE_EXISTS) or cannot be created
            (BLIND_KEY_FILE_UNWRITABLE), or the key or the collaboration id is not one
            (INVALID_BLIND_KEY, INVALID_COLLABORATION_ID).
    """
    path = Path(path)
    if not _is_scalar(key):
        raise InputError(
            "INVALID_BLIND_KEY",
            "A blind key is a non-zero ristretto255 scalar of 32 bytes, as `new_blind_key`"
            " makes it; this one is not, and was not written.",
            {"path": str(path)},
        )
    if _COLLABORATION_ID.fullmatch(collaboration) is None:
        raise InputError(
            "INVALID_COLLABORATION_ID",
            f"{collaboration!r} is not a collaboration id: 1 to 63 lowercase letters, digits"
            " and hyphens, starting with a letter.",
            {"collaboration": collaboration},
        )
    try:
        # O_EXCL: never overwrite a key, which would orphan every dataset masked with it.
        # O_NOFOLLOW and mode 0600 at creation: the key is never readable by others.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise InputError(
            "BLIND_KEY_FILE_EXISTS",
            f"Blind key file {path} exists already; choose another path. Delete it only if no"
            " dataset of yours masked with it is still needed: the collaboration's datasets"
            " can be matched only while every uploader keeps its key.",
            {"path": str(path)},
        ) from None
    except OSError as error:
        raise _unwritable(path, error) from None
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(f"{BLIND_KEY_FORMAT} {collaboration}\n{key.hex()}\n")
    except OSError as error:
        path.unlink(missing_ok=True)
        raise _unwritable(path, error) from None


def read_blind_key(path: str | os.PathLike[str], *, collaboration: str | None = None) -> bytes:
    """Read a blind key written by `write_blind_key`.

    Args:
        path: The blind key file.
        collaboration: The collaboration the key is to be used in; a key written for
            another one is refused. None reads the key whatever its collaboration.

    Returns:
        The scalar.

    Raises:
        InputError: If the file is missing (BLIND_KEY_FILE_NOT_FOUND) or unreadable
            (BLIND_KEY_FILE_UNREADABLE), does not hold a blind key (INVALID_BLIND_KEY), or
            holds one of another collaboration (BLIND_KEY_OF_ANOTHER_COLLABORATION).
    """
    path = Path(path)
    written_for, key = _parse(path)
    if collaboration is not None and written_for != collaboration:
        raise InputError(
            "BLIND_KEY_OF_ANOTHER_COLLABORATION",
            f"Blind key file {path} is the key of collaboration {written_for!r}, not of"
            f" {collaboration!r}: pass the key made for {collaboration!r} (each collaboration"
            " has its own).",
            {"path": str(path), "key_collaboration": written_for, "collaboration": collaboration},
        )
    return key


def blind_key_collaboration(path: str | os.PathLike[str]) -> str:
    """The id of the collaboration a blind key file was written for.

    Raises:
        InputError: As `read_blind_key`.
    """
    return _parse(Path(path))[0]


def _parse(path: Path) -> tuple[str, bytes]:
    """The collaboration and the key of a blind key file."""
    metadata = {"path": str(path)}
    try:
        text = path.read_bytes().decode("ascii")
    except FileNotFoundError:
        raise InputError(
            "BLIND_KEY_FILE_NOT_FOUND",
            f"Blind key file {path} does not exist; check the path (--blind-key,"
            " CLEANROOM_BLIND_KEY), or make your brand's key once with `cleanroom-partner"
            " blind-key`.",
            metadata,
        ) from None
    except OSError as error:
        raise InputError(
            "BLIND_KEY_FILE_UNREADABLE",
            f"Blind key file {path} cannot be read ({error.strerror}); check its permissions.",
            metadata,
        ) from None
    except UnicodeDecodeError:
        raise _not_a_key(path) from None
    words = text.split()
    if len(words) != 3 or words[0] != BLIND_KEY_FORMAT or _HEX_KEY.fullmatch(words[2]) is None:
        raise _not_a_key(path)
    key = bytes.fromhex(words[2])
    if not _is_scalar(key) or _COLLABORATION_ID.fullmatch(words[1]) is None:
        raise _not_a_key(path)
    return words[1], key


def _is_scalar(key: bytes) -> bool:
    """Whether `key` is a canonical non-zero scalar."""
    return len(key) == SCALAR_BYTES and 0 < int.from_bytes(key, "little") < GROUP_ORDER


def _not_a_key(path: Path) -> InputError:
    return InputError(
        "INVALID_BLIND_KEY",
        f"Blind key file {path} does not hold a blind key: it must hold the line"
        f" '{BLIND_KEY_FORMAT} COLLABORATION' and a non-zero ristretto255 scalar as 64"
        " lowercase hex digits, as `cleanroom-partner blind-key` writes them.",
        {"path": str(path)},
    )


def _unwritable(path: Path, error: OSError) -> InputError:
    return InputError(
        "BLIND_KEY_FILE_UNWRITABLE",
        f"Blind key file {path} cannot be written ({error.strerror}); check that its folder"
        " exists and is writable.",
        {"path": str(path)},
    )
