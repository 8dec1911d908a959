"""Dropping client streams that go quiet, so that a stalled client holds nothing for long."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

import grpc


class IdleWatch:
    """Ends a streaming call whose client sends nothing for `timeout` seconds.

    The handler is blocked reading the stream, so a watcher thread ends the call instead:
    it sets the status the client will get, tells the caller why (`on_timeout`), and
    cancels the call, which ends the handler's read so that it frees what it held.
    """

    def __init__(
        self, context: grpc.ServicerContext, timeout: float, on_timeout: Callable[[], None]
    ) -> None:
        self.context = context
        self.timeout = timeout
        self.on_timeout = on_timeout
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="idle-watch", daemon=True)

    def touch(self) -> None:
        """Notes that the client sent something."""
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(max(0.0, self._last + self.timeout - time.monotonic())):
            if time.monotonic() - self._last >= self.timeout:
                self.on_timeout()
                self.context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
                self.context.set_details(
                    f"The upload sent nothing for {self.timeout:g} seconds and was dropped;"
                    " nothing was stored. Upload again."
                )
                cast(Any, self.context).cancel()  # grpc-stubs leave RpcContext.cancel untyped
                return

    def __enter__(self) -> IdleWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
