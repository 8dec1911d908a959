"""The embedded SQLite database (WAL) that holds the catalog, the reports and the query log.

One connection, shared by the server's worker threads under a lock: SQLite serializes
writers anyway, and the statements here are short. Every change runs in one transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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

CREATE TABLE IF NOT EXISTS overlap_reports (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    collaboration TEXT NOT NULL,
    report TEXT NOT NULL,
    creator TEXT NOT NULL,
    create_time TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (collaboration, report)
);
CREATE INDEX IF NOT EXISTS overlap_reports_by_creator
    ON overlap_reports (collaboration, creator, sequence);

CREATE TABLE IF NOT EXISTS audit_events (
    log TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    event_time TEXT NOT NULL,
    caller TEXT NOT NULL,
    method TEXT NOT NULL,
    entry BLOB NOT NULL,
    PRIMARY KEY (log, log_index)
) WITHOUT ROWID;
"""


class Database:
    """The server's SQLite database file, opened in WAL mode with full durability."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._connection = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute("PRAGMA foreign_keys=ON")
        self._connection.executescript(SCHEMA)

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
