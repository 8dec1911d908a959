"""Client streams read within time limits, so that a slow or stalled client holds little.

An upload holds a worker thread, scratch disk and one of its brand's upload slots for as
long as it runs. `paced` reads the stream on a thread of its own and hands each message
to the handler; when the client goes quiet, trickles, or runs too long, the handler gets
a `DeadlineExceededError` in its own thread, so the call ends with a status and an
`ErrorInfo` the client can read (cancelling it from another thread would reach the client
as a bare CANCELLED).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc

from cleanroom.errors import DeadlineExceededError

T = TypeVar("T")


@dataclass(frozen=True)
class UploadPace:
    """The time limits of one upload stream.

    Attributes:
        idle_timeout: Seconds the client may send nothing.
        max_duration: Seconds the whole stream may take.
        min_bytes_per_second: The least average rate since the stream began, checked as
            messages come once it has run for `idle_timeout` seconds (0: no minimum).
    """

    idle_timeout: float = 60.0
    max_duration: float = 3600.0
    min_bytes_per_second: int = 0


class _Slot(Generic[T]):
    """One message handed from the reading thread to the handler, or how the stream ended."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.items: list[tuple[str, T | BaseException | None]] = []
        self.closed = False

    def put(self, kind: str, item: T | BaseException | None) -> bool:
        """Hands over an item once the last one was taken; False if the reader must stop."""
        with self.condition:
            self.condition.wait_for(lambda: not self.items or self.closed)
            if self.closed:
                return False
            self.items.append((kind, item))
            self.condition.notify_all()
            return True

    def take(self, timeout: float) -> tuple[str, T | BaseException | None] | None:
        with self.condition:
            if not self.condition.wait_for(lambda: bool(self.items), max(0.0, timeout)):
                return None
            item = self.items.pop()
            self.condition.notify_all()
            return item

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify_all()


def paced(
    messages: Iterator[T], pace: UploadPace, size: Callable[[T], int]
) -> Generator[T, None, None]:
    """The messages of a client stream, ended with `DeadlineExceededError` by a limit.

    Raises:
        DeadlineExceededError: UPLOAD_IDLE_TIMEOUT, UPLOAD_TOO_SLOW or UPLOAD_TOO_LONG.
    """
    slot: _Slot[T] = _Slot()

    def read() -> None:
        try:
            for message in messages:
                if not slot.put("message", message):
                    return
        except BaseException as error:  # handed to the handler, which raises it
            slot.put("error", error)
            return
        slot.put("end", None)

    reader = threading.Thread(target=read, name="upload-reader", daemon=True)
    start = last = time.monotonic()
    received = 0
    reader.start()
    try:
        while True:
            now = time.monotonic()
            # The rate is checked as messages come: a client that sends nothing at all is
            # told that it idled, which says more than that it was slow.
            item = slot.take(min(last + pace.idle_timeout, start + pace.max_duration) - now)
            if item is not None:
                kind, value = item
                if kind == "end":
                    return
                if kind == "error":
                    raise value  # type: ignore[misc]  # the reader put an exception
                received += size(value)  # type: ignore[arg-type]  # a message
                yield value  # type: ignore[misc]
                # The time the handler took is not the client's: idle time counts from
                # when the handler is ready for the next message.
                last = time.monotonic()
                _check(pace, last - start, 0.0, received, rate=True)
            else:
                now = time.monotonic()
                _check(pace, now - start, now - last, received, rate=False)
    finally:
        slot.close()


def _check(pace: UploadPace, elapsed: float, idle: float, received: int, *, rate: bool) -> None:
    if idle >= pace.idle_timeout:
        raise DeadlineExceededError(
            "UPLOAD_IDLE_TIMEOUT",
            f"The upload sent nothing for {pace.idle_timeout:g} seconds and was dropped;"
            " nothing was stored. Upload again.",
            upload_idle_timeout_seconds=f"{pace.idle_timeout:g}",
        )
    if elapsed >= pace.max_duration:
        raise DeadlineExceededError(
            "UPLOAD_TOO_LONG",
            f"The upload ran for {pace.max_duration:g} seconds, the server's limit, and was"
            " dropped; nothing was stored. Upload from a faster link, or ask the operator.",
            max_upload_seconds=f"{pace.max_duration:g}",
        )
    least = pace.min_bytes_per_second
    if rate and least and elapsed >= pace.idle_timeout and received < least * elapsed:
        raise DeadlineExceededError(
            "UPLOAD_TOO_SLOW",
            f"The upload sent {received} bytes in {elapsed:.0f} seconds, less than the"
            f" server's minimum of {least} bytes a second, and was dropped; nothing was"
            " stored. Upload from a faster link, or ask the operator.",
            min_upload_bytes_per_second=least,
            received_bytes=received,
        )


def paced_sends(
    messages: Iterable[T],
    pace: UploadPace,
    size: Callable[[T], int],
    stop: Callable[[DeadlineExceededError], None],
) -> Generator[T, None, None]:
    """The messages of a server stream, stopped by `stop` when the client reads too slowly.

    gRPC hands a message on only once the client has taken the one before, so a client
    that stops reading holds the handler in its send. A watchdog thread measures each
    send against the same limits as an upload's messages (idle, duration, rate) and
    calls `stop` with the refusal, which must end the call (cancel it) from that thread.
    """
    lock = threading.Condition()
    start = time.monotonic()
    state = {"since": start, "sent": 0.0, "done": 0.0}

    def watch() -> None:
        with lock:
            while not state["done"]:
                now = time.monotonic()
                try:
                    _check(pace, now - start, now - state["since"], int(state["sent"]), rate=True)
                except DeadlineExceededError as error:
                    state["done"] = 1.0
                    stop(_as_sending(error))
                    return
                lock.wait(min(1.0, pace.idle_timeout / 4))

    watchdog = threading.Thread(target=watch, name="send-watchdog", daemon=True)
    watchdog.start()
    try:
        for message in messages:
            with lock:
                state["since"] = time.monotonic()
            yield message
            with lock:
                state["sent"] += size(message)
                state["since"] = time.monotonic()
    finally:
        with lock:
            state["done"] = 1.0
            lock.notify_all()


_SENDING = {
    "UPLOAD_IDLE_TIMEOUT": "took nothing of the stream for longer than the server's idle limit",
    "UPLOAD_TOO_LONG": "was still reading the stream at the server's time limit",
    "UPLOAD_TOO_SLOW": "read the stream more slowly than the server's minimum rate",
}


def _as_sending(error: DeadlineExceededError) -> DeadlineExceededError:
    """The refusal of a stream the client read too slowly: the same reason, its own words."""
    return DeadlineExceededError(
        error.reason,
        f"The client {_SENDING.get(error.reason, 'read the stream too slowly')} and the"
        " stream was ended; nothing changed on the server. Call again from a faster link.",
        **error.metadata,
    )


def client_gone(
    context: grpc.ServicerContext, terminated: threading.Event, deadline: float
) -> bool:
    """Whether the client cancelled the call or went away, waiting for it until `deadline`."""
    if not context.is_active():
        return True
    return terminated.wait(max(0.0, deadline - time.monotonic()))
