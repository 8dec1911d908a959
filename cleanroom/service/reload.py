"""Reloading a running server's configuration and TLS files (SIGHUP).

A reload reads and checks the whole file and the files it names first. Only if all is
well does it swap in the new configuration, an immutable snapshot that every new call
reads (calls under way keep the collaboration they started with) and the new TLS files
(from the next handshake). Otherwise it logs every problem and changes nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cleanroom.config import Config, load_config
from cleanroom.errors import ConfigError, ConfigProblemsError
from cleanroom.ops.checks import check_files
from cleanroom.ops.metrics import CallMetrics
from cleanroom.service.tls_files import ServedTls
from cleanroom.usecases.clean_room import CleanRoom

log = logging.getLogger(__name__)

# Settings a running server cannot change: they are bound to sockets, threads or files.
RESTART_ONLY = (
    "listen",
    "ops_listen",
    "data_dir",
    "audit_signing_key",
    "max_workers",
    "max_upload_message_bytes",
    "upload_idle_timeout_seconds",
    "retention_sweep_seconds",
    "max_calls_per_partner",
    "max_uploads_per_partner",
    "max_upload_seconds",
    "min_upload_bytes_per_second",
    "engine",  # the Spark session and the copies' location live as long as the server
)


class Reloader:
    """Re-reads the configuration file of a running server and applies it if valid."""

    def __init__(
        self, path: Path, clean_room: CleanRoom, tls: ServedTls, metrics: CallMetrics
    ) -> None:
        self.path = path
        self.clean_room = clean_room
        self.tls = tls
        self.metrics = metrics

    def reload(self) -> bool:
        """Applies the file if it is valid; returns whether it did."""
        problems: list[ConfigError] = []
        config: Config | None = None
        try:
            config = load_config(self.path)
        except ConfigProblemsError as error:
            problems = error.problems
        except ConfigError as error:
            problems = [error]
        files = check_files(config) if config is not None else None
        if files is not None:
            problems += files.problems
        if problems or config is None or files is None or files.tls is None:
            for problem in problems:
                log.error("reload rejected", extra={"key": problem.key, "problem": problem.message})
            log.error(
                "configuration not reloaded: the running one stays",
                extra={"path": str(self.path), "problems": len(problems)},
            )
            self.metrics.reloads.labels("rejected").inc()
            return False
        for warning in files.warnings:
            log.warning("certificate expires soon", extra={"problem": warning})
        running = self.clean_room.config.server
        for name in RESTART_ONLY:
            if getattr(running, name) != getattr(config.server, name):
                log.warning(
                    "setting changed; it applies at the next restart",
                    extra={"key": f"server.{name}"},
                )
        self.clean_room.reconfigure(config)
        self.tls.replace(files.tls)
        self.metrics.reloads.labels("applied").inc()
        log.info(
            "configuration reloaded",
            extra={
                "path": str(self.path),
                "partners": len(config.partners),
                "collaborations": len(config.collaborations),
            },
        )
        return True
