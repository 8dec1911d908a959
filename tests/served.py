"""A real `cleanroom serve` process for the operations tests, and what they read from it.

The process writes one JSON event per line on standard error; a thread reads them, so a
test waits for an event (with a deadline) instead of sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import tomli_w

from cleanroom.demo.deployment import loopback_connection
from cleanroom.tls.pki import DemoPki
from partners.client import CleanRoomClient
from tests.support import config_data

Event = dict[str, Any]


def write_served_config(path: Path, pki: DemoPki, data_dir: Path, **changes: Any) -> Path:
    """A test configuration whose gRPC and ops ports are picked by the system."""
    data = config_data(pki, data_dir, **changes)
    data["server"]["ops"] = {"listen": "127.0.0.1:0"}
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


class ServedProcess:
    """A running `cleanroom serve` and the events it has logged so far."""

    def __init__(self, process: subprocess.Popen[str], pki: DemoPki) -> None:
        self.process = process
        self.pki = pki
        self.events: list[Event] = []
        self.lines: list[str] = []
        self.ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.clients: dict[str, CleanRoomClient] = {}

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                with suppress(ValueError):
                    self.events.append(json.loads(line))
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait_for(self, matches: Callable[[Event], bool], what: str, seconds: float = 60) -> Event:
        """The first event that `matches`, waiting for it up to `seconds`."""
        deadline = time.monotonic() + seconds
        with self._changed:
            while True:
                for event in self.events:
                    if matches(event):
                        return event
                left = deadline - time.monotonic()
                log = "".join(self.lines)[-3000:]
                assert left > 0, f"no {what} within {seconds} s; the log: {log}"
                assert not self.ended, f"no {what}: the server ended; the log: {log}"
                self._changed.wait(min(left, 1.0))

    def named(self, name: str) -> list[Event]:
        with self._changed:
            return [e for e in self.events if e.get("event") == name]

    @property
    def serving(self) -> Event:
        return self.wait_for(lambda e: e.get("event") == "serving", "serving event")

    @property
    def port(self) -> int:
        return int(self.serving["port"])

    def ops(self, path: str) -> tuple[int, str]:
        """GET on the ops listener: status and body."""
        url = f"http://127.0.0.1:{self.serving['ops_port']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def client(self, partner: str) -> CleanRoomClient:
        if partner not in self.clients:
            self.clients[partner] = CleanRoomClient(
                loopback_connection(self.pki, partner, self.port), timeout=30
            )
        return self.clients[partner]

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def stop(self) -> int:
        for client in self.clients.values():
            client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self._close()
        return code

    def _close(self) -> None:
        self._reader.join(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()


@contextmanager
def served(pki: DemoPki, config: Path, *arguments: str) -> Iterator[ServedProcess]:
    """`cleanroom serve --config CONFIG ARGUMENTS`, stopped (SIGTERM) after the block."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "cleanroom", "serve", "--config", str(config), *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    running = ServedProcess(process, pki)
    try:
        running.serving  # noqa: B018 - waits until it serves
        yield running
    finally:
        if process.poll() is None:
            running.stop()
        else:
            running._close()


def cleanroom_command(
    *arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`cleanroom ARGUMENTS` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "cleanroom", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
