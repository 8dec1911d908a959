"""The clean room as a whole: its storage opened, its domain services wired together."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cleanroom.audit.log import AuditLog
from cleanroom.config import Config, EngineConfig
from cleanroom.errors import ConfigError, FailedPreconditionError
from cleanroom.matching.engine import DatasetTable, Matcher
from cleanroom.matching.memory import ArrowMatcher
from cleanroom.proofs.signed_note import NoteError, NoteSigner, NoteVerifier
from cleanroom.storage.catalog import Catalog
from cleanroom.storage.database import Database
from cleanroom.storage.dataset_files import DatasetFiles
from cleanroom.storage.range_copies import RangeCopies
from cleanroom.usecases.access import AccessPolicy
from cleanroom.usecases.datasets import Datasets
from cleanroom.usecases.masking import Masking
from cleanroom.usecases.reports import Reports

log = logging.getLogger(__name__)


class CleanRoom:
    """Everything a server serves, over one data directory that no other server may open."""

    def __init__(self, config: Config, *, matcher: Matcher | None = None) -> None:
        data_dir = config.server.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise ConfigError(
                "server.data_dir", f"cannot use {data_dir} as a directory: {error.strerror}"
            ) from None
        self._lock_fd = _lock(data_dir)
        self.config = config
        self.database = Database(data_dir / "cleanroom.sqlite3")
        self.catalog = Catalog(self.database)
        engine = config.server.engine
        self._closers: list[Callable[[], None]] = []
        copies = RangeCopies(engine.location, engine.ranges) if engine.kind == "spark" else None
        self.files = DatasetFiles(data_dir, copies)
        removed = self.files.remove_orphans(self.catalog.dataset_file_names())
        if removed:
            log.warning("removed %d files left by interrupted uploads: %s", len(removed), removed)
        if copies is not None:
            try:
                self._copy_missing(copies)
                matcher = matcher or self._spark_matcher(engine)
            except BaseException:  # Java missing, master unreachable: release the directory
                self.database.close()
                os.close(self._lock_fd)
                raise
        self.access = AccessPolicy(config)
        self.audit_log = open_audit_log(self.database, config)
        self.datasets = Datasets(self.access, self.catalog, self.files)
        self.masking = Masking(self.access, self.catalog, self.files)
        self._settling: threading.Thread | None = None
        self._settle_later()
        self.reports = Reports(self.access, self.catalog, self.files, matcher or ArrowMatcher())

    def reconfigure(self, config: Config) -> None:
        """Serves `config` from now on (a reload): new calls read the new snapshot.

        Only partners, collaborations and their policies change here; settings bound to
        the data directory, sockets or threads keep their running values until a restart.
        Each call reads the configuration through `access`, and replacing one reference
        is atomic, so a call sees the old snapshot or the new one, never a mixture.
        """
        config = replace(config, server=replace(self.config.server, tls=config.server.tls))
        self.config = config
        self.access.config = config
        self._settle_later()  # an uploader who left may leave datasets only to lay out

    def _settle_later(self) -> None:
        """Finishes, on a thread of its own, the datasets whose masking is complete."""
        self.wait_settled(None)

        def settle() -> None:
            try:
                finished = self.masking.settle()
            except Exception:  # retried at the next start or reload
                log.exception("could not finish the masking of datasets")
                return
            for name in finished:
                log.info("masking complete: %s is matchable", name)

        self._settling = threading.Thread(target=settle, name="masking-settle", daemon=True)
        self._settling.start()

    def wait_settled(self, timeout: float | None = 60.0) -> bool:
        """Waits for `settle` under way, if any; False if it still runs after `timeout`."""
        thread = self._settling
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def _copy_missing(self, copies: RangeCopies) -> None:
        """Writes the range copies that datasets committed before the Spark engine lack."""
        for collaboration in self.config.collaborations.values():
            for record in self.catalog.datasets(
                collaboration.id, owner=None, after="", limit=1 << 30
            ):
                being_masked = record.masking is not None and not record.masking.sorted
                if not being_masked and not copies.has(record.file_name):
                    table = self.files.open(record.file_name)
                    copies.write(
                        DatasetTable(
                            record.name,
                            table,
                            record.identifier_types,
                            record.segment_columns,
                            record.file_name,
                        )
                    )
                    log.info("wrote the range copy of %s", record.name)

    def _spark_matcher(self, engine: EngineConfig) -> Matcher:
        # Imported here: pyspark is an optional extra, loaded only with kind = "spark".
        from cleanroom.matching.spark import SparkMatcher, start_session  # noqa: PLC0415

        session, owned = start_session(
            engine.master, engine.settings, probe_seconds=engine.probe_seconds
        )
        spark = SparkMatcher(
            session, engine.location, owns_session=owned, driver_rows=engine.driver_rows
        )
        self._closers.append(spark.close)
        log.info("matching on Spark %s, copies at %s", engine.master, engine.location)
        return spark

    def close(self) -> None:
        """Closes the database, the matching engine's session, and releases the data directory."""
        self.wait_settled(60.0)
        for closer in self._closers:
            closer()
        self.database.close()
        os.close(self._lock_fd)


def open_audit_log(database: Database, config: Config) -> AuditLog:
    """The query logs, checked at once against their own signed checkpoints.

    The retired verifier keys of the configuration keep the old checkpoints verifiable;
    they must carry the current key's name, since the logs' origins are named by it.
    """
    signer = load_signer(config.server.audit_signing_key)
    previous = [NoteVerifier(key) for key in config.server.audit_previous_verifier_keys]
    for verifier in previous:
        if verifier.name != signer.name:
            raise ConfigError(
                "server.audit.previous_verifier_keys",
                f"key {verifier.key_id} is named {verifier.name!r}, the signing key"
                f" {signer.name!r}: a rotated key keeps its name (`cleanroom audit rotate-key`)",
            )
    return AuditLog(database, signer, previous)


def load_signer(path: Path) -> NoteSigner:
    """The key that signs the query logs' checkpoints, from its file."""
    key = "server.audit.signing_key"
    try:
        return NoteSigner.from_key(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(key, f"cannot read {path}: {error.strerror}") from None
    except (NoteError, UnicodeDecodeError) as error:
        raise ConfigError(
            key, f"{path} is not a signer key ({error}); make one with `cleanroom audit keygen`"
        ) from None


def _lock(data_dir: Path) -> int:
    """Holds the data directory's `LOCK` file for as long as the server runs."""
    fd = os.open(data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FailedPreconditionError(
            "DATA_DIR_IN_USE",
            f"Another server is using the data directory {data_dir}: stop it first, or give"
            " this one another server.data_dir.",
            data_dir=str(data_dir),
        ) from None
    return fd
