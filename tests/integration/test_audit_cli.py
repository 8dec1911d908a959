"""The auditor's and operator's audit commands, end to end against the real server."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cleanroom.cli import main as operator_main
from cleanroom.proofs.signed_note import NoteSigner
from partners.cli import main as partner_main
from tests.integration.test_partner_cli import env_for
from tests.support import (
    COLLABORATION,
    LOG_SIGNER,
    RunningServer,
    dataset_name,
    write_config,
)


def partner(server: RunningServer, who: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(partner_main, list(args), env=env_for(server, who))
    return result.exit_code, result.output


def test_verify_then_tamper_then_verify(server: RunningServer, tmp_path: Path) -> None:
    for _ in range(3):
        partner(server, "acme", "datasets", "list", f"--collaboration={COLLABORATION}")
    key_file = tmp_path / "log.pub"
    key_file.write_text(LOG_SIGNER.verifier_key + "\n")
    verify = (
        "audit",
        "verify",
        f"--collaboration={COLLABORATION}",
        f"--log-key={key_file}",
        f"--state-dir={tmp_path / 'state'}",
    )
    code, out = partner(server, "ledger", *verify)
    assert code == 0, out
    assert "VERIFIED" in out
    assert "events checked: 3" in out
    code, out = partner(server, "ledger", *verify)
    assert code == 0, out
    assert "previous checkpoint: size 3" in out

    with sqlite3.connect(server.data_dir / "cleanroom.sqlite3") as db:
        db.execute(
            "UPDATE audit_events SET entry = replace(entry, 'partners/acme', 'partners/acmf') WHERE log = ? AND log_index = 1",
            (COLLABORATION,),
        )
    db.close()
    code, out = partner(server, "ledger", *verify)
    assert code == 1
    assert "FAILED at index 1" in out

    other = NoteSigner.generate("cleanroom.test").verifier_key
    code, out = partner(
        server, "ledger", *verify[:3], f"--log-key={other}", f"--state-dir={tmp_path / 'fresh'}"
    )
    assert code == 1
    assert "does not verify" in out


def test_export_formats(server: RunningServer, tmp_path: Path) -> None:
    partner(server, "acme", "datasets", "show", dataset_name("nothing"))
    out_file = tmp_path / "log.jsonl"
    code, out = partner(
        server,
        "ledger",
        "audit",
        "export",
        f"--collaboration={COLLABORATION}",
        "--format=jsonl",
        f"--out={out_file}",
    )
    assert code == 0, out
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert rows[0]["status_code"] == "PERMISSION_DENIED"
    assert rows[0]["caller"] == "partners/acme"
    assert len(rows[0]["leaf_hash"]) == 64


def test_operator_keygen_verifier_key_and_offline_check(
    server: RunningServer, tmp_path: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        operator_main,
        ["audit", "keygen", "--name", "cleanroom.example/log", "--out", str(tmp_path / "k")],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert NoteSigner.from_key((tmp_path / "k").read_text()).name == "cleanroom.example/log"

    partner(server, "acme", "datasets", "list", f"--collaboration={COLLABORATION}")
    config = write_config(tmp_path / "cleanroom.toml", server.pki, server.data_dir)
    result = runner.invoke(operator_main, ["audit", "verifier-key", "--config", str(config)])
    assert result.output.strip() == LOG_SIGNER.verifier_key
    result = runner.invoke(operator_main, ["audit", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert f"ok collaborations/{COLLABORATION}" in result.output
    with sqlite3.connect(server.data_dir / "cleanroom.sqlite3") as db:
        db.execute("DELETE FROM audit_events WHERE log = ? AND log_index = 0", (COLLABORATION,))
    db.close()
    result = runner.invoke(operator_main, ["audit", "check", "--config", str(config)])
    assert result.exit_code == 1
    assert "first bad index 0" in result.output


def test_keygen_prints_the_verifier_key_whole_on_its_own_line(tmp_path: Path) -> None:
    """Through an 80-column pipe, as an operator's script would read it."""
    done = subprocess.run(
        [sys.executable, "-m", "cleanroom", "audit", "keygen",
         "--name", "transparency.cleanroom.example.com/query-log", "--out", str(tmp_path / "k")],
        capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    verifier_key = NoteSigner.from_key((tmp_path / "k").read_text()).verifier_key
    assert verifier_key in done.stdout.splitlines()


def test_every_operator_command_reads_cleanroom_config(
    server: RunningServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "cleanroom.toml", server.pki, server.data_dir)
    runner = CliRunner()
    env = {"CLEANROOM_CONFIG": str(config)}
    for command in (["check-config"], ["audit", "verifier-key"], ["audit", "check"]):
        result = runner.invoke(operator_main, command, env=env)
        assert result.exit_code == 0, (command, result.output)
        help_text = runner.invoke(operator_main, [*command, "--help"]).output
        assert "CLEANROOM_CONFIG" in help_text, command


def test_the_partner_help_lists_its_environment_variables() -> None:
    help_text = CliRunner().invoke(partner_main, ["--help"]).output
    for variable in ("CLEANROOM_SERVER", "CLEANROOM_CERT", "CLEANROOM_KEY", "CLEANROOM_CA"):
        assert variable in help_text
    assert "export CLEANROOM_SERVER=" in help_text
