"""Headless Chromium driven over its DevTools protocol, to test pages as a browser shows them.

Debian's `chromium` runs with a fresh profile and no network features; the test talks to
it over the DevTools WebSocket (the `websockets` library) that Chromium announces on its
stderr. `.ci/run` installs Chromium where it is missing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


def chromium_or_skip() -> str:
    """The Chromium executable; outside CI a test without one is skipped, in CI it fails."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "Debian's chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + ": .ci/run should have installed it")
    pytest.skip(message)


class Page:
    """One browser tab, attached over a flattened DevTools session."""

    def __init__(self, socket: ClientConnection, session: str) -> None:
        self.socket = socket
        self.session = session
        self._next = 1000
        self._events: list[str] = []  # events that arrived while a reply was awaited

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Sends a command and returns its result; events on the way are kept for `wait_for`."""
        self._next += 1
        ident = self._next
        message = {"id": ident, "method": method, "params": params, "sessionId": self.session}
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            if "method" in reply and reply.get("sessionId") == self.session:
                self._events.append(reply["method"])

    def wait_for(self, event: str) -> None:
        """Waits for an event of this tab (or finds it among those that came already)."""
        if event in self._events:
            self._events.remove(event)
            return
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("method") == event and message.get("sessionId") == self.session:
                return

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page."""
        width, height = self.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        data = self.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        )["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def open_page(url: str, profile: Path, *, width: int = 1280) -> Iterator[Page]:
    """Starts Chromium with a fresh profile, opens `url` and yields the loaded page."""
    executable = chromium_or_skip()
    process = subprocess.Popen(
        [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        endpoint = None
        lines = []
        for line in process.stderr:  # Chromium announces its endpoint on stderr
            lines.append(line)
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                endpoint = found.group(1)
                break
        assert endpoint, "Chromium did not start its DevTools endpoint:\n" + "".join(lines)
        # Keep reading its stderr, so that a chatty browser never blocks on a full pipe.
        threading.Thread(target=process.stderr.read, daemon=True).start()
        with connect(endpoint, max_size=None, open_timeout=30) as socket:
            socket.send(json.dumps({"id": 1, "method": "Target.createTarget",
                                    "params": {"url": "about:blank"}}))  # fmt: skip
            target = _result(socket, 1)["targetId"]
            socket.send(json.dumps({"id": 2, "method": "Target.attachToTarget",
                                    "params": {"targetId": target, "flatten": True}}))  # fmt: skip
            page = Page(socket, _result(socket, 2)["sessionId"])
            page.send("Page.enable")
            page.send(
                "Emulation.setDeviceMetricsOverride",
                width=width, height=900, deviceScaleFactor=1, mobile=False,
            )  # fmt: skip
            page.send("Page.navigate", url=url)
            page.wait_for("Page.loadEventFired")
            yield page
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def _result(socket: ClientConnection, ident: int) -> dict[str, Any]:
    while True:
        reply = json.loads(socket.recv(timeout=60))
        if reply.get("id") == ident:
            if "error" in reply:
                raise RuntimeError(reply["error"])
            return dict(reply["result"])
