"""Storage trouble (a full or read-only data directory) told apart from bugs.

A disk that fills up or turns read-only is the operator's problem to fix, not a bug: the
caller gets a clear refusal (and nothing half-written stays, since every write goes to a
scratch file or one transaction first), never INTERNAL.
"""

from __future__ import annotations

import errno
import sqlite3

from cleanroom.errors import CleanRoomError, ResourceExhaustedError, UnavailableError

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_SQLITE_FULL = ("database or disk is full", "disk i/o error", "file too large")
_SQLITE_READ_ONLY = ("readonly database", "read-only")


def storage_refusal(error: BaseException) -> CleanRoomError | None:
    """The refusal for a storage failure, or None if `error` is not one."""
    text = str(error).lower()
    full = (isinstance(error, OSError) and error.errno in _FULL) or (
        isinstance(error, sqlite3.OperationalError) and any(s in text for s in _SQLITE_FULL)
    )
    if full or "file too large" in text or "no space left" in text:
        return ResourceExhaustedError(
            "STORAGE_FULL",
            "The server's data directory is full, so nothing was stored. Try again later;"
            " the operator must free or add space.",
        )
    read_only = (isinstance(error, OSError) and error.errno in _READ_ONLY) or (
        isinstance(error, sqlite3.OperationalError) and any(s in text for s in _SQLITE_READ_ONLY)
    )
    if read_only:
        return UnavailableError(
            "STORAGE_READ_ONLY",
            "The server cannot write its data directory, so nothing was stored. Try again"
            " later; the operator must make it writable.",
        )
    return None
