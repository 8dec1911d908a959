"""Retention: datasets older than their collaboration's retention period are deleted.

The server sweeps at start and then periodically; each deletion is an event in the
collaboration's query log, by the caller `server`, like the deletions brands ask for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from cleanroom.audit.log import AuditEvent, AuditLog
from cleanroom.config import Config
from cleanroom.privacy.coarse import size_range
from cleanroom.storage.catalog import DatasetRecord
from cleanroom.usecases.datasets import Datasets

log = logging.getLogger(__name__)

METHOD = "/cleanroom.server/ExpireDataset"
CALLER = "server"


def sweep(
    config: Config, datasets: Datasets, audit_log: AuditLog, now: datetime | None = None
) -> list[DatasetRecord]:
    """Deletes every dataset past its collaboration's retention period; returns them."""
    now = now or datetime.now(UTC)
    deleted = []
    for collaboration in config.collaborations.values():
        if audit_log.inconsistency(collaboration.id):
            continue  # nothing is deleted that its refused log could not record
        for record in datasets.expired(collaboration, now):
            datasets.remove(record)
            audit_log.append(
                AuditEvent(
                    method=METHOD,
                    caller=CALLER,
                    log=collaboration.id,
                    resources=[str(record.name)],
                    request_summary={
                        "retention_days": collaboration.retention_days,
                        "create_time": record.create_time.isoformat(),
                        "deleted_rows": size_range(record.row_count),
                    },
                )
            )
            log.info("retention: deleted %s (created %s)", record.name, record.create_time)
            deleted.append(record)
    return deleted


class RetentionSweeper:
    """Runs `sweep` at start and then every `interval` seconds, until stopped."""

    def __init__(self, run: Callable[[], object], interval: float) -> None:
        self.run = run
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> None:
        """Starts sweeping."""
        self._thread.start()

    def stop(self) -> None:
        """Stops sweeping and waits for a sweep under way."""
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            try:
                self.run()
            except Exception:  # a failed sweep is retried at the next interval
                log.exception("retention sweep failed")
            if self._stop.wait(self.interval):
                return
