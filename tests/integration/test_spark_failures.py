"""Failures on Spark, over the real server: a killed Python worker is retried by Spark; a job
that keeps failing, or whose call is cancelled, makes no report and spends nothing.

Workers are killed (or stuck) by the test daemon `tests.spark_faults` when a task reaches
them, so that each fault hits a report's own job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cleanroom.tls.pki import DemoPki
from partners.client import CleanRoomClient
from partners.errors import UnavailableError
from tests import spark_faults as daemon
from tests.privacy.attack import fresh, upload
from tests.support import COLLABORATION, RunningServer, running_server

PARENT = f"collaborations/{COLLABORATION}"
pytestmark = pytest.mark.slow


@pytest.fixture
def faults(spark_faults: Path) -> Iterator[Path]:
    """The fault tokens' directory, emptied after the test."""
    yield spark_faults
    daemon.clear(spark_faults)


@pytest.fixture
def server(pki: DemoPki, tmp_path: Path, spark_engine: dict[str, Any]) -> Iterator[RunningServer]:
    """A Spark server with noisy reports, so that a report spends epsilon."""
    engine = {**spark_engine, "location": str(tmp_path / "ranges"), "ranges": 8, "driver_rows": 0}
    with running_server(pki, tmp_path / "data", server={"engine": engine}, noise=True) as running:
        yield running


def two_datasets(server: RunningServer, tmp_path: Path) -> tuple[str, str]:
    rng = np.random.default_rng(5)
    shared = fresh(rng, 300)
    mine = upload(server, "acme", tmp_path, shared + fresh(rng, 200))
    theirs = upload(server, "brightmart", tmp_path, shared + fresh(rng, 100))
    return mine, theirs


def test_a_killed_worker_is_retried_by_spark(
    server: RunningServer, tmp_path: Path, faults: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine, theirs = two_datasets(server, tmp_path)
    daemon.plant(faults, 1)
    with caplog.at_level(logging.INFO, logger="cleanroom.matching.spark"):
        report = server.client("acme").create_report(PARENT, base=mine, others=[theirs])
    assert daemon.tokens_left(faults) == 0  # a worker did die during the report
    assert [s.row_count.HasField("value") for s in report.dataset_sizes] == [True, True]
    (done,) = [r.getMessage() for r in caplog.records if " done in " in r.getMessage()]
    assert " 1 failed," in done  # the lost task attempt, then Spark's retry
    assert server.client("acme").get_budget(PARENT).spent_epsilon == 1.0


def test_a_job_that_keeps_failing_fails_the_report_and_spends_nothing(
    server: RunningServer, tmp_path: Path, faults: Path
) -> None:
    mine, theirs = two_datasets(server, tmp_path)
    daemon.plant(faults, 200)  # every attempt of every task dies
    with pytest.raises(UnavailableError) as failed:
        server.client("acme").create_report(PARENT, base=mine, others=[theirs])
    assert failed.value.reason == "MATCHING_FAILED"
    daemon.clear(faults)
    client = server.client("acme")
    assert client.get_budget(PARENT).spent_epsilon == 0.0
    assert list(client.list_reports(PARENT)) == []
    (event,) = server.events("CreateOverlapReport")
    assert (event.outcome.status_code, event.outcome.reason) == ("UNAVAILABLE", "MATCHING_FAILED")
    assert event.outcome.epsilon_spent == 0.0
    # The engine is fine afterwards: the same report is made at once.
    assert client.create_report(PARENT, base=mine, others=[theirs]).dataset_sizes


def test_a_cancelled_call_cancels_its_spark_job(
    server: RunningServer, tmp_path: Path, faults: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine, theirs = two_datasets(server, tmp_path)
    daemon.plant(faults, 1, "hang")  # one task never ends by itself
    impatient = CleanRoomClient(server.connection("acme"), timeout=5)
    with caplog.at_level(logging.INFO, logger="cleanroom.matching.spark"):
        with pytest.raises(UnavailableError):  # the client's deadline passed
            impatient.create_report(PARENT, base=mine, others=[theirs])
        assert server.interceptor.drain(120)  # the handler ended: its job was cancelled
    impatient.close()
    tracker = server.clean_room.reports.matcher.session.sparkContext.statusTracker()  # type: ignore[attr-defined]
    assert tracker.getActiveJobsIds() == []
    assert any(" failed in " in r.getMessage() for r in caplog.records)
    client = server.client("acme")
    assert client.get_budget(PARENT).spent_epsilon == 0.0
    assert list(client.list_reports(PARENT)) == []
    (event,) = server.events("CreateOverlapReport")
    assert event.outcome.status_code in ("CANCELLED", "DEADLINE_EXCEEDED")
