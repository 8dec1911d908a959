"""Backups of a live data directory: the database's online backup, then the files it names.

SQLite's online backup API copies the database as one consistent snapshot while the
server goes on writing (WAL). A dataset's file is written whole and renamed into place
before its catalog row is committed, and never changes after, so every file the snapshot
names exists and is complete: the copy holds exactly the datasets of the snapshot. A file
deleted between the snapshot and its copy makes the backup start over. A manifest with
every file's SHA-256 lets `restore` check the copy before it writes anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from cleanroom.errors import FailedPreconditionError
from cleanroom.storage.database import DATABASE_FILE

FORMAT = "cleanroom-backup/1"
MANIFEST = "MANIFEST.json"
DATASETS = "datasets"
ATTEMPTS = 5


@dataclass(frozen=True)
class Copied:
    """What a backup or restore wrote."""

    directory: Path
    datasets: int
    bytes: int


def backup_data_dir(data_dir: Path, out: Path) -> Copied:
    """Copies the data directory `data_dir` (live or not) into the new directory `out`.

    Raises:
        FailedPreconditionError: `data_dir` holds no database, `out` is not empty, or the
            datasets kept changing under every attempt.
    """
    source = data_dir / DATABASE_FILE
    if not source.is_file():
        raise FailedPreconditionError(
            "NO_DATABASE", f"{data_dir} holds no {DATABASE_FILE}: is it a data directory?"
        )
    _empty_directory(out)
    for _ in range(ATTEMPTS):
        copied = _attempt(data_dir, source, out)
        if copied is not None:
            return copied
    raise FailedPreconditionError(
        "BACKUP_RACED",
        f"Datasets were deleted during each of {ATTEMPTS} attempts to copy {data_dir}; try"
        " again when fewer deletions run.",
    )


def _attempt(data_dir: Path, source: Path, out: Path) -> Copied | None:
    database = out / DATABASE_FILE
    database.unlink(missing_ok=True)
    shutil.rmtree(out / DATASETS, ignore_errors=True)
    (out / DATASETS).mkdir(mode=0o700)
    _snapshot(source, database)
    with sqlite3.connect(database) as db:
        names = [str(row[0]) for row in db.execute("SELECT file_name FROM datasets")]
        (version,) = db.execute("PRAGMA user_version").fetchone()
    db.close()
    files = {DATABASE_FILE: _sha256(database)}
    for name in names:
        try:
            _copy(data_dir / DATASETS / name, out / DATASETS / name)
        except FileNotFoundError:
            return None  # deleted since the snapshot: take another one
        files[f"{DATASETS}/{name}"] = _sha256(out / DATASETS / name)
    manifest = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "schema_version": version,
        "source": str(data_dir),
        "files": files,
    }
    _write(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    _fsync(out / DATASETS)
    _fsync(out)
    size = sum((out / name).stat().st_size for name in files)
    return Copied(out, len(names), size)


def restore_data_dir(backup: Path, data_dir: Path) -> Copied:
    """Writes the backup in `backup` into `data_dir`, empty or new, after checking it whole.

    Raises:
        FailedPreconditionError: The backup is not one, a file is missing or differs from
            the manifest, or `data_dir` is not empty (a server may be using it).
    """
    try:
        manifest = json.loads((backup / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise FailedPreconditionError(
            "NOT_A_BACKUP", f"{backup} has no readable {MANIFEST}: it is not a backup."
        ) from None
    if manifest.get("format") != FORMAT:
        raise FailedPreconditionError(
            "NOT_A_BACKUP", f"{backup}/{MANIFEST} is not of the format {FORMAT}."
        )
    files: dict[str, str] = manifest["files"]
    for name, digest in files.items():
        path = backup / name
        if not path.is_file() or _sha256(path) != digest:
            raise FailedPreconditionError(
                "BACKUP_DAMAGED",
                f"{path} is missing or differs from the backup's manifest: nothing restored.",
                file=name,
            )
    _empty_directory(data_dir)
    (data_dir / DATASETS).mkdir(mode=0o700, exist_ok=True)
    for name in files:
        _copy(backup / name, data_dir / name)
    _fsync(data_dir / DATASETS)
    _fsync(data_dir)
    return Copied(data_dir, len(files) - 1, sum((data_dir / n).stat().st_size for n in files))


def _snapshot(source: Path, target: Path) -> None:
    # A normal connection: a read-only one cannot open a WAL database whose server is gone.
    live = sqlite3.connect(source, timeout=30)
    copy = sqlite3.connect(target)
    try:
        live.backup(copy)  # all pages in one step: one consistent snapshot
    finally:
        copy.close()
        live.close()
    target.chmod(0o600)
    _fsync(target)


def _empty_directory(directory: Path) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FailedPreconditionError(
            "DIRECTORY_NOT_EMPTY",
            f"{directory} exists and is not an empty directory: choose a new one.",
            directory=str(directory),
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)


def _copy(source: Path, target: Path) -> None:
    with source.open("rb") as reading, _private(target) as writing:
        shutil.copyfileobj(reading, writing, 1024 * 1024)
        writing.flush()
        os.fsync(writing.fileno())


def _write(path: Path, data: bytes) -> None:
    with _private(path) as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _private(path: Path) -> BinaryIO:
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
