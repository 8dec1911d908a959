"""Certificates and configurations that must be refused, each with a clear status or message.

Client certificates that fail TLS verification (expired, not yet valid, from another CA,
without the clientAuth usage) are refused at the handshake: the client sees UNAVAILABLE,
no RPC reaches the server, so nothing is stored and nothing is logged. Certificates that
pass TLS but name no partner (an unknown SAN, no SAN at all) are UNAUTHENTICATED with
reason UNKNOWN_CERTIFICATE, and each such call is logged under the certificate's subject.

A configuration with a bad value makes `cleanroom serve` fail at start, and `cleanroom
check-config` fail, with a message that names the key; never a traceback, never a server
that starts anyway.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

from cleanroom.audit.log import AuditFilter
from cleanroom.names import SERVER_LOG
from cleanroom.tls.pki import (
    CertificateFiles,
    DemoPki,
    certificate_identities,
    create_certificate_authority,
    issue_certificate,
    partner_dns_name,
)
from partners.client import CleanRoomClient, Connection
from partners.errors import ServerError
from tests.support import (
    COLLABORATION,
    RunningServer,
    config_data,
    dataset_name,
    digest_array,
    files_under,
    random_digests,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
COMMAND_SECONDS = 30.0


@pytest.fixture(scope="module")
def certificates(
    pki: DemoPki, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CertificateFiles]:
    """Client certificates that are wrong in one way each; all but two carry acme's SAN."""
    directory = tmp_path_factory.mktemp("odd-certificates")
    now = datetime.now(UTC)
    acme = [partner_dns_name("acme")]
    another_ca = create_certificate_authority(directory / "another-ca", common_name="Another CA")
    return {
        "expired": issue_certificate(
            pki.ca, directory, "expired", dns_names=acme, client=True,
            not_before=now - timedelta(days=30), not_after=now - timedelta(days=1),
        ),
        "not-yet-valid": issue_certificate(
            pki.ca, directory, "not-yet-valid", dns_names=acme, client=True,
            not_before=now + timedelta(days=1), not_after=now + timedelta(days=30),
        ),
        "another-ca": issue_certificate(another_ca, directory, "another-ca", dns_names=acme, client=True),
        # The server's own certificate: signed by the right CA, but for serverAuth only.
        "server-certificate": pki.server,
        # The same flaw with acme's name in it: if the usage went unchecked, it would be acme.
        "server-auth-only": issue_certificate(pki.ca, directory, "server-auth-only", dns_names=acme, server=True),
        "unknown-san": issue_certificate(
            pki.ca, directory, "unknown-san", dns_names=["nobody.partners.cleanroom.test"], client=True
        ),
        # No SAN at all, and a common name that is a partner's id: names come from SANs only.
        "no-san": issue_certificate(pki.ca, directory, "no-san", client=True, common_name="acme"),
    }  # fmt: skip


def connection(server: RunningServer, files: CertificateFiles) -> Connection:
    return Connection(
        target=f"127.0.0.1:{server.port}",
        certificate=files.certificate,
        private_key=files.private_key,
        ca_certificate=server.pki.ca.certificate,  # the client trusts the real server
        server_name="localhost",
    )


def refused(call: Callable[..., Any], *args: Any, **kwargs: Any) -> ServerError:
    def run() -> None:
        result = call(*args, **kwargs)
        if isinstance(result, Iterator):  # list_* calls run when iterated
            list(result)

    with pytest.raises(ServerError) as error:
        run()
    return error.value


def every_kind_of_call(client: CleanRoomClient, digests: Path) -> list[ServerError]:
    """One call of each service, all of which must be refused."""
    return [
        refused(client.upload, digests, dataset_id="acme-list"),
        refused(client.list_datasets, PARENT),
        refused(client.get_dataset, dataset_name("acme-list")),
        refused(
            client.create_report,
            PARENT,
            base=dataset_name("acme-list"),
            others=[dataset_name("brightmart-list")],
        ),
        refused(client.get_checkpoint, PARENT),
    ]


def digest_file(tmp_path: Path) -> Path:
    digests = digest_array(random_digests(np.random.default_rng(5), 20))
    return write_digest_file(tmp_path / "digests.parquet", {"email": digests})


def all_events(server: RunningServer) -> list[Any]:
    assert server.interceptor.drain(10)
    log = server.clean_room.audit_log
    return server.events() + log.events(SERVER_LOG, AuditFilter(), after=-1, limit=1_000_000)


def assert_nothing_stored(server: RunningServer) -> None:
    assert list(server.client("operator").list_datasets(PARENT)) == []
    assert files_under(server.data_dir / "datasets") == []
    assert files_under(server.data_dir / "tmp") == []


@pytest.mark.parametrize(
    "kind", ["expired", "not-yet-valid", "another-ca", "server-certificate", "server-auth-only"]
)
def test_a_certificate_that_fails_tls_verification_is_refused_at_the_handshake(
    server: RunningServer, certificates: dict[str, CertificateFiles], kind: str, tmp_path: Path
) -> None:
    digests = digest_file(tmp_path)
    before = len(all_events(server))
    with CleanRoomClient(connection(server, certificates[kind]), timeout=10) as client:
        errors = every_kind_of_call(client, digests)
    for error in errors:
        assert error.code == "UNAVAILABLE", f"{error.code} {error.reason}: {error.message}"
        assert error.message
    assert len(all_events(server)) == before  # no RPC reached the server
    assert_nothing_stored(server)
    # The refusals cost the server nothing: the real acme still gets through.
    assert list(server.client("acme").list_datasets(PARENT)) == []


@pytest.mark.parametrize("kind", ["unknown-san", "no-san"])
def test_a_certificate_that_names_no_partner_is_unauthenticated_and_logged(
    server: RunningServer, certificates: dict[str, CertificateFiles], kind: str, tmp_path: Path
) -> None:
    digests = digest_file(tmp_path)
    subject = certificate_identities(certificates[kind].certificate.read_bytes()).subject
    before = len(all_events(server))
    with CleanRoomClient(connection(server, certificates[kind]), timeout=10) as client:
        errors = every_kind_of_call(client, digests)
    for error in errors:
        assert (error.code, error.reason) == ("UNAUTHENTICATED", "UNKNOWN_CERTIFICATE"), (
            error.message
        )
        assert subject in error.message
        assert error.metadata["subject"] == subject
    added = all_events(server)[before:]
    assert len(added) == len(errors)
    for event in added:
        assert event.caller == subject  # never partners/acme, whatever the common name says
        assert event.caller_roles == ()
        assert (event.outcome.status_code, event.outcome.reason) == (
            "UNAUTHENTICATED",
            "UNKNOWN_CERTIFICATE",
        )
    assert_nothing_stored(server)


# Configurations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a `cleanroom` command ended: its exit status (None: it started serving) and output."""

    status: int | None
    output: str


def run_cleanroom(command: str, config: Path) -> Outcome:
    """Runs `python -m cleanroom COMMAND --config CONFIG`, bounded in time.

    A server that starts instead of failing is stopped, and reported with status None.
    """
    log = config.with_suffix(f".{command}.log")
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cleanroom", command, "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=config.parent,
            env={**os.environ, "COLUMNS": "400"},  # rich wraps nothing at this width
        )
    deadline = time.monotonic() + COMMAND_SECONDS
    try:
        while process.poll() is None:
            if '"event": "serving"' in log.read_text(errors="replace"):
                return Outcome(None, log.read_text(errors="replace"))
            assert time.monotonic() < deadline, f"`cleanroom {command}` neither failed nor served"
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
    return Outcome(process.returncode, log.read_text(errors="replace"))


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


def changed(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with the value at a dotted key (list indices as numbers) replaced."""
    data = copy.deepcopy(data)
    *parents, last = key.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    return data


def test_a_good_configuration_checks_and_serves(pki: DemoPki, tmp_path: Path) -> None:
    config = write_toml(tmp_path / "good.toml", config_data(pki, tmp_path / "data"))
    checked = run_cleanroom("check-config", config)
    assert checked.status == 0, checked.output
    assert "configuration is valid" in checked.output
    served = run_cleanroom("serve", config)
    assert served.status is None, served.output  # it started; the harness stopped it


GARBAGE = "garbage.pem"
# (key, bad value, the key the message must name, checked by `serve`, by `check-config`).
# `check-config` judges the file's values and the TLS and key files it names; the data
# directory is for `serve` alone (checking it would create it).
BAD_VALUES = [
    ("collaborations.0.policy.minimum_threshold", 5, "collaborations[0].policy.minimum_threshold", True, True),
    ("collaborations.0.key_check_value", "XYZ", "collaborations[0].key_check_value", False, True),
    ("collaborations.0.members.0.roles", ["boss"], "collaborations[0].members[0].roles", False, True),
    ("server.max_workers", 0, "server.max_workers", True, True),
    ("server.upload_idle_timeout_seconds", -1, "server.upload_idle_timeout_seconds", False, True),
    ("server.colour", "blue", "server.colour", True, True),
    ("server.listen", "not an address", "server.listen", True, True),
    ("server.listen", "127.0.0.1:99999", "server.listen", True, True),
    ("server.tls.certificate", GARBAGE, "server.tls.certificate", True, True),
    ("server.tls.private_key", "ACME_KEY", "server.tls.private_key", True, True),
    ("server.tls.client_ca", GARBAGE, "server.tls.client_ca", True, True),
    ("server.tls.certificate", "missing.pem", "server.tls.certificate", True, True),
    ("server.audit.signing_key", GARBAGE, "server.audit.signing_key", True, True),
    ("server.data_dir", GARBAGE, "server.data_dir", True, False),
]  # fmt: skip
FOR_SERVE = [case for case in BAD_VALUES if case[3]]
FOR_CHECK_CONFIG = [case for case in BAD_VALUES if case[4]]


def case_id(case: tuple[Any, ...]) -> str:
    return f"{case[0]}={case[1]}"


@pytest.fixture
def bad_config(pki: DemoPki, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str]:
    key, value, named, *_ = request.param
    (tmp_path / GARBAGE).write_text("not a PEM file, nor a key, nor a directory\n")
    value = str(pki.partners["acme"].private_key) if value == "ACME_KEY" else value
    if key.startswith(("server.tls.", "server.audit.", "server.data_dir")):
        value = str(tmp_path / value)
    data = changed(config_data(pki, tmp_path / "data"), key, value)
    return write_toml(tmp_path / "bad.toml", data), named


@pytest.mark.parametrize("bad_config", FOR_SERVE, indirect=True, ids=case_id)
def test_serve_fails_at_start_naming_the_bad_key(bad_config: tuple[Path, str]) -> None:
    config, key = bad_config
    outcome = run_cleanroom("serve", config)
    assert outcome.status is not None, f"the server started anyway:\n{outcome.output}"
    assert outcome.status != 0
    assert "Traceback" not in outcome.output, outcome.output[-2000:]
    # The log is JSON, one event a line: the refusal names the key in a field of its own.
    assert '"event": "cannot serve"' in outcome.output, outcome.output[-2000:]
    assert f'"key": "{key}"' in outcome.output, outcome.output[-2000:]


@pytest.mark.parametrize("bad_config", FOR_CHECK_CONFIG, indirect=True, ids=case_id)
def test_check_config_fails_naming_the_bad_key(bad_config: tuple[Path, str]) -> None:
    config, key = bad_config
    outcome = run_cleanroom("check-config", config)
    assert outcome.status not in (0, None), f"check-config accepted it:\n{outcome.output}"
    assert "Traceback" not in outcome.output, outcome.output[-2000:]
    assert f"error: {key}:" in outcome.output, outcome.output
