"""A data directory of the schema before double-blind matching opens, upgraded in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cleanroom.errors import FailedPreconditionError
from cleanroom.storage.database import SCHEMA, SCHEMA_VERSION, Database

NEW_TABLES = ("dataset_masking", "masking_attempts")


def _old_database(path: Path, version: int) -> None:
    """A database as a server of `version` left it: every table but the masking ones."""
    script = SCHEMA
    for table in NEW_TABLES:
        start = script.index(f"CREATE TABLE IF NOT EXISTS {table}")
        script = script[:start] + script[script.index(";", start) + 1 :]
    with sqlite3.connect(path) as db:
        db.executescript(script)
        db.execute(
            "INSERT INTO datasets VALUES"
            " ('spring', 'acme-crm', 'acme', '[]', '[]', 1, 'c', 'k', '[]', 'f.arrow', 't')"
        )
        db.execute(f"PRAGMA user_version={version}")
    db.close()


def test_version_3_is_upgraded_and_keeps_its_datasets(tmp_path: Path) -> None:
    path = tmp_path / "cleanroom.sqlite3"
    _old_database(path, 3)
    database = Database(path)
    with database.reading() as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        (datasets,) = db.execute("SELECT COUNT(*) FROM datasets").fetchone()
    database.close()
    assert version == SCHEMA_VERSION == 4
    assert set(NEW_TABLES) <= tables
    assert datasets == 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cleanroom.sqlite3"
    _old_database(path, SCHEMA_VERSION + 1)
    with pytest.raises(FailedPreconditionError) as refused:
        Database(path)
    assert refused.value.reason == "UNSUPPORTED_DATA_DIR"
