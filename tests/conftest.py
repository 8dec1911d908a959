"""Fixtures shared by every test: the test PKI and a running server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleanroom.tls.pki import DemoPki
from tests.support import RunningServer, make_pki, running_server


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server(pki: DemoPki, tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(pki, tmp_path / "data") as running:
        yield running


SPARK_MASTER = "local[2,2]"  # two cores; a task may fail once and be retried


@pytest.fixture(scope="session")
def spark_faults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a test plants tokens that make Spark's Python workers die (tests.spark_faults)."""
    return tmp_path_factory.mktemp("spark-faults")


@pytest.fixture(scope="session")
def spark_engine(spark_faults: Path) -> Iterator[dict[str, Any]]:
    """The `[server.engine]` table of a Spark engine; its session is shared by every test.

    Starting Spark takes seconds, so one session serves the whole test run: servers
    configured with this table find it active and use it.
    """
    from cleanroom.matching.spark import start_session
    from tests.support import ROOT

    settings = {
        "spark.python.daemon.module": "tests.spark_faults",
        "spark.executorEnv.PYTHONPATH": str(ROOT),
        "spark.executorEnv.CLEANROOM_TEST_SPARK_FAULTS": str(spark_faults),
        "spark.sql.shuffle.partitions": "4",
        "spark.ui.enabled": "false",
        "spark.driver.memory": "1g",
    }
    session, _ = start_session(SPARK_MASTER, settings, probe_seconds=120)
    try:
        yield {"kind": "spark", "master": SPARK_MASTER, "settings": settings}
    finally:
        session.stop()
