"""The toolkit's time limits: `--timeout` and CLEANROOM_TIMEOUT on every command, and a
connect timeout that names the server that did not answer.

The "server" here accepts TCP connections and never answers the TLS handshake, as a
stuck process or a wrong port behind a load balancer does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cleanroom.tls.pki import DemoPki
from partners.client import CleanRoomClient, Connection
from partners.errors import UnavailableError
from tests.support import COLLABORATION

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
