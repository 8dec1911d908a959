"""A PySpark daemon for the tests that kills Python workers on demand.

Spark runs it instead of `pyspark.daemon` (`spark.python.daemon.module`). Before a forked
worker starts a task, it claims a token file from the directory named by
`CLEANROOM_TEST_SPARK_FAULTS`; a worker that gets one kills itself with SIGKILL, as the
kernel's out-of-memory killer would. With no token left, workers run as usual.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from pyspark import daemon

FAULTS = "CLEANROOM_TEST_SPARK_FAULTS"
_worker = daemon.worker


def plant(directory: Path, count: int) -> None:
    """Makes the next `count` workers that start a task die."""
    for i in range(count):
        (directory / f"kill-{i}").write_text("")


def tokens_left(directory: Path) -> int:
    return len(list(directory.glob("kill-*")))


def _claim() -> bool:
    directory = os.environ.get(FAULTS)
    if not directory:
        return False
    for token in sorted(Path(directory).glob("kill-*")):
        try:
            token.rename(token.with_name(f"claimed-{os.getpid()}-{token.name}"))
        except FileNotFoundError:  # another worker claimed it first
            continue
        return True
    return False


def _worker_that_may_die(sock: socket.socket, authenticated: bool) -> int:
    if _claim():
        os.kill(os.getpid(), signal.SIGKILL)
    return _worker(sock, authenticated)


daemon.worker = _worker_that_may_die

if __name__ == "__main__":
    daemon.manager()
