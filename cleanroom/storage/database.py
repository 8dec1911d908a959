"""The embedded SQLite database (WAL) that holds the catalog, the reports and the query log.

One connection, shared by the server's worker threads under a lock: SQLite serializes
writers anyway, and the statements here are short. Every change runs in one transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cleanroom.errors import FailedPreconditionError

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    collaboration TEXT NOT NULL,
    dataset TEXT NOT NULL,
    owner TEXT NOT NULL,
    identifier_types TEXT NOT NULL,
    segment_columns TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    key_check_value TEXT NOT NULL,
    identifier_stats TEXT NOT NULL,
    file_name TEXT NOT NULL UNIQUE,
    create_time TEXT NOT NULL,
    PRIMARY KEY (collaboration, dataset)
) WITHOUT ROWID;

-- A double-blind dataset's masking (SPEC section 8): who has masked it, and how its file is
-- blinded. Shared-secret datasets have no row here.
CREATE TABLE IF NOT EXISTS dataset_masking (
    collaboration TEXT NOT NULL,
    dataset TEXT NOT NULL,
    mask_set TEXT NOT NULL,
    sorted INTEGER NOT NULL,
    factor BLOB,
    prepared_for TEXT,
    served INTEGER NOT NULL,
    change_time TEXT NOT NULL,
    PRIMARY KEY (collaboration, dataset),
    FOREIGN KEY (collaboration, dataset) REFERENCES datasets ON DELETE CASCADE
) WITHOUT ROWID;

-- The newest attempt at each masking hop: its blinding and tag key, and the file it blinded.
CREATE TABLE IF NOT EXISTS masking_attempts (
    collaboration TEXT NOT NULL,
    dataset TEXT NOT NULL,
    partner TEXT NOT NULL,
    attempt TEXT NOT NULL,
    blinding BLOB NOT NULL,
    tag_key BLOB NOT NULL,
    file_name TEXT NOT NULL,
    start_time TEXT NOT NULL,
    PRIMARY KEY (collaboration, dataset, partner),
    FOREIGN KEY (collaboration, dataset) REFERENCES datasets ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS overlap_reports (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    collaboration TEXT NOT NULL,
    report TEXT NOT NULL,
    creator TEXT NOT NULL,
    create_time TEXT NOT NULL,
    body TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    UNIQUE (collaboration, report)
);
CREATE INDEX IF NOT EXISTS overlap_reports_by_creator
    ON overlap_reports (collaboration, creator, sequence);
CREATE INDEX IF NOT EXISTS overlap_reports_by_question
    ON overlap_reports (collaboration, creator, fingerprint);

CREATE TABLE IF NOT EXISTS privacy_budgets (
    collaboration TEXT PRIMARY KEY,
    spent_micro INTEGER NOT NULL,
    reports INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS member_budgets (
    collaboration TEXT NOT NULL,
    member TEXT NOT NULL,
    spent_micro INTEGER NOT NULL,
    PRIMARY KEY (collaboration, member)
) WITHOUT ROWID;

-- One row per exact report over a version of another brand's dataset. Never deleted,
-- not with the dataset either: the quota holds across deletions and re-uploads.
CREATE TABLE IF NOT EXISTS exact_releases (
    collaboration TEXT NOT NULL,
    dataset TEXT NOT NULL,
    checksum TEXT NOT NULL,
    creator TEXT NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (collaboration, dataset, checksum, creator, report)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit_events (
    log TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    event_time TEXT NOT NULL,
    caller TEXT NOT NULL,
    method TEXT NOT NULL,
    entry BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    PRIMARY KEY (log, log_index)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit_logs (
    log TEXT PRIMARY KEY,
    tree_size INTEGER NOT NULL,
    frontier BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    log TEXT NOT NULL,
    tree_size INTEGER NOT NULL,
    signed_note TEXT NOT NULL,
    PRIMARY KEY (log, tree_size)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit_cosignatures (
    log TEXT NOT NULL,
    tree_size INTEGER NOT NULL,
    witness_key_id TEXT NOT NULL,
    signature_line TEXT NOT NULL,
    PRIMARY KEY (log, tree_size, witness_key_id)
) WITHOUT ROWID;
"""
SCHEMA_VERSION = 4
# Versions this server upgrades in place: each later one only adds tables (4: masking).
UPGRADABLE_VERSIONS = (3,)
DATABASE_FILE = "cleanroom.sqlite3"
"""The database's file name in the data directory."""


class Database:
    """The server's SQLite database file, opened in WAL mode with full durability."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        if read_only:
            self._connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created owner-only before SQLite does: its -wal and -shm files take this mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._connection = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute("PRAGMA foreign_keys=ON")
        (version,) = self._connection.execute("PRAGMA user_version").fetchone()
        if version not in (0, SCHEMA_VERSION, *UPGRADABLE_VERSIONS):
            raise FailedPreconditionError(
                "UNSUPPORTED_DATA_DIR",
                f"{path} has schema version {version}; this server reads version"
                f" {SCHEMA_VERSION}. Use a data directory made by this version.",
                path=str(path),
            )
        self._connection.executescript(SCHEMA)
        self._connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Runs the block in one write transaction, rolled back if the block raises."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Gives the connection for reads, one thread at a time."""
        with self._lock:
            yield self._connection

    def close(self) -> None:
        """Closes the connection; the database is consistent on disk after every commit."""
        with self._lock:
            self._connection.close()
