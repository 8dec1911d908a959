"""A PySpark daemon for the tests that kills Python workers on demand.

Spark runs it instead of `pyspark.daemon` (`spark.python.daemon.module`). When a task reaches
a worker, the worker claims a token file from the directory named by
`CLEANROOM_TEST_SPARK_FAULTS`; a worker that gets a "kill" token kills itself with
SIGKILL, as the kernel's out-of-memory killer would, and one that gets a "hang" token
never finishes its task. With no token left, workers run as usual.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pyspark import daemon

FAULTS = "CLEANROOM_TEST_SPARK_FAULTS"
_worker = daemon.worker


def plant(directory: Path, count: int, fault: str = "kill") -> None:
    """Makes the next `count` tasks die ("kill") or never finish ("hang")."""
    for i in range(count):
        (directory / f"{fault}-{i}").write_text("")


def tokens_left(directory: Path) -> int:
    """Tokens no task has claimed yet."""
    return len([p for p in directory.iterdir() if not p.name.startswith("claimed-")])


def clear(directory: Path) -> None:
    """Removes every token, claimed or not."""
    for path in directory.iterdir():
        path.unlink()


def _claim() -> str | None:
    directory = os.environ.get(FAULTS)
    if not directory:
        return None
    for token in sorted(Path(directory).iterdir()):
        if token.name.startswith("claimed-"):
            continue
        try:
            token.rename(token.with_name(f"claimed-{os.getpid()}-{token.name}"))
        except FileNotFoundError:  # another worker claimed it first
            continue
        return token.name.split("-")[0]
    return None


def _worker_that_may_die(sock: socket.socket, authenticated: bool) -> int:
    # pyspark.worker is imported after the fork, as the daemon itself does (it starts
    # threads); `daemon.worker` looks its `main` up at every task.
    from pyspark import worker

    if not getattr(worker.main, "may_die", False):
        worker.main = _dying(worker.main)
    return _worker(sock, authenticated)


def _dying(main: Callable[[BinaryIO, BinaryIO], None]) -> Callable[[BinaryIO, BinaryIO], None]:
    def main_that_may_die(infile: BinaryIO, outfile: BinaryIO) -> None:
        infile.peek(1)  # type: ignore[attr-defined]  # a task has come: it dies with us
        fault = _claim()
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "hang":  # a task stuck for good: only Spark's cancellation ends it
            signal.pause()
        main(infile, outfile)

    main_that_may_die.may_die = True  # type: ignore[attr-defined]
    return main_that_may_die


daemon.worker = _worker_that_may_die

if __name__ == "__main__":
    daemon.manager()
