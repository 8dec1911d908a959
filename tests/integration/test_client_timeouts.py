"""The toolkit's time limits: `--timeout` and CLEANROOM_TIMEOUT on every command, and a
connect timeout that names the server that did not answer.

The "server" here accepts TCP connections and never answers the TLS handshake, as a
stuck process or a wrong port behind a load balancer does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from cleanroom.tls.pki import DemoPki
from partners.client import CleanRoomClient, Connection
from partners.errors import UnavailableError
from tests.support import COLLABORATION, RunningServer

BOUND = 60  # seconds the test lets a command run: a bound, not what it checks


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A listening socket whose connections are accepted by the kernel, then ignored."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def partner_env(pki: DemoPki, target: str) -> dict[str, str]:
    files = pki.partners["acme"]
    return {
        **os.environ,
        "CLEANROOM_SERVER": target,
        "CLEANROOM_CERT": str(files.certificate),
        "CLEANROOM_KEY": str(files.private_key),
        "CLEANROOM_CA": str(pki.ca.certificate),
        "CLEANROOM_SERVER_NAME": "localhost",
        "COLUMNS": "1000",
    }


@pytest.mark.parametrize(
    ("command", "how"),
    [
        (["datasets", "list", f"--collaboration={COLLABORATION}"], "option"),
        (["report", "list", f"--collaboration={COLLABORATION}"], "option"),
        (["audit", "list", f"--collaboration={COLLABORATION}"], "option"),
        (["budget", f"--collaboration={COLLABORATION}"], "environment"),
    ],
    ids=["datasets", "report", "audit", "budget-env"],
)
def test_a_server_that_never_answers_is_named_after_the_timeout(
    pki: DemoPki, silent_server: str, command: list[str], how: str
) -> None:
    env = partner_env(pki, silent_server)
    if how == "option":
        command = [*command, "--timeout", "1.5"]
    else:
        env["CLEANROOM_TIMEOUT"] = "1.5"
    result = subprocess.run(
        [sys.executable, "-m", "partners", *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=BOUND,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SERVER_NOT_ANSWERING" in result.stderr, result.stderr
    assert f"{silent_server} did not complete a connection within 1.5 s" in result.stderr


def test_the_client_connect_timeout_names_the_server(pki: DemoPki, silent_server: str) -> None:
    files = pki.partners["acme"]
    connection = Connection(
        target=silent_server,
        certificate=files.certificate,
        private_key=files.private_key,
        ca_certificate=pki.ca.certificate,
        server_name="localhost",
    )
    with (
        CleanRoomClient(connection, timeout=30, connect_timeout=0.5) as client,
        pytest.raises(UnavailableError) as unanswered,
    ):
        client.get_dataset(f"collaborations/{COLLABORATION}/datasets/any")
    assert unanswered.value.reason == "SERVER_NOT_ANSWERING"
    assert unanswered.value.metadata == {"target": silent_server, "connect_timeout_seconds": "0.5"}


def test_the_timeout_option_is_checked(pki: DemoPki, silent_server: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "partners", "budget", "--collaboration=x", "--timeout=0"],
        capture_output=True,
        text=True,
        env=partner_env(pki, silent_server),
        timeout=BOUND,
        check=False,
    )
    assert result.returncode == 2
    assert "--timeout" in result.stderr


class DroppingProxy:
    """A TCP proxy to the server that, when armed, drops the connection carrying the next
    request instead of forwarding it: the call in flight fails UNAVAILABLE."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.armed = threading.Event()
        self.dropped = threading.Event()
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests and self.armed.is_set():
                    self.armed.clear()
                    self.dropped.set()
                    raise OSError("dropped")
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


def test_an_idempotent_call_is_retried_when_its_connection_drops(server: RunningServer) -> None:
    proxy = DroppingProxy(("127.0.0.1", server.port))
    direct = server.connection("acme")
    connection = Connection(
        target=proxy.address,
        certificate=direct.certificate,
        private_key=direct.private_key,
        ca_certificate=direct.ca_certificate,
        server_name="localhost",
    )
    try:
        with CleanRoomClient(connection, timeout=30) as client:
            assert list(client.list_datasets(f"collaborations/{COLLABORATION}")) == []
            proxy.armed.set()
            assert list(client.list_datasets(f"collaborations/{COLLABORATION}")) == []
        assert proxy.dropped.is_set()
        assert proxy.connections == 2  # the retry came over a new connection
    finally:
        proxy.close()
