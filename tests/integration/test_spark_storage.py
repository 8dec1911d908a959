"""The Spark engine's range copies: written at commit, all or nothing, gone with their dataset.

The copies live at the configured location, here outside the data directory, so that each
no-byte-left scan covers both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cleanroom.tls.pki import DemoPki
from cleanroom.usecases.retention import sweep
from partners.errors import UnavailableError
from tests.integration.test_deletion import remaining, windows
from tests.privacy.attack import fresh, upload
from tests.support import COLLABORATION, RunningServer, files_under, running_server

PARENT = f"collaborations/{COLLABORATION}"
pytestmark = pytest.mark.slow


@contextmanager
def spark_server(
    pki: DemoPki, tmp_path: Path, spark_engine: dict[str, Any], **options: Any
) -> Iterator[RunningServer]:
    engine = {**spark_engine, "location": str(tmp_path / "copies"), "ranges": 8, "driver_rows": 0}
    with running_server(pki, tmp_path / "data", server={"engine": engine}, **options) as running:
        yield running


def left(tmp_path: Path, secrets: set[bytes]) -> list[str]:
    return remaining(tmp_path / "data", secrets) + remaining(tmp_path / "copies", secrets)


def test_a_deleted_dataset_leaves_no_byte_in_the_copies(
    pki: DemoPki, tmp_path: Path, spark_engine: dict[str, Any]
) -> None:
    rng = np.random.default_rng(11)
    with spark_server(pki, tmp_path, spark_engine) as server:
        shared, own = fresh(rng, 100), fresh(rng, 300)
        mine = upload(server, "acme", tmp_path, shared + own)
        theirs = upload(server, "brightmart", tmp_path, shared + fresh(rng, 100))
        report = server.client("acme").create_report(PARENT, base=mine, others=[theirs])
        assert report.pairwise_overlaps[0].matched_row_count.value == 100
        assert remaining(tmp_path / "copies", windows(own))  # the scan finds the live copy
        server.client("acme").delete_dataset(mine)
        assert left(tmp_path, windows(own)) == []
        assert len([p for p in (tmp_path / "copies").iterdir()]) == 1  # theirs only


def test_retention_removes_the_copies_too(
    pki: DemoPki, tmp_path: Path, spark_engine: dict[str, Any]
) -> None:
    rng = np.random.default_rng(12)
    options = {"collaboration": {"retention_days": 30}}
    with spark_server(pki, tmp_path, spark_engine, **options) as server:
        own = fresh(rng, 200)
        upload(server, "acme", tmp_path, own)
        room = server.clean_room
        later = datetime.now(UTC) + timedelta(days=31)
        assert len(sweep(room.config, room.datasets, room.audit_log, now=later)) == 1
        assert left(tmp_path, windows(own)) == []
        assert files_under(tmp_path / "copies") == []


def test_a_copy_that_cannot_be_written_stores_nothing(
    pki: DemoPki, tmp_path: Path, spark_engine: dict[str, Any]
) -> None:
    rng = np.random.default_rng(13)
    with spark_server(pki, tmp_path, spark_engine) as server:
        own = fresh(rng, 200)
        copies = tmp_path / "copies"
        copies.rmdir()
        copies.write_text("")  # the location is broken (as an unmounted share can be)
        with pytest.raises(UnavailableError) as refused:
            upload(server, "acme", tmp_path, own)
        assert refused.value.reason == "COPY_LOCATION_UNAVAILABLE"
        copies.unlink()
        copies.mkdir()
        assert list(server.client("acme").list_datasets(PARENT)) == []
        assert left(tmp_path, windows(own)) == []
        assert upload(server, "acme", tmp_path, own)  # and works again once repaired


def test_copies_are_written_for_datasets_of_the_memory_engine_and_orphans_removed(
    pki: DemoPki, tmp_path: Path, spark_engine: dict[str, Any]
) -> None:
    rng = np.random.default_rng(14)
    shared = fresh(rng, 150)
    with running_server(pki, tmp_path / "data") as memory:  # no copies
        mine = upload(memory, "acme", tmp_path, shared + fresh(rng, 100))
        theirs = upload(memory, "brightmart", tmp_path, shared + fresh(rng, 100))
        before = memory.client("acme").create_report(PARENT, base=mine, others=[theirs])
    orphan = tmp_path / "copies" / "spring-launch--gone--0123"
    orphan.mkdir(parents=True)
    (orphan / "manifest.json").write_text("{}")  # as left by a crash before its commit
    with spark_server(pki, tmp_path, spark_engine) as server:
        assert not orphan.exists()
        assert len(list((tmp_path / "copies").iterdir())) == 2
        # The other brand's question over the same datasets, now computed on Spark.
        after = server.client("brightmart").create_report(PARENT, base=theirs, others=[mine])
        assert after.name != before.name
        assert pairs(after) == pairs(before) == {(mine, theirs): 150, (theirs, mine): 150}


def pairs(report: Any) -> dict[tuple[str, str], int]:
    return {
        (p.dataset, p.matched_dataset): p.matched_row_count.value for p in report.pairwise_overlaps
    }
