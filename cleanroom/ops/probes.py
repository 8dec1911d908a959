"""Liveness and readiness of a running server, as `/healthz` and `/readyz` tell them.

Live: the process answers. Ready: it can serve calls now: its database answers, its data
directory is writable, its log signing key is readable and the one in use, and the
certificates it serves (and the client CA) are valid.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

from cleanroom.errors import CleanRoomError
from cleanroom.ops.checks import certificate_problems
from cleanroom.tls.files import TlsMaterial
from cleanroom.usecases.clean_room import CleanRoom, load_signer

OK = "ok"


def readiness(
    clean_room: CleanRoom, certificates: Callable[[], TlsMaterial], now: datetime | None = None
) -> dict[str, str]:
    """Each readiness check and its result: `ok`, or what is wrong (for the operator)."""
    return {
        "database": _database(clean_room),
        "data_dir": _data_dir(clean_room),
        "signing_key": _signing_key(clean_room),
        "certificates": _certificates(certificates(), now or datetime.now(UTC)),
    }


def _database(clean_room: CleanRoom) -> str:
    try:
        with clean_room.database.reading() as db:
            db.execute("SELECT count(*) FROM audit_logs").fetchone()
    except sqlite3.Error as error:
        return f"database does not answer: {error}"
    return OK


def _data_dir(clean_room: CleanRoom) -> str:
    data_dir = clean_room.config.server.data_dir
    for directory in (data_dir, clean_room.files.datasets_dir, clean_room.files.tmp_dir):
        if not directory.is_dir():
            return f"{directory} is missing"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{directory} is not writable"
    stats = os.statvfs(data_dir)
    if stats.f_bavail * stats.f_frsize < 1024 * 1024:
        return f"{data_dir} has less than 1 MiB free"
    return OK


def _signing_key(clean_room: CleanRoom) -> str:
    try:
        on_disk = load_signer(clean_room.config.server.audit_signing_key)
    except CleanRoomError as error:
        return error.message
    if on_disk.verifier_key != clean_room.audit_log.signer.verifier_key:
        return "server.audit.signing_key holds another key than the one in use: restart to use it"
    return OK


def _certificates(material: TlsMaterial, now: datetime) -> str:
    problems, _ = certificate_problems(material, now)
    return "; ".join(p.message for p in problems) or OK
