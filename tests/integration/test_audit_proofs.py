"""The query log is tamper-evident: auditors verify it with the pinned key and nothing else.

Tampering happens on the real database of a real server, through a second SQLite
connection, as an operator with file access could do it; `audit verify` must fail and
name the first bad index, and `cleanroom audit check` must agree.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cleanroom.audit.check import check_logs
from cleanroom.names import DatasetName
from cleanroom.proofs import merkle
from cleanroom.proofs.signed_note import NoteSigner, NoteVerifier
from cleanroom.tls.pki import DemoPki
from partners.audit.export import export_events
from partners.audit.verify import AuditorState, Verdict, verify_log
from partners.errors import AccessDeniedError
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
VERIFIER = NoteVerifier(LOG_SIGNER.verifier_key)


def make_events(server: RunningServer, tmp_path: Path, count: int) -> None:
    """At least `count` events in the collaboration's log, allowed and refused ones."""
    name = dataset_name("acme-log")
    if not server.clean_room.catalog.dataset(DatasetName.parse(name)):
        digests = random_digests(np.random.default_rng(0), 30)
        path = write_digest_file(tmp_path / "d.parquet", {"email": digest_array(digests)})
        server.client("acme").upload(path, dataset_id="acme-log")
    while len(server.events()) < count:
        with contextlib.suppress(AccessDeniedError):
            server.client("brightmart").get_dataset(name)
        server.client("acme").get_dataset(name)


def verify(server: RunningServer, state: Path) -> Verdict:
    return verify_log(server.client("ledger"), PARENT, VERIFIER, AuditorState(state))


def tamper(server: RunningServer, statements: Callable[[sqlite3.Connection], None]) -> None:
    with sqlite3.connect(server.data_dir / "cleanroom.sqlite3", isolation_level=None) as db:
        db.execute("BEGIN IMMEDIATE")
        statements(db)
        db.execute("COMMIT")
    db.close()


def entry(db: sqlite3.Connection, index: int) -> tuple[bytes, bytes]:
    return db.execute(
        "SELECT entry, leaf_hash FROM audit_events WHERE log = ? AND log_index = ?",
        (COLLABORATION, index),
    ).fetchone()


def test_proofs_over_the_api_verify(server: RunningServer, tmp_path: Path) -> None:
    make_events(server, tmp_path, 12)
    ledger = server.client("ledger")
    checkpoint = VERIFIER.open_checkpoint(ledger.get_checkpoint(PARENT))
    assert checkpoint.origin == f"cleanroom.test/{PARENT}"
    size = checkpoint.tree_size
    events = list(ledger.list_audit_events(PARENT, end_index=size))
    assert len(events) == size
    leaves = [merkle.leaf_hash(e.entry) for e in events]
    assert [e.leaf_hash for e in events] == leaves
    assert merkle.root(leaves) == checkpoint.root_hash
    for index in (0, size // 2, size - 1):
        proof = ledger.inclusion_proof(PARENT, index, size)
        assert merkle.verify_inclusion(index, size, leaves[index], proof, checkpoint.root_hash)
    old = VERIFIER.open_checkpoint(ledger.get_checkpoint(PARENT, 5))
    assert old.tree_size == 5
    assert old.root_hash == merkle.root(leaves[:5])
    proof = ledger.consistency_proof(PARENT, 5, size)
    assert merkle.verify_consistency(5, size, old.root_hash, checkpoint.root_hash, proof)
    # Each of those calls was logged too, after the checkpoint was taken.
    assert server.clean_room.audit_log.size(COLLABORATION) == size + 1 + 1 + 3 + 1 + 1


def test_only_auditors_and_administrators_read_proofs(
    server: RunningServer, tmp_path: Path
) -> None:
    make_events(server, tmp_path, 3)
    with pytest.raises(AccessDeniedError):
        server.client("acme").get_checkpoint(PARENT)
    assert server.events()[-1].outcome.status_code == "PERMISSION_DENIED"
    assert server.client("operator").get_checkpoint(PARENT)


def test_an_untouched_log_verifies_and_keeps_verifying(
    server: RunningServer, tmp_path: Path
) -> None:
    make_events(server, tmp_path, 8)
    first = verify(server, tmp_path / "state")
    assert first.ok, first.problem
    assert first.previous_size is None
    make_events(server, tmp_path, 20)
    second = verify(server, tmp_path / "state")
    assert second.ok, second.problem
    assert second.previous_size == first.events_checked
    assert second.events_checked > first.events_checked
    assert all(r.ok for r in check_logs(server.data_dir, VERIFIER))


def test_a_checkpoint_signed_with_another_key_is_rejected(
    server: RunningServer, tmp_path: Path
) -> None:
    make_events(server, tmp_path, 3)
    stranger = NoteVerifier(NoteSigner.generate("cleanroom.test").verifier_key)
    verdict = verify_log(server.client("ledger"), PARENT, stranger, AuditorState(tmp_path / "s"))
    assert not verdict.ok
    assert "does not verify" in (verdict.problem or "")


def change_one_byte(index: int) -> Callable[[sqlite3.Connection], None]:
    def run(db: sqlite3.Connection) -> None:
        data, _ = entry(db, index)
        changed = data.replace(b"partners/", b"partnerz/", 1)
        assert changed != data
        db.execute(
            "UPDATE audit_events SET entry = ? WHERE log = ? AND log_index = ?",
            (changed, COLLABORATION, index),
        )

    return run


def delete_event(index: int) -> Callable[[sqlite3.Connection], None]:
    def run(db: sqlite3.Connection) -> None:
        db.execute(
            "DELETE FROM audit_events WHERE log = ? AND log_index = ?", (COLLABORATION, index)
        )

    return run


def swap_events(i: int, j: int) -> Callable[[sqlite3.Connection], None]:
    def run(db: sqlite3.Connection) -> None:
        a, b = entry(db, i), entry(db, j)
        for index, (data, leaf) in ((i, b), (j, a)):
            db.execute(
                "UPDATE audit_events SET entry = ?, leaf_hash = ? WHERE log = ? AND log_index = ?",
                (data, leaf, COLLABORATION, index),
            )

    return run


def truncate(size: int) -> Callable[[sqlite3.Connection], None]:
    """Cut the log to `size` events and make it look whole: frontier and checkpoints too."""

    def run(db: sqlite3.Connection) -> None:
        db.execute(
            "DELETE FROM audit_events WHERE log = ? AND log_index >= ?", (COLLABORATION, size)
        )
        db.execute(
            "DELETE FROM audit_checkpoints WHERE log = ? AND tree_size > ?", (COLLABORATION, size)
        )
        leaves = [
            row[0]
            for row in db.execute(
                "SELECT leaf_hash FROM audit_events WHERE log = ? ORDER BY log_index",
                (COLLABORATION,),
            )
        ]
        frontier = merkle.Frontier()
        for leaf in leaves:
            frontier.append(leaf)
        db.execute(
            "UPDATE audit_logs SET tree_size = ?, frontier = ? WHERE log = ?",
            (size, frontier.to_bytes(), COLLABORATION),
        )

    return run


@pytest.mark.parametrize("saved_first", [True, False], ids=["with-saved-state", "first-run"])
@pytest.mark.parametrize(
    ("attack", "bad_index"),
    [(change_one_byte(6), 6), (delete_event(4), 4), (swap_events(3, 9), 3)],
    ids=["change-one-byte", "delete-an-event", "reorder-two-events"],
)
def test_tampering_is_found_at_its_index(
    server: RunningServer,
    tmp_path: Path,
    attack: Callable[[sqlite3.Connection], None],
    bad_index: int,
    saved_first: bool,
) -> None:
    make_events(server, tmp_path, 14)
    if saved_first:
        assert verify(server, tmp_path / "state").ok
    tamper(server, attack)
    verdict = verify(server, tmp_path / "state")
    assert not verdict.ok
    assert verdict.first_bad_index == bad_index, verdict.problem
    offline = {r.log: r for r in check_logs(server.data_dir, VERIFIER)}[COLLABORATION]
    assert offline.first_bad_index == bad_index, offline.problem


def test_truncation_is_found(server: RunningServer, tmp_path: Path) -> None:
    make_events(server, tmp_path, 14)
    assert verify(server, tmp_path / "state").ok
    tamper(server, truncate(7))
    # The running server notices before its next signature, and refuses the log.
    verdict = verify(server, tmp_path / "state")
    assert not verdict.ok
    assert verdict.first_bad_index == 7
    assert "server refuses its own log" in (verdict.problem or "")
    assert "truncated or rewritten" in (verdict.problem or "")


def test_rollback_to_an_older_state_is_found(pki: DemoPki, tmp_path: Path) -> None:
    data_dir, state = tmp_path / "data", tmp_path / "state"
    with running_server(pki, data_dir) as server:
        make_events(server, tmp_path, 6)
    backup = tmp_path / "backup"
    shutil.copytree(data_dir, backup)
    with running_server(pki, data_dir) as server:
        make_events(server, tmp_path, 15)
        assert verify(server, state).ok
    shutil.rmtree(data_dir)
    shutil.copytree(backup, data_dir)
    with running_server(pki, data_dir) as server:
        old_size = server.clean_room.audit_log.size(COLLABORATION)
        verdict = verify(server, state)
    assert not verdict.ok
    assert verdict.first_bad_index == old_size


def test_exported_rows_can_be_checked_later(server: RunningServer, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    make_events(server, tmp_path, 6)
    ledger = server.client("ledger")
    checkpoint = VERIFIER.open_checkpoint(ledger.get_checkpoint(PARENT))
    for file_format in ("jsonl", "csv", "parquet"):
        count = export_events(
            ledger.list_audit_events(PARENT), tmp_path / f"log.{file_format}", file_format
        )
        assert count >= checkpoint.tree_size
    rows = pq.read_table(tmp_path / "log.parquet").to_pylist()
    for row in rows[: checkpoint.tree_size]:
        leaf = merkle.leaf_hash(row["entry"].encode())
        assert row["leaf_hash"] == leaf.hex()
        proof = ledger.inclusion_proof(PARENT, row["index"], checkpoint.tree_size)
        assert merkle.verify_inclusion(
            row["index"], checkpoint.tree_size, leaf, proof, checkpoint.root_hash
        )
