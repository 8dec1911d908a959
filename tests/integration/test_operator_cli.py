"""The operator's commands: `check-config` checks everything at once, `pki init` keeps the CA key apart."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import tomli_w
from click.testing import CliRunner

from cleanroom.cli import main
from cleanroom.tls.pki import DemoPki, issue_certificate
from tests.support import config_data


def write(path: Path, data: dict) -> Path:
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


def test_check_config_reports_every_problem_with_its_key(pki: DemoPki, tmp_path: Path) -> None:
    data = config_data(pki, tmp_path / "data", minimum_threshold=5)
    data["server"]["max_worker"] = 4
    data["collaborations"][0]["identifier_types"] = ["email", "emial"]
    result = CliRunner().invoke(
        main, ["check-config", "--config", str(write(tmp_path / "c.toml", data))]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 3, result.output
    assert "server.max_worker: unknown key; did you mean 'max_workers'?" in result.output
    assert (
        "collaborations[0].identifier_types: 'emial' looks like a misspelt built-in"
        in result.output
    )
    assert "collaborations[0].policy.minimum_threshold: must be at least 10" in result.output
    assert "3 problems" in result.output


def test_check_config_refuses_an_expired_server_certificate(pki: DemoPki, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    expired = issue_certificate(
        pki.ca, tmp_path, "expired", dns_names=["localhost"], server=True,
        not_before=now - timedelta(days=30), not_after=now - timedelta(days=1),
    )  # fmt: skip
    data = config_data(pki, tmp_path / "data")
    data["server"]["tls"]["certificate"] = str(expired.certificate)
    data["server"]["tls"]["private_key"] = str(expired.private_key)
    data["server"]["audit"]["signing_key"] = str(tmp_path / "missing.key")
    config = write(tmp_path / "c.toml", data)
    # CLEANROOM_CONFIG stands in for --config, for this command as for every other.
    result = CliRunner().invoke(main, ["check-config"], env={"CLEANROOM_CONFIG": str(config)})
    assert result.exit_code == 2, result.output
    assert "server.tls.certificate:" in result.output
    assert "expired at" in result.output
    assert "server.audit.signing_key: cannot read" in result.output


def test_check_config_lists_declared_types_apart_and_warns_of_soon_expiring_certificates(
    pki: DemoPki, tmp_path: Path
) -> None:
    soon = issue_certificate(
        pki.ca, tmp_path, "soon", dns_names=["localhost"], server=True,
        not_after=datetime.now(UTC) + timedelta(days=3),
    )  # fmt: skip
    data = config_data(pki, tmp_path / "data")
    data["server"]["tls"]["certificate"] = str(soon.certificate)
    data["server"]["tls"]["private_key"] = str(soon.private_key)
    result = CliRunner().invoke(
        main, ["check-config"], env={"CLEANROOM_CONFIG": str(write(tmp_path / "c.toml", data))}
    )
    assert result.exit_code == 0, result.output
    assert "built-in types email, phone, maid; declared types loyalty_id" in result.output
    assert "warning: server.tls.certificate:" in result.output
    assert "expires at" in result.output


def test_every_command_that_reads_the_config_names_cleanroom_config_in_its_help() -> None:
    for command in (["serve"], ["check-config"], ["backup"], ["restore"], ["audit", "check"],
                    ["audit", "verifier-key"]):  # fmt: skip
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0
        assert "CLEANROOM_CONFIG" in result.output, command


def test_pki_init_keeps_the_ca_key_apart_from_what_is_handed_out(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    result = CliRunner().invoke(main, ["pki", "init", "--out", str(out), "--partner", "acme"])
    assert result.exit_code == 0, result.output
    handed_out = sorted(p.name for p in out.iterdir() if p.is_file())
    assert handed_out == [
        "ca.pem", "partner-acme-key.pem", "partner-acme.pem", "server-key.pem", "server.pem"
    ]  # fmt: skip
    key = out / "ca-private" / "ca-key.pem"
    assert key.is_file()
    assert stat.S_IMODE((out / "ca-private").stat().st_mode) == 0o700
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for name in handed_out:
        if name.endswith("-key.pem"):
            assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
