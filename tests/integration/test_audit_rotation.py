"""Rotating the key that signs the query logs: old checkpoints stay verifiable, in order.

The operator makes the next key with `cleanroom audit rotate-key`, and restarts the real
server with it and the old verifier key kept in the configuration. The server signs each
log's latest checkpoint with both keys (the handover), then with the new key only.
Auditors give both keys, oldest first; a checkpoint signed by a key outside that ring, or
by a retired key after its successor took over, fails.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner

from cleanroom.audit.check import check_logs
from cleanroom.cli import main as operator_main
from cleanroom.errors import ConfigError
from cleanroom.proofs.signed_note import KeyRing, NoteSigner, NoteVerifier, signature_lines
from cleanroom.tls.pki import DemoPki
from partners.audit.verify import AuditorState, Verdict, verify_log
from tests.integration.test_audit_operator import make_events
from tests.support import (
    COLLABORATION,
    LOG_SIGNER,
    RunningServer,
    config_data,
    log_signing_key,
    running_server,
)

PARENT = f"collaborations/{COLLABORATION}"
OLD = LOG_SIGNER.verifier_key


def rotate(pki: DemoPki, tmp_path: Path) -> tuple[NoteSigner, dict[str, Any]]:
    """Runs `cleanroom audit rotate-key`; returns the new key and the `[server.audit]` to set."""
    config = tmp_path / "cleanroom.toml"
    config.write_bytes(tomli_w.dumps(config_data(pki, tmp_path / "data")).encode())
    new_key = tmp_path / "log-signing-2.key"
    result = CliRunner().invoke(
        operator_main, ["audit", "rotate-key", "--config", str(config), "--out", str(new_key)]
    )
    assert result.exit_code == 0, result.output
    signer = NoteSigner.from_key(new_key.read_text())
    assert signer.name == LOG_SIGNER.name
    assert signer.verifier_key != OLD
    printed = result.output.replace("\n", "")
    assert signer.verifier_key in printed
    assert re.search(r'previous_verifier_keys = \["' + re.escape(OLD) + r'"\]', printed)
    return signer, {"signing_key": str(new_key), "previous_verifier_keys": [OLD]}


def verify(server: RunningServer, ring: KeyRing, state: Path) -> Verdict:
    return verify_log(server.client("ledger"), PARENT, ring, AuditorState(state))


def test_events_before_and_after_a_rotation_verify_with_the_key_set(
    pki: DemoPki, tmp_path: Path
) -> None:
    data_dir, state = tmp_path / "data", tmp_path / "state"
    with running_server(pki, data_dir) as server:
        make_events(server, tmp_path, 8)
        assert verify(server, KeyRing.of(OLD), state).ok
        handover = server.clean_room.audit_log.size(COLLABORATION)
    shutil.copytree(state, tmp_path / "before")
    new, audit = rotate(pki, tmp_path)
    ring = KeyRing.of(OLD, new.verifier_key)
    with running_server(pki, data_dir, server={"audit": audit}) as server:
        make_events(server, tmp_path, 20)
        ledger = server.client("ledger")
        # Old checkpoints keep the old key's signature; the handover carries both.
        assert NoteVerifier(OLD).open_checkpoint(ledger.get_checkpoint(PARENT, handover - 1))
        _, lines = signature_lines(ledger.get_checkpoint(PARENT, handover))
        assert len(lines) == 2
        NoteVerifier(new.verifier_key).open_checkpoint(ledger.get_checkpoint(PARENT, handover))
        again = verify(server, ring, state)  # with the state saved before the rotation
        assert again.ok, again.problem
        assert again.signed_by == new.key_id
        fresh = verify(server, ring, tmp_path / "fresh")
        assert fresh.ok, fresh.problem
        # Without the old key, the saved checkpoint cannot be read: a verdict, no traceback.
        alone = verify(server, KeyRing.of(new.verifier_key), tmp_path / "before")
        assert not alone.ok
        assert "saved checkpoint does not verify" in (alone.problem or "")
        stranger = NoteSigner.generate(LOG_SIGNER.name).verifier_key
        unknown = verify(server, KeyRing.of(OLD, stranger), tmp_path / "unknown")
        assert not unknown.ok
        assert "does not verify" in (unknown.problem or "")
    results = check_logs(data_dir, ring)
    assert all(r.ok for r in results), [r.problem for r in results]
    assert not all(r.ok for r in check_logs(data_dir, KeyRing.of(new.verifier_key)))
    # The operator's command takes the key ring from the configuration.
    rotated = config_data(pki, data_dir)
    rotated["server"]["audit"] = audit
    config = tmp_path / "rotated.toml"
    config.write_bytes(tomli_w.dumps(rotated).encode())
    checked = CliRunner().invoke(operator_main, ["audit", "check", "--config", str(config)])
    assert checked.exit_code == 0, checked.output
    assert f"ok collaborations/{COLLABORATION}" in checked.output


def test_a_checkpoint_signed_by_an_unknown_key_fails(pki: DemoPki, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(pki, data_dir) as server:
        make_events(server, tmp_path, 6)
        size = server.clean_room.audit_log.size(COLLABORATION)
    stranger = NoteSigner.generate(LOG_SIGNER.name)
    with sqlite3.connect(data_dir / "cleanroom.sqlite3") as db:
        (note,) = db.execute(
            "SELECT signed_note FROM audit_checkpoints WHERE log = ? AND tree_size = ?",
            (COLLABORATION, size),
        ).fetchone()
        forged = stranger.sign(note.partition("\n\n")[0] + "\n")
        db.execute(
            "UPDATE audit_checkpoints SET signed_note = ? WHERE log = ? AND tree_size = ?",
            (forged, COLLABORATION, size),
        )
    db.close()
    offline = {r.log: r for r in check_logs(data_dir, KeyRing.of(OLD))}[COLLABORATION]
    assert offline.first_bad_index == size - 1
    assert "no signature of a trusted key" in (offline.problem or "")
    with running_server(pki, data_dir) as server:
        refused = verify(server, KeyRing.of(OLD), tmp_path / "state")
    assert not refused.ok
    assert refused.first_bad_index == size - 1


def test_a_retired_key_may_not_sign_after_its_successor(pki: DemoPki, tmp_path: Path) -> None:
    data_dir, state = tmp_path / "data", tmp_path / "state"
    new, audit = rotate(pki, tmp_path)
    ring = KeyRing.of(OLD, new.verifier_key)
    with running_server(pki, data_dir, server={"audit": audit}) as server:
        make_events(server, tmp_path, 6)
        assert verify(server, ring, state).ok
    # The operator goes back to the retired key (stolen, say), naming the new one as old.
    old_key = tmp_path / "old.key"
    old_key.write_text(LOG_SIGNER.key_text())
    back = {"signing_key": str(old_key), "previous_verifier_keys": [new.verifier_key]}
    with running_server(pki, data_dir, server={"audit": back}) as server:
        make_events(server, tmp_path, 12)
        verdict = verify(server, ring, state)
    assert not verdict.ok
    assert "retired" in (verdict.problem or "")
    offline = {r.log: r for r in check_logs(data_dir, ring)}[COLLABORATION]
    assert not offline.ok
    assert "retired key" in (offline.problem or "")


def test_rotation_refuses_a_log_that_does_not_verify(pki: DemoPki, tmp_path: Path) -> None:
    with running_server(pki, tmp_path / "data") as server:
        make_events(server, tmp_path, 4)
    with sqlite3.connect(tmp_path / "data" / "cleanroom.sqlite3") as db:
        db.execute("DELETE FROM audit_checkpoints WHERE log = ?", (COLLABORATION,))
    db.close()
    config = tmp_path / "cleanroom.toml"
    config.write_bytes(tomli_w.dumps(config_data(pki, tmp_path / "data")).encode())
    result = CliRunner().invoke(
        operator_main,
        ["audit", "rotate-key", "--config", str(config), "--out", str(tmp_path / "k")],
    )
    assert result.exit_code == 1
    assert "not rotating" in result.output
    assert not (tmp_path / "k").exists()


def test_previous_keys_must_keep_the_name(pki: DemoPki, tmp_path: Path) -> None:
    other = NoteSigner.generate("another.name").verifier_key
    audit = {"signing_key": str(log_signing_key(pki)), "previous_verifier_keys": [other]}
    with (
        pytest.raises(ConfigError, match="keeps its name"),
        running_server(pki, tmp_path / "d", server={"audit": audit}),
    ):
        pass
