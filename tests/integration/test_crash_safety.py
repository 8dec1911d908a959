"""Crash safety: SIGKILL the server at random moments of uploads, reports and deletions.

After each kill the data directory is opened again, as a restarted server does, and must
hold: no partial dataset visible; every upload the server acknowledged intact; no
scratch or orphan file left; a budget that equals what the stored reports spent; a query
log that verifies. Then the server restarts on the same directory for the next trial.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from cleanroom.audit.check import check_logs
from cleanroom.config import load_config
from cleanroom.demo.deployment import free_loopback_port, loopback_connection
from cleanroom.privacy.budget import to_micro
from cleanroom.proofs.signed_note import NoteVerifier
from cleanroom.tls.pki import DemoPki
from cleanroom.usecases.clean_room import CleanRoom
from partners.client import CleanRoomClient
from partners.errors import PartnerError
from tests.support import (
    COLLABORATION,
    LOG_SIGNER,
    digest_array,
    random_digests,
    write_config,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
TRIALS = 20


def client_for(pki: DemoPki, port: int, partner: str) -> CleanRoomClient:
    return CleanRoomClient(loopback_connection(pki, partner, port), timeout=10)


def workload(
    pki: DemoPki,
    port: int,
    tmp_path: Path,
    trial: int,
    *,
    acknowledged: dict[str, str],
    deleting: dict[str, str],
    stop: threading.Event,
) -> None:
    """Uploads, reports and deletions until the server dies; notes every acknowledged upload.

    A dataset whose deletion was asked for leaves `acknowledged` before the call, into
    `deleting`: when the server dies during the call, the deletion may or may not have
    committed, and either is right.
    """
    rng = np.random.default_rng(trial)
    acme, brightmart = client_for(pki, port, "acme"), client_for(pki, port, "brightmart")
    try:
        step = 0
        while not stop.is_set():
            step += 1
            dataset_id = f"t{trial}-{step}"
            path = write_digest_file(
                tmp_path / f"{dataset_id}.parquet",
                {"email": digest_array(random_digests(rng, int(rng.integers(2_000, 30_000))))},
            )
            try:
                brand = acme if step % 2 else brightmart
                made = brand.upload(
                    path, dataset_id=f"{'acme' if step % 2 else 'brightmart'}-{dataset_id}"
                )
                acknowledged[made.name] = made.checksum
                names = list(acknowledged)
                mine = [n for n in names if "/acme-" in n]
                theirs = [n for n in names if "/brightmart-" in n]
                if mine and theirs:
                    acme.create_report(PARENT, base=mine[-1], others=[theirs[-1]])
                if len(mine) > 2 and step % 3 == 0:
                    deleting[mine[0]] = acknowledged.pop(mine[0])
                    acme.delete_dataset(mine[0])
                    deleting.pop(mine[0])
            except PartnerError:
                return  # the server is gone: this trial's work ends here
    finally:
        acme.close()
        brightmart.close()


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cleanroom", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def check_data_dir(
    config_path: Path, acknowledged: dict[str, str], deleting: dict[str, str]
) -> None:
    """Opens the data directory as a restarting server does, and checks every invariant."""
    config = load_config(config_path)
    room = CleanRoom(config)  # removes scratch and orphan files, as a restart does
    try:
        data_dir = config.server.data_dir
        assert list((data_dir / "tmp").iterdir()) == []
        records = room.catalog.datasets(COLLABORATION, owner=None, after="", limit=10**6)
        assert {p.name for p in (data_dir / "datasets").iterdir()} == {r.file_name for r in records}
        for record in records:
            table = room.files.open(record.file_name)  # readable whole, with every row
            assert table.num_rows == record.row_count
        visible = {str(r.name): r.checksum for r in records}
        for name, checksum in acknowledged.items():  # every acknowledged upload is intact
            assert visible.get(name) == checksum, name
        for name, checksum in deleting.items():  # gone, or still there and intact
            assert visible.get(name) in (None, checksum), name
        policy = config.collaborations[COLLABORATION].policy
        reports = room.catalog.reports(COLLABORATION, creator=None, after=0, limit=10**6)
        spent = sum(to_micro(r.noise.epsilon) for _, r in reports if r.noise)
        assert (
            room.catalog.budget(COLLABORATION, to_micro(policy.epsilon_budget)).spent_micro == spent
        )
    finally:
        room.close()
    results = check_logs(config.server.data_dir, NoteVerifier(LOG_SIGNER.verifier_key))
    assert all(r.ok for r in results), [r.problem for r in results if not r.ok]


def test_sigkill_at_random_points_loses_nothing_committed(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(2026)
    port = free_loopback_port()
    config = write_config(
        tmp_path / "cleanroom.toml",
        pki,
        tmp_path / "data",
        listen=f"127.0.0.1:{port}",
        noise=True,
        epsilon_budget=1000.0,
        minimum_dataset_size=10,
    )
    acknowledged: dict[str, str] = {}
    deleting: dict[str, str] = {}
    for trial in range(TRIALS):
        server = start(config)
        stop = threading.Event()
        worker = threading.Thread(
            target=workload,
            args=(pki, port, tmp_path, trial),
            kwargs={"acknowledged": acknowledged, "deleting": deleting, "stop": stop},
        )
        try:
            ready = client_for(pki, port, "operator")
            ready.wait_until_ready(30)  # serving now
            ready.close()
            worker.start()
            threading.Event().wait(float(rng.uniform(0.05, 0.8)))  # a random moment of the work
        finally:
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=30)
            stop.set()
            if worker.is_alive():
                worker.join(timeout=60)
        assert not worker.is_alive()
        check_data_dir(config, acknowledged, deleting)
    assert len(acknowledged) >= TRIALS // 2  # the trials did commit work to lose
