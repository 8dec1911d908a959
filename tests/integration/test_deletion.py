"""Deletion and retention: what a brand deletes (or what expires) is gone, every byte of it;
reports over it stay, holding aggregates only, and say that an input was deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from cleanroom.tls.pki import DemoPki
from cleanroom.usecases.retention import CALLER, METHOD, sweep
from tests.privacy.attack import fresh, upload
from tests.support import COLLABORATION, files_under, running_server

PARENT = f"collaborations/{COLLABORATION}"
WINDOW = 8


def windows(digests: list[bytes]) -> set[bytes]:
    return {d[i : i + WINDOW] for d in digests for i in range(32 - WINDOW + 1)}


def remaining(data_dir: Path, secrets: set[bytes]) -> list[str]:
    """Files under the data directory holding any 8-byte window of the digests."""
    found = []
    for path in files_under(data_dir):
        data = path.read_bytes()
        if any(data[i : i + WINDOW] in secrets for i in range(len(data) - WINDOW + 1)):
            found.append(str(path))
    return found


def test_a_deleted_dataset_leaves_no_byte_and_reports_say_so(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with running_server(pki, tmp_path / "data") as server:
        shared, own = fresh(rng, 100), fresh(rng, 300)
        mine = upload(server, "acme", tmp_path, shared + own)
        theirs = upload(server, "brightmart", tmp_path, shared + fresh(rng, 100))
        report = server.client("acme").create_report(PARENT, base=mine, others=[theirs])
        assert list(report.deleted_inputs) == []
        assert remaining(server.data_dir, windows(own))  # the scan does find live data
        server.client("acme").delete_dataset(mine)
        assert remaining(server.data_dir, windows(own)) == []
        kept = server.client("acme").get_report(report.name)
        assert list(kept.deleted_inputs) == [mine]
        assert kept.dataset_sizes == report.dataset_sizes
        (event,) = server.events("DeleteDataset")
        assert (event.outcome.status_code, event.resources) == ("OK", [mine])


def test_retention_deletes_expired_datasets_and_logs_it(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with running_server(pki, tmp_path / "data", collaboration={"retention_days": 30}) as server:
        own = fresh(rng, 200)
        old = upload(server, "acme", tmp_path, own)
        room = server.clean_room
        assert sweep(room.config, room.datasets, room.audit_log) == []  # nothing is 30 days old
        later = datetime.now(UTC) + timedelta(days=31)
        (expired,) = sweep(room.config, room.datasets, room.audit_log, now=later)
        assert str(expired.name) == old
        assert list(server.client("acme").list_datasets(PARENT)) == []
        assert remaining(server.data_dir, windows(own)) == []
        (event,) = server.events(METHOD)
        assert (event.caller, event.resources) == (CALLER, [old])
        assert event.request_summary["retention_days"] == 30
