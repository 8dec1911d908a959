"""The real server as a subprocess (`python -m cleanroom serve`) on a loopback port.

For tests that measure the server process from outside (its memory, what it writes) or
that must see it as a client on another machine would: over a real socket, in its own
process, with its own limits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import tomli_w
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cleanroom.demo.deployment import free_loopback_port
from cleanroom.tls.pki import DemoPki
from partners.client import CleanRoomClient, Connection
from tests.support import config_data

START_SECONDS = 60


@dataclass
class ServerProcess:
    """A started server process, its port and configuration file, and its log."""

    pki: DemoPki
    root: Path
    process: subprocess.Popen[bytes]
    port: int
    config: Path

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def connection(self, partner: str) -> Connection:
        files = self.pki.partners[partner]
        return Connection(
            target=f"127.0.0.1:{self.port}",
            certificate=files.certificate,
            private_key=files.private_key,
            ca_certificate=self.pki.ca.certificate,
            server_name="localhost",
        )

    def client(self, partner: str, **options: Any) -> CleanRoomClient:
        return CleanRoomClient(self.connection(partner), **options)

    def health(self, channel: grpc.Channel, timeout: float = 10) -> int:
        """The health service's answer for the whole server."""
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout
        )
        return int(response.status)

    def status(self, field: str) -> int:
        """A `/proc/<pid>/status` figure in bytes, e.g. VmHWM (the peak resident memory)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == field:
                number, unit = value.split()
                assert unit == "kB", line
                return int(number) * 1024
        raise KeyError(field)

    def io(self, field: str) -> int:
        """A `/proc/<pid>/io` counter, e.g. wchar (bytes passed to write calls)."""
        for line in Path(f"/proc/{self.process.pid}/io").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == field:
                return int(value)
        raise KeyError(field)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def write_server_config(
    pki: DemoPki, root: Path, port: int, server: Mapping[str, Any] | None = None
) -> Path:
    """The configuration of a test server on `port` with `server` settings added."""
    data = config_data(pki, root / "data", server=server)
    data["server"]["listen"] = f"127.0.0.1:{port}"
    config = root / "cleanroom.toml"
    config.write_bytes(tomli_w.dumps(data).encode())
    return config


def serve_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "cleanroom", "serve", "--config", str(config)]


@contextmanager
def server_process(
    pki: DemoPki, root: Path, server: Mapping[str, Any] | None = None
) -> Iterator[ServerProcess]:
    """Starts `cleanroom serve` in a process, waits until it answers, stops it after."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    config = write_server_config(pki, root, port, server)
    with (root / "server.log").open("ab") as log:
        process = subprocess.Popen(
            serve_command(config),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        )
    running = ServerProcess(pki, root, process, port, config)
    try:
        channel = running.connection("operator").channel()
        try:
            grpc.channel_ready_future(channel).result(timeout=START_SECONDS)
            deadline = time.monotonic() + START_SECONDS
            while running.health(channel) != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, running.log_text()
        finally:
            channel.close()
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
