"""The benchmark's clean room: certificates, a configuration and a real server in a subprocess.

The server is `python -m cleanroom serve`, exactly as an operator runs it, so that its
memory is its own: the benchmark reads its peak resident set from `/proc/PID/status`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cleanroom.demo.deployment import config_toml, free_loopback_port, loopback_connection
from cleanroom.proofs.signed_note import NoteSigner
from cleanroom.tls.pki import DemoPki, create_demo_pki, write_private_file
from partners.client import CleanRoomClient, Connection
from partners.preparation.digest import key_check_value

COLLABORATION = "bench"
SECRET = bytes(range(32))
KCV = key_check_value(SECRET, COLLABORATION)
BRANDS = ("acme", "brightmart", "corvid", "dunmore", "elkhorn", "fairway", "grove")
START_SECONDS = 60.0
STOP_SECONDS = 30.0
_MATCHED = re.compile(
    r"matched (\d+) datasets \((\d+) rows\) in ([0-9.]+) s(?: \(([0-9.]+) s of CPU)?"
)


@dataclass
class BenchServer:
    """A running server and what talks to it."""

    root: Path
    pki: DemoPki
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    brands: tuple[str, ...] = BRANDS

    @classmethod
    def start(
        cls, root: Path, *, brands: Sequence[str] = BRANDS, matching: str | None = None
    ) -> BenchServer:
        """Certificates, a configuration and a started server, all under `root`.

        Args:
            root: Where everything goes.
            brands: The member brands, each an uploader and an analyst.
            matching: The collaboration's `matching` ("double_blind"); the default if None.
        """
        root.mkdir(parents=True, exist_ok=True)
        pki = create_demo_pki(root / "certs", partners=list(brands))
        signer = NoteSigner.generate("cleanroom.bench")
        write_private_file(root / "certs" / "log-signing.key", signer.key_text() + "\n")
        port = free_loopback_port()
        config = root / "cleanroom.toml"
        text = config_toml(
            root=root,
            pki=pki,
            port=port,
            collaboration=COLLABORATION,
            key_check_value=KCV,
            members={b: ("uploader", "analyst") for b in brands},
            identifier_types=["email", "phone", "maid"],
            policy={"minimum_threshold": 50, "minimum_dataset_size": 1000, "noise": False},
            comment="The benchmark's clean room: one brand per dataset, exact counts.",
            ops_listen="127.0.0.1:0",  # any free port: benchmarks may run beside a server
        )
        if matching is not None:
            text = text.replace(
                "[[collaborations]]\n", f'[[collaborations]]\nmatching = "{matching}"\n', 1
            )
        config.write_text(text)
        log_path = root / "server.log"
        # A wide console keeps each of rich's log lines on one line, for `matcher_seconds`.
        env = {**os.environ, "COLUMNS": "400"}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "cleanroom", "serve", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=env,
            )
        server = cls(root, pki, process, port, log_path, tuple(brands))
        try:
            server._wait_until_serving()
        except Exception:
            server.stop()
            print(log_path.read_text(), file=sys.stderr)
            raise
        return server

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def connection(self, partner: str) -> Connection:
        """How `partner` reaches the server."""
        return loopback_connection(self.pki, partner, self.port)

    def client(self, partner: str) -> CleanRoomClient:
        """A new client for `partner` (close it, or use it in a `with`)."""
        return CleanRoomClient(self.connection(partner), timeout=1800)

    def reset_peak_memory(self) -> bool:
        """Resets the server's peak resident set (VmHWM); False where the kernel refuses."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def peak_memory_bytes(self) -> int:
        """The server's peak resident set since start or the last reset (VmHWM)."""
        return _status_kib(self.process.pid, "VmHWM") * 1024

    def memory_bytes(self) -> int:
        """The server's resident set now (VmRSS)."""
        return _status_kib(self.process.pid, "VmRSS") * 1024

    def cpu_seconds(self) -> float:
        """The CPU time (user and system, every thread) the server's process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def matcher_seconds(self) -> list[float]:
        """The matcher's time of every report so far, from the server's log, oldest first."""
        text = self.log_path.read_text(errors="replace")
        return [float(m.group(3)) for m in _MATCHED.finditer(text)]

    def matcher_cpu_seconds(self) -> list[float | None]:
        """The CPU time the server's process spent on each report's matching, oldest first."""
        text = self.log_path.read_text(errors="replace")
        return [float(m.group(4)) if m.group(4) else None for m in _MATCHED.finditer(text)]

    def stop(self) -> None:
        """Stops the server gracefully (SIGTERM), or kills it after STOP_SECONDS."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _wait_until_serving(self) -> None:
        files = self.pki.partners[self.brands[0]]
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.pki.ca.certificate.read_bytes(),
            private_key=files.private_key.read_bytes(),
            certificate_chain=files.certificate.read_bytes(),
        )
        options = [("grpc.ssl_target_name_override", "localhost")]
        deadline = time.monotonic() + START_SECONDS
        with grpc.secure_channel(f"127.0.0.1:{self.port}", credentials, options) as channel:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with status {self.process.returncode}")
                try:
                    response = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=5
                    )
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
                    continue
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")
