"""Witnesses cosign the query log, so that a rewritten history is caught without saved state.

Two witnesses (the auditor and a brand, each with its own Ed25519 key) cosign the real
server's checkpoints as the log grows; a new auditor trusts only checkpoints a quorum of
them cosigned. A fork (a second server holding another history under the same key, a
split view) is refused by the witness, and an operator who holds the signing key and
re-signs a rewritten history is caught by a new auditor with quorum 2.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cleanroom.audit.check import check_logs
from cleanroom.names import DatasetName
from cleanroom.proofs import merkle
from cleanroom.proofs.cosignature import WitnessSigner, WitnessVerifier
from cleanroom.proofs.signed_note import Checkpoint, KeyRing, NoteVerifier
from cleanroom.tls.pki import DemoPki
from partners.audit.verify import AuditorState, Verdict, verify_log
from partners.audit.witness import WitnessState, parse_interval, witness_once
from partners.cli import main as partner_main
from partners.errors import AccessDeniedError, InvalidRequestError
from tests.integration.test_partner_cli import env_for
from tests.support import (
    COLLABORATION,
    LOG_SIGNER,
    RunningServer,
    dataset_name,
    digest_array,
    random_digests,
    running_server,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
RING = KeyRing.of(LOG_SIGNER.verifier_key)
AUDITOR_WITNESS = WitnessSigner.generate("witness.ledger.test")
BRAND_WITNESS = WitnessSigner.generate("witness.brightmart.test")
WITNESSES = [WitnessVerifier(w.verifier_key) for w in (AUDITOR_WITNESS, BRAND_WITNESS)]
WITNESSED = {
    "witnesses": [
        {"partner": "ledger", "public_key": AUDITOR_WITNESS.verifier_key},
        {"partner": "brightmart", "public_key": BRAND_WITNESS.verifier_key},
    ]
}


@contextlib.contextmanager
def witnessed_server(pki: DemoPki, data_dir: Path) -> Iterator[RunningServer]:
    with running_server(pki, data_dir, collaboration=WITNESSED) as server:
        yield server


def make_events(server: RunningServer, tmp_path: Path, count: int) -> None:
    name = dataset_name("acme-log")
    if not server.clean_room.catalog.dataset(DatasetName.parse(name)):
        digests = random_digests(np.random.default_rng(0), 30)
        path = write_digest_file(tmp_path / "d.parquet", {"email": digest_array(digests)})
        server.client("acme").upload(path, dataset_id="acme-log")
    while len(server.events()) < count:
        with contextlib.suppress(AccessDeniedError):
            server.client("brightmart").get_dataset(name)
        server.client("acme").get_dataset(name)


def witness(server: RunningServer, who: str, signer: WitnessSigner, state: Path) -> object:
    return witness_once(server.client(who), PARENT, RING, signer, WitnessState(state))


def both_witness(server: RunningServer, tmp_path: Path) -> None:
    for who, signer in (("ledger", AUDITOR_WITNESS), ("brightmart", BRAND_WITNESS)):
        result = witness(server, who, signer, tmp_path / who)
        assert result.ok, result.problem  # type: ignore[attr-defined]


def new_auditor(server: RunningServer, state: Path, quorum: int = 2) -> Verdict:
    return verify_log(
        server.client("ledger"), PARENT, RING, AuditorState(state),
        witnesses=WITNESSES, quorum=quorum,
    )  # fmt: skip


def cosigned_sizes(server: RunningServer) -> dict[str, int]:
    """For each witness, the size of the latest checkpoint it validly cosigned."""
    _, notes = server.client("operator").get_witnessed_checkpoints(PARENT)
    sizes = {}
    for note in notes:
        checkpoint, _ = RING.open_checkpoint(note)
        for witness in WITNESSES:
            if witness.find(note):
                sizes[witness.name] = checkpoint.tree_size
    return sizes


def test_two_witnesses_cosign_as_the_log_grows(pki: DemoPki, tmp_path: Path) -> None:
    with witnessed_server(pki, tmp_path / "data") as server:
        make_events(server, tmp_path, 6)
        both_witness(server, tmp_path)
        first = cosigned_sizes(server)
        make_events(server, tmp_path, 20)
        both_witness(server, tmp_path)  # each checks consistency with what it cosigned
        second = cosigned_sizes(server)
        assert sorted(first) == sorted(second) == sorted(w.name for w in WITNESSES)
        assert all(0 < first[w] < second[w] for w in first)
        verdict = new_auditor(server, tmp_path / "auditor")
        assert verdict.ok, verdict.problem
        # Each call grows the log, so the witnesses cosigned different sizes; the events
        # trusted are those both vouch for.
        assert verdict.events_checked == min(second.values())
        assert sorted(verdict.witnesses) == sorted(second)
        assert verdict.events_listed > max(second.values())  # listed, not yet cosigned
        # Witnessing is audited like every call.
        methods = [e.method.rsplit("/", 1)[-1] for e in server.events()]
        assert methods.count("AddAuditCosignature") == 4


def test_verify_with_quorum_fails_on_a_checkpoint_without_a_valid_cosignature(
    pki: DemoPki, tmp_path: Path
) -> None:
    with witnessed_server(pki, tmp_path / "data") as server:
        make_events(server, tmp_path, 6)
        none = new_auditor(server, tmp_path / "a")
        assert not none.ok
        assert "valid cosignatures of 0 of the witnesses" in (none.problem or "")
        assert witness(server, "ledger", AUDITOR_WITNESS, tmp_path / "w1").ok  # type: ignore[attr-defined]
        one = new_auditor(server, tmp_path / "b")
        assert not one.ok
        assert "valid cosignatures of 1 of the witnesses" in (one.problem or "")
        assert new_auditor(server, tmp_path / "c", quorum=1).ok
        assert witness(server, "brightmart", BRAND_WITNESS, tmp_path / "w2").ok  # type: ignore[attr-defined]
        assert new_auditor(server, tmp_path / "d").ok
        size = cosigned_sizes(server)[BRAND_WITNESS.name]
        # The stored cosignature of one witness altered: the server still serves it.
        with sqlite3.connect(server.data_dir / "cleanroom.sqlite3") as db:
            (line,) = db.execute(
                "SELECT signature_line FROM audit_cosignatures WHERE log = ? AND tree_size = ?"
                " AND witness_key_id = ?",
                (COLLABORATION, size, WITNESSES[1].key_id),
            ).fetchone()
            name, _, encoded = line.rpartition(" ")
            blob = bytearray(base64.b64decode(encoded))
            blob[-1] ^= 1  # one bit of the signature
            forged = f"{name} {base64.b64encode(bytes(blob)).decode()}"
            db.execute(
                "UPDATE audit_cosignatures SET signature_line = ? WHERE log = ? AND tree_size = ?"
                " AND witness_key_id = ?",
                (forged, COLLABORATION, size, WITNESSES[1].key_id),
            )
        db.close()
        verdict = new_auditor(server, tmp_path / "e")
        assert not verdict.ok
        assert verdict.first_bad_index == size - 1
        assert "valid cosignatures of 1 of the witnesses" in (verdict.problem or "")
        assert "does not verify" in (verdict.problem or "")


def test_the_server_keeps_only_valid_cosignatures_of_the_callers_keys(
    pki: DemoPki, tmp_path: Path
) -> None:
    with witnessed_server(pki, tmp_path / "data") as server:
        make_events(server, tmp_path, 4)
        ledger = server.client("ledger")
        checkpoint, _ = RING.open_checkpoint(ledger.get_checkpoint(PARENT))
        brand_line = BRAND_WITNESS.cosign(checkpoint.body(), 1_700_000_000)
        with pytest.raises(InvalidRequestError) as unknown:  # not the ledger's key
            ledger.add_cosignature(PARENT, checkpoint.tree_size, brand_line)
        assert unknown.value.reason == "UNKNOWN_WITNESS"
        other = AUDITOR_WITNESS.cosign(checkpoint.body().replace("\n", "\nx", 1), 1)
        with pytest.raises(InvalidRequestError) as invalid:  # a cosignature of another body
            ledger.add_cosignature(PARENT, checkpoint.tree_size, other)
        assert invalid.value.reason == "INVALID_COSIGNATURE"
        for who in ("acme", "outsider"):  # a brand that is no witness, a stranger
            with pytest.raises(AccessDeniedError):
                server.client(who).add_cosignature(PARENT, checkpoint.tree_size, brand_line)
        # A witness brand reads checkpoints and proofs, never the events.
        brightmart = server.client("brightmart")
        assert brightmart.get_checkpoint(PARENT)
        with pytest.raises(AccessDeniedError):
            list(brightmart.list_audit_events(PARENT))
        assert server.clean_room.audit_log.latest_cosigned(COLLABORATION, 1) == 0


def test_a_fork_presented_to_a_witness_is_refused(pki: DemoPki, tmp_path: Path) -> None:
    with witnessed_server(pki, tmp_path / "data") as server:
        make_events(server, tmp_path, 8)
        both_witness(server, tmp_path)
    # A split view: another data directory, the same key and collaboration, another history.
    with witnessed_server(pki, tmp_path / "fork") as fork:
        with contextlib.suppress(AccessDeniedError):
            fork.client("corvid").get_dataset(dataset_name("nothing"))
        (tmp_path / "fork-files").mkdir()
        make_events(fork, tmp_path / "fork-files", 30)
        result = witness(fork, "ledger", AUDITOR_WITNESS, tmp_path / "ledger")
        assert not result.ok  # type: ignore[attr-defined]
        assert "a fork" in result.problem  # type: ignore[attr-defined]
        assert fork.clean_room.audit_log.latest_cosigned(COLLABORATION, 1) == 0
        # The witness's saved state is unchanged: the fork stays caught on every run.
        again = witness(fork, "ledger", AUDITOR_WITNESS, tmp_path / "ledger")
        assert not again.ok  # type: ignore[attr-defined]
        verdict = new_auditor(fork, tmp_path / "auditor")
        assert not verdict.ok


def resign_everything(data_dir: Path) -> None:
    """The operator holds the key: rewrite event 3 and sign the whole history again."""
    with sqlite3.connect(data_dir / "cleanroom.sqlite3", isolation_level=None) as db:
        db.execute("BEGIN IMMEDIATE")
        (entry,) = db.execute(
            "SELECT entry FROM audit_events WHERE log = ? AND log_index = 3", (COLLABORATION,)
        ).fetchone()
        data = json.loads(entry)
        data["caller"] = "partners/corvid"
        changed = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        db.execute(
            "UPDATE audit_events SET entry = ?, leaf_hash = ?, caller = ? WHERE log = ?"
            " AND log_index = 3",
            (changed, merkle.leaf_hash(changed), "partners/corvid", COLLABORATION),
        )
        frontier = merkle.Frontier()
        for (leaf,) in db.execute(
            "SELECT leaf_hash FROM audit_events WHERE log = ? ORDER BY log_index",
            (COLLABORATION,),
        ).fetchall():
            frontier.append(bytes(leaf))
            origin = f"{LOG_SIGNER.name}/{PARENT}"
            note = LOG_SIGNER.sign(Checkpoint(origin, frontier.size, frontier.root()).body())
            db.execute(
                "UPDATE audit_checkpoints SET signed_note = ? WHERE log = ? AND tree_size = ?",
                (note, COLLABORATION, frontier.size),
            )
        db.execute(
            "UPDATE audit_logs SET frontier = ? WHERE log = ?",
            (frontier.to_bytes(), COLLABORATION),
        )
        db.execute("COMMIT")
    db.close()


def test_a_history_resigned_with_the_key_is_caught_by_the_quorum(
    pki: DemoPki, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with witnessed_server(pki, data_dir) as server:
        make_events(server, tmp_path, 10)
        both_witness(server, tmp_path)
    resign_everything(data_dir)
    # With the key, the history is self-consistent: the store alone cannot tell.
    assert all(r.ok for r in check_logs(data_dir, NoteVerifier(LOG_SIGNER.verifier_key)))
    with witnessed_server(pki, data_dir) as server:
        verdict = new_auditor(server, tmp_path / "auditor")
        assert not verdict.ok
        assert "does not verify" in (verdict.problem or "")
        refused = witness(server, "brightmart", BRAND_WITNESS, tmp_path / "brightmart")
        assert not refused.ok  # type: ignore[attr-defined]


def test_witness_and_verify_commands(pki: DemoPki, tmp_path: Path) -> None:
    runner = CliRunner()
    key = tmp_path / "witness.key"
    made = runner.invoke(
        partner_main, ["audit", "witness-keygen", "--name", "witness.cli.test", "--out", str(key)]
    )
    assert made.exit_code == 0, made.output
    assert key.stat().st_mode & 0o777 == 0o600
    public = WitnessSigner.from_key(key.read_text()).verifier_key
    assert public in made.output.replace("\n", "")
    witnesses = {"witnesses": [{"partner": "ledger", "public_key": public}]}
    with running_server(pki, tmp_path / "data", collaboration=witnesses) as server:
        make_events(server, tmp_path, 5)
        witness_args = [
            "audit", "witness", f"--collaboration={COLLABORATION}", f"--witness-key={key}",
            f"--log-key={LOG_SIGNER.verifier_key}", f"--state-dir={tmp_path / 'ws'}",
        ]  # fmt: skip
        done = runner.invoke(partner_main, witness_args, env=env_for(server, "ledger"))
        assert done.exit_code == 0, done.output
        assert "cosigned checkpoint" in done.output
        verify_args = [
            "audit", "verify", f"--collaboration={COLLABORATION}",
            f"--log-key={LOG_SIGNER.verifier_key}", f"--witness-key={public}", "--quorum=1",
            f"--state-dir={tmp_path / 'as'}",
        ]  # fmt: skip
        verified = runner.invoke(partner_main, verify_args, env=env_for(server, "ledger"))
        assert verified.exit_code == 0, verified.output
        assert "cosigned by: witness.cli.test" in verified.output
        assert "not yet under the checkpoint" in verified.output


def test_witness_intervals() -> None:
    assert [parse_interval(t) for t in ("60s", "5m", "1h", "90")] == [60, 300, 3600, 90]
    for bad in ("0s", "-5", "soon", "", "9999h"):
        with pytest.raises(ValueError, match=r"not|could not convert|^$"):
            parse_interval(bad)
