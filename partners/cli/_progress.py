"""Progress of long commands: a bar on a terminal, plain log lines anywhere else.

A pipeline (Airflow, cron, CI) captures stderr into a log that shows no progress bar, so
without a terminal a line is written every `LOG_EVERY_SECONDS` and at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from partners.cli._common import errors

LOG_EVERY_SECONDS = 10.0
"""How often a progress line is written when stderr is not a terminal."""


@contextmanager
def progress_of(
    what: str, unit: str, *, total: int | None = None, quiet: bool = False
) -> Iterator[Callable[[int], None]]:
    """Report progress of `what` (for example `preparing`) counted in `unit`s.

    Yields:
        The function to call with each number of units done.
    """
    if quiet:
        yield lambda _: None
        return
    if errors.is_terminal:
        with Progress(
            TextColumn(what), BarColumn(), TextColumn(f"{{task.completed:,}} {unit}"),
            TimeElapsedColumn(), console=errors, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task(what, total=total)
            yield lambda done: bar.advance(task, done)
        return
    started = last = time.monotonic()
    count = 0

    def advance(done: int) -> None:
        nonlocal count, last
        count += done
        now = time.monotonic()
        if now - last >= LOG_EVERY_SECONDS:
            last = now
            _log(what, count, unit, total, now - started)

    yield advance
    _log(what, count, unit, total, time.monotonic() - started, done=True)


def _log(
    what: str, count: int, unit: str, total: int | None, seconds: float, *, done: bool = False
) -> None:
    of = f" of {total:,}" if total else ""
    state = "done" if done else "so far"
    errors.print(
        f"{what}: {count:,}{of} {unit} {state} ({seconds:.0f} s)", markup=False, highlight=False
    )
