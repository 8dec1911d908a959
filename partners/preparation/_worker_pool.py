"""Processing a stream of batches in order, in worker processes on every core.

Normalizing and digesting hold the GIL, so more cores mean more processes. The standard
pools do not fit a library: `spawn` and `forkserver` run the caller's main script again in
every worker (a pipeline script without an `if __name__ == "__main__"` guard would start
over), and `fork` copies a process whose Arrow threads may hold locks. So each worker is a
fresh Python process that reads pickled tasks from its standard input and writes pickled
results to its standard output, and a thread per worker feeds it.

Results come back in the order of the batches, with a bounded number in flight, so memory
stays bounded. A stream of a single batch is processed in the calling process: starting a
worker would take longer than the work.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
Context = TypeVar("Context")

# Batches in flight per worker: one being processed, one waiting, so that it never idles.
_IN_FLIGHT_PER_WORKER = 2
_STOP = object()
# The packages above this module import nothing heavy (their exports are lazy), so that a
# worker starts with only what it runs.
_BOOTSTRAP = "from partners.preparation._worker_pool import serve; serve()"


class WorkerError(RuntimeError):
    """A worker process failed or exited unexpectedly: a bug or a killed process."""


def default_workers() -> int:
    """Return the number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OrderedPool(Generic[Context, Item, Result]):
    """Applies `function(context, item)` to a stream of items, in order, on several cores.

    Use it as a context manager: leaving it stops the workers, also on error or interrupt.

    Args:
        function: A module-level function (workers import it by name).
        context: Its first argument, the same for every item: sent once to each worker.
        workers: Worker processes at most; 1 processes every item in the calling process.
    """

    def __init__(
        self, function: Callable[[Context, Item], Result], context: Context, workers: int
    ) -> None:
        self._function = function
        self._context = context
        self._workers = max(1, workers)
        self._started: list[_Worker] = []

    def __enter__(self) -> OrderedPool[Context, Item, Result]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        failed = exc_info[0] is not None
        workers, self._started = self._started, []
        for worker in workers:
            worker.stop(kill=failed)

    def start(self) -> None:
        """Start the workers now rather than at the second item, when many items will come.

        Workers then start up while the caller still reads its first items.
        """
        if self._workers > 1 and not self._started:
            self._started = [_Worker(self._function, self._context) for _ in range(self._workers)]

    def map(self, items: Iterator[Item]) -> Iterator[tuple[Item, Result]]:
        """Yield each item with its result, in the order of `items`."""
        if self._started:
            yield from self._in_workers(items)
            return
        first = next(items, None)
        if first is None:
            return
        second = next(items, None)
        if second is None or self._workers == 1:
            for item in _chain(first, second, items):
                yield item, self._function(self._context, item)
            return
        self._started = [_Worker(self._function, self._context) for _ in range(self._workers)]
        yield from self._in_workers(_chain(first, second, items))

    def _in_workers(self, items: Iterator[Item]) -> Iterator[tuple[Item, Result]]:
        """Hand items to the workers in turn and collect their results in the same turn."""
        pending: collections.deque[tuple[Item, _Worker]] = collections.deque()
        limit = len(self._started) * _IN_FLIGHT_PER_WORKER
        for index, item in enumerate(items):
            worker = self._started[index % len(self._started)]
            worker.send(item)
            pending.append((item, worker))
            if len(pending) >= limit:
                done, owner = pending.popleft()
                yield done, owner.receive()
        while pending:
            done, owner = pending.popleft()
            yield done, owner.receive()


class _Worker:
    """One worker process, with a thread that writes its tasks so that reading never waits."""

    def __init__(self, function: Callable[..., Any], context: object) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        if self._process.stdin is None or self._process.stdout is None:
            raise WorkerError("a worker process was started without pipes")  # a bug
        self._input: IO[bytes] = self._process.stdin
        self._output: IO[bytes] = self._process.stdout
        self._tasks: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._tasks.put((function, context))
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._writer.start()

    def send(self, item: object) -> None:
        """Queue an item for the worker."""
        self._tasks.put(item)

    def receive(self) -> Any:
        """Wait for the result of the oldest item sent.

        Raises:
            WorkerError: If the worker failed or exited.
            Exception: What the function raised in the worker, as it raised it.
        """
        try:
            status, value = pickle.load(self._output)  # noqa: S301 (our own child process)
        except (EOFError, pickle.UnpicklingError, OSError):
            code = self._process.poll()
            raise WorkerError(
                f"a worker process exited unexpectedly (exit status {code}); see its messages above"
            ) from None
        if status == "error":
            raise value
        return value

    def stop(self, *, kill: bool) -> None:
        """Stop the worker: let it finish, or kill it after a failure."""
        if kill:
            self._process.kill()
        self._tasks.put(_STOP)
        self._writer.join()
        with contextlib.suppress(OSError):
            self._output.close()
        self._process.wait()

    def _write(self) -> None:
        """Write queued items to the worker's input until told to stop."""
        try:
            while (item := self._tasks.get()) is not _STOP:
                pickle.dump(item, self._input, protocol=pickle.HIGHEST_PROTOCOL)
                self._input.flush()
        except OSError:
            pass  # the worker is gone; `receive` reports it
        finally:
            with contextlib.suppress(OSError):
                self._input.close()


def _chain(first: Item, second: Item | None, rest: Iterator[Item]) -> Iterator[Item]:
    yield first
    if second is not None:
        yield second
        yield from rest


def serve() -> None:
    """Run as a worker: read the function and context, then answer item after item."""
    # The parent handles Ctrl-C and stops its workers; a worker must not die of it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tasks = sys.stdin.buffer
    results = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt results
    function, context = pickle.load(tasks)  # noqa: S301 (sent by our own parent process)
    while True:
        try:
            item = pickle.load(tasks)  # noqa: S301
        except EOFError:
            return
        try:
            answer: tuple[str, object] = ("ok", function(context, item))
        except Exception as error:  # sent back to the parent, which raises it
            answer = ("error", error)
        pickle.dump(answer, results, protocol=pickle.HIGHEST_PROTOCOL)
        results.flush()
