"""The query log against its own operator: tampering with the stored log, server stopped.

Each attack is what an operator with write access to the data directory (and no signing
key) can do to the real SQLite database between two runs of a real server. The offline
check names the first bad index, the server at its next start refuses to serve (and so
to sign over) the collaboration's log, and a new auditor's verification fails naming the
index; none of them ends in a traceback.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cleanroom.audit.check import check_logs
from cleanroom.audit.log import AuditFilter
from cleanroom.demo.deployment import free_loopback_port, loopback_connection
from cleanroom.names import DatasetName
from cleanroom.proofs import merkle
from cleanroom.proofs.signed_note import Checkpoint, NoteVerifier
from cleanroom.tls.pki import DemoPki
from partners.audit.verify import AuditorState, verify_log
from partners.cli import main as partner_main
from partners.client import CleanRoomClient
from partners.errors import AccessDeniedError, ServerError
from tests.integration.test_audit_witnesses import (
    BRAND_WITNESS,
    WITNESSED,
    both_witness,
    new_auditor,
    witness,
)
from tests.integration.test_partner_cli import env_for
from tests.support import (
    COLLABORATION,
    LOG_SIGNER,
    RunningServer,
    dataset_name,
    digest_array,
    random_digests,
    running_server,
    write_config,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
VERIFIER = NoteVerifier(LOG_SIGNER.verifier_key)
EVENTS = 40
Attack = Callable[[sqlite3.Connection], int]  # changes the store, returns the first bad index


def make_events(server: RunningServer, tmp_path: Path, count: int) -> None:
    """At least `count` events: an upload, a report, reads allowed and refused."""
    name = dataset_name("acme-log")
    if not server.clean_room.catalog.dataset(DatasetName.parse(name)):
        digests = random_digests(np.random.default_rng(0), 30)
        path = write_digest_file(tmp_path / "d.parquet", {"email": digest_array(digests)})
        server.client("acme").upload(path, dataset_id="acme-log")
        server.client("brightmart").upload(path, dataset_id="brightmart-log")
        server.client("acme").create_report(
            PARENT, base=name, others=[dataset_name("brightmart-log")]
        )
    while len(server.events()) < count:
        with contextlib.suppress(AccessDeniedError):
            server.client("brightmart").get_dataset(name)
        server.client("acme").get_dataset(name)


def rows(db: sqlite3.Connection) -> list[tuple[int, bytes]]:
    return [
        (int(index), bytes(entry))
        for index, entry in db.execute(
            "SELECT log_index, entry FROM audit_events WHERE log = ? ORDER BY log_index",
            (COLLABORATION,),
        )
    ]


def store(db: sqlite3.Connection, index: int, entry: bytes) -> None:
    """Rewrites one event, its leaf hash and filter columns, as the server would have."""
    data = json.loads(entry) if entry.startswith(b'{"') else {}
    db.execute(
        "UPDATE audit_events SET entry = ?, leaf_hash = ?, event_time = ?, caller = ?, method = ?"
        " WHERE log = ? AND log_index = ?",
        (
            entry,
            merkle.leaf_hash(entry),
            data.get("event_time", ""),
            data.get("caller", ""),
            data.get("method", ""),
            COLLABORATION,
            index,
        ),
    )


def refresh_frontier(db: sqlite3.Connection) -> None:
    """Recomputes the stored tree head from the stored leaves: no key needed."""
    frontier = merkle.Frontier()
    for (leaf,) in db.execute(
        "SELECT leaf_hash FROM audit_events WHERE log = ? ORDER BY log_index", (COLLABORATION,)
    ):
        frontier.append(bytes(leaf))
    db.execute(
        "UPDATE audit_logs SET tree_size = ?, frontier = ? WHERE log = ?",
        (frontier.size, frontier.to_bytes(), COLLABORATION),
    )


def relabel(entry: bytes, **changes: str) -> bytes:
    data = json.loads(entry)
    data.update(changes)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rewrite_one_event(db: sqlite3.Connection) -> int:
    """Entry, leaf and frontier rewritten together: one refusal turned into a success."""
    index, entry = rows(db)[9]
    store(db, index, relabel(entry, caller="partners/corvid"))
    refresh_frontier(db)
    return index


def swap_and_reindex(db: sqlite3.Connection) -> int:
    """Two events swapped, each renumbered to its new place, leaves and frontier redone."""
    (i, a), (j, b) = rows(db)[5], rows(db)[12]
    store(db, i, relabel(b, index=i))  # type: ignore[arg-type]
    store(db, j, relabel(a, index=j))  # type: ignore[arg-type]
    refresh_frontier(db)
    return i


def swap_the_last_two(db: sqlite3.Connection) -> int:
    (i, a), (j, b) = rows(db)[-2:]
    store(db, i, relabel(b, index=i))  # type: ignore[arg-type]
    store(db, j, relabel(a, index=j))  # type: ignore[arg-type]
    refresh_frontier(db)
    return i


def delete_checkpoints(db: sqlite3.Connection) -> int:
    db.execute("DELETE FROM audit_checkpoints WHERE log = ?", (COLLABORATION,))
    return 0


def rewrite_tail(db: sqlite3.Connection) -> int:
    """The last 23 events rewritten and their checkpoints dropped."""
    events = rows(db)
    first = len(events) - 23
    for index, entry in events[first:]:
        store(db, index, relabel(entry, caller="partners/corvid"))
    db.execute(
        "DELETE FROM audit_checkpoints WHERE log = ? AND tree_size > ?", (COLLABORATION, first)
    )
    refresh_frontier(db)
    return first


def relabel_report_column(db: sqlite3.Connection) -> int:
    """The report's method column changed, so that a filtered listing would not show it."""
    (index,) = db.execute(
        "SELECT log_index FROM audit_events WHERE log = ? AND method LIKE ? ORDER BY log_index",
        (COLLABORATION, "%/CreateOverlapReport"),
    ).fetchone()
    db.execute(
        "UPDATE audit_events SET method = ? WHERE log = ? AND log_index = ?",
        ("/cleanroom.v1.PartnerService/GetDataset", COLLABORATION, index),
    )
    return int(index)


def not_json(db: sqlite3.Connection) -> int:
    """An entry that is no longer JSON (leaf and frontier made to match it)."""
    index = rows(db)[7][0]
    store(db, index, b"\xffnot json")
    refresh_frontier(db)
    return index


ATTACKS = [
    rewrite_one_event,
    swap_and_reindex,
    swap_the_last_two,
    delete_checkpoints,
    rewrite_tail,
    relabel_report_column,
    not_json,
]


def tamper(data_dir: Path, attack: Attack) -> int:
    with sqlite3.connect(data_dir / "cleanroom.sqlite3", isolation_level=None) as db:
        db.execute("BEGIN IMMEDIATE")
        bad_index = attack(db)
        db.execute("COMMIT")
    db.close()
    return bad_index


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.__name__ for a in ATTACKS])
def test_tampering_is_caught_offline_at_start_and_by_a_new_auditor(
    pki: DemoPki, tmp_path: Path, attack: Attack
) -> None:
    data_dir = tmp_path / "data"
    with running_server(pki, data_dir, collaboration=WITNESSED) as server:
        make_events(server, tmp_path, EVENTS)
        both_witness(server, tmp_path)
    bad_index = tamper(data_dir, attack)

    offline = {r.log: r for r in check_logs(data_dir, VERIFIER)}[COLLABORATION]
    assert not offline.ok
    assert offline.first_bad_index == bad_index, offline.problem

    with running_server(pki, data_dir, collaboration=WITNESSED) as server:
        before = server.clean_room.audit_log.size(COLLABORATION)
        # A member is refused; the server signs nothing more over the rewritten log.
        with pytest.raises(ServerError) as refused:
            server.client("acme").get_dataset(dataset_name("acme-log"))
        assert refused.value.code == "UNAVAILABLE"
        assert refused.value.reason == "AUDIT_LOG_INCONSISTENT"
        assert refused.value.metadata["first_bad_index"] == str(bad_index)
        verdict = new_auditor(server, tmp_path / "auditor")  # witnesses' quorum of 2
        assert server.clean_room.audit_log.size(COLLABORATION) == before
        # The refusals are in the server log instead, as every call is logged somewhere.
        server_log = server.clean_room.audit_log.events("-", AuditFilter(), after=-1, limit=100)
        assert [e.outcome.reason for e in server_log][-2:] == ["AUDIT_LOG_INCONSISTENT"] * 2
        # Outsiders are refused for who they are, not told about the log.
        with pytest.raises(AccessDeniedError):
            server.client("outsider").get_dataset(dataset_name("acme-log"))
    assert not verdict.ok
    assert verdict.first_bad_index == bad_index, verdict.problem


def resign(db: sqlite3.Connection) -> None:
    """What an operator holding the signing key adds: every checkpoint signed anew."""
    frontier = merkle.Frontier()
    db.execute("DELETE FROM audit_checkpoints WHERE log = ?", (COLLABORATION,))
    for (leaf,) in db.execute(
        "SELECT leaf_hash FROM audit_events WHERE log = ? ORDER BY log_index", (COLLABORATION,)
    ).fetchall():
        frontier.append(bytes(leaf))
        body = Checkpoint(f"{LOG_SIGNER.name}/{PARENT}", frontier.size, frontier.root()).body()
        db.execute(
            "INSERT INTO audit_checkpoints VALUES (?, ?, ?)",
            (COLLABORATION, frontier.size, LOG_SIGNER.sign(body)),
        )


REWRITES = [rewrite_one_event, swap_and_reindex, rewrite_tail]


@pytest.mark.parametrize("attack", REWRITES, ids=[a.__name__ for a in REWRITES])
def test_a_rewrite_signed_with_the_key_is_caught_by_the_witness_quorum(
    pki: DemoPki, tmp_path: Path, attack: Attack
) -> None:
    data_dir = tmp_path / "data"
    with running_server(pki, data_dir, collaboration=WITNESSED) as server:
        make_events(server, tmp_path, EVENTS)
        both_witness(server, tmp_path)

    def rewrite_and_resign(db: sqlite3.Connection) -> int:
        bad_index = attack(db)
        resign(db)
        return bad_index

    bad_index = tamper(data_dir, rewrite_and_resign)
    # Signed anew, the store is consistent: neither the offline check nor the server can tell.
    assert all(r.ok for r in check_logs(data_dir, VERIFIER))
    with running_server(pki, data_dir, collaboration=WITNESSED) as server:
        verdict = new_auditor(server, tmp_path / "auditor")
        refused = witness(server, "brightmart", BRAND_WITNESS, tmp_path / "brightmart")
    assert not verdict.ok
    # The witnesses' signatures no longer fit the checkpoints the server shows; one root
    # cannot tell which event changed, only that one up to the witnessed size did.
    assert "does not verify" in (verdict.problem or "")
    assert verdict.first_bad_index is not None
    assert bad_index <= verdict.first_bad_index < EVENTS + 6, verdict.problem
    assert not refused.ok  # type: ignore[attr-defined]
    assert "a fork" in refused.problem  # type: ignore[attr-defined]


def test_a_relabelled_column_hides_nothing_from_a_filtered_listing(
    server: RunningServer, tmp_path: Path
) -> None:
    make_events(server, tmp_path, 12)
    ledger = server.client("ledger")
    reports = list(ledger.list_audit_events(PARENT, method="CreateOverlapReport"))
    assert len(reports) == 1
    with sqlite3.connect(server.data_dir / "cleanroom.sqlite3") as db:
        db.execute(
            "UPDATE audit_events SET method = 'x', caller = 'y', event_time = '1970'"
            " WHERE log = ? AND log_index = ?",
            (COLLABORATION, reports[0].index),
        )
    db.close()
    again = list(ledger.list_audit_events(PARENT, method="CreateOverlapReport"))
    assert [e.index for e in again] == [reports[0].index]
    assert list(ledger.list_audit_events(PARENT, caller="partners/acme", method="Create"
                                         "OverlapReport")) == again  # fmt: skip


def test_an_empty_log_verifies_as_size_zero(pki: DemoPki, tmp_path: Path) -> None:
    with running_server(pki, tmp_path / "data") as server:
        verdict = verify_log(server.client("ledger"), PARENT, VERIFIER, AuditorState(tmp_path))
    assert verdict.ok, verdict.problem
    assert verdict.events_checked == 0
    assert verdict.checkpoint is None
    # The auditor's own calls came after the empty checkpoint: listed, not yet proved.
    assert verdict.events_listed >= 1


def test_a_bad_signature_on_the_latest_checkpoint_says_so(pki: DemoPki, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(pki, data_dir) as server:
        make_events(server, tmp_path, 8)
        size = server.clean_room.audit_log.size(COLLABORATION)

    def forge(db: sqlite3.Connection) -> int:
        (note,) = db.execute(
            "SELECT signed_note FROM audit_checkpoints WHERE log = ? AND tree_size = ?",
            (COLLABORATION, size),
        ).fetchone()
        head, _, signature = note.rstrip("\n").rpartition(" ")
        flipped = signature[:20] + ("A" if signature[20] != "A" else "B") + signature[21:]
        db.execute(
            "UPDATE audit_checkpoints SET signed_note = ? WHERE log = ? AND tree_size = ?",
            (f"{head} {flipped}\n", COLLABORATION, size),
        )
        return size - 1

    tamper(data_dir, forge)
    offline = {r.log: r for r in check_logs(data_dir, VERIFIER)}[COLLABORATION]
    assert offline.first_bad_index == size - 1
    assert f"checkpoint {size}: the signature" in (offline.problem or "")
    with running_server(pki, data_dir) as server:
        verdict = verify_log(server.client("ledger"), PARENT, VERIFIER, AuditorState(tmp_path))
    assert verdict.first_bad_index == size - 1
    assert "server refuses its own log" in (verdict.problem or "")
    assert "does not verify" in (verdict.problem or "")


def test_audit_list_checks_what_it_shows_against_the_hashed_bytes(
    server: RunningServer, tmp_path: Path
) -> None:
    make_events(server, tmp_path, 6)
    listing = ["audit", "list", f"--collaboration={COLLABORATION}"]
    result = CliRunner().invoke(partner_main, listing, env=env_for(server, "ledger"))
    assert result.exit_code == 0, result.output
    with sqlite3.connect(server.data_dir / "cleanroom.sqlite3") as db:
        db.execute(
            "UPDATE audit_events SET entry = ? WHERE log = ? AND log_index = 2",
            (b"\xffnot json", COLLABORATION),
        )
    db.close()
    result = CliRunner().invoke(partner_main, listing, env=env_for(server, "ledger"))
    assert result.exit_code == 1
    assert "FAILED: event 2 is not JSON" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_server_process_names_the_first_bad_index_in_its_own_log(
    pki: DemoPki, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with running_server(pki, data_dir) as server:
        make_events(server, tmp_path, 12)
    bad_index = tamper(data_dir, rewrite_one_event)
    port = free_loopback_port()
    config = write_config(tmp_path / "cleanroom.toml", pki, data_dir, listen=f"127.0.0.1:{port}")
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cleanroom", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with CleanRoomClient(loopback_connection(pki, "acme", port), timeout=30) as acme:
            acme.wait_until_ready(60)
            with pytest.raises(ServerError) as refused:
                acme.get_dataset(dataset_name("acme-log"))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert refused.value.reason == "AUDIT_LOG_INCONSISTENT"
    text = (tmp_path / "server.log").read_text()
    assert f"first bad index {bad_index}" in " ".join(text.split())
    assert "Traceback" not in text
