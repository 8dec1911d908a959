"""Fixtures shared by every test: the test PKI and a running server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
