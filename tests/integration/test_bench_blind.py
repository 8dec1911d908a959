"""The double-blind benchmark at a small size: its flow runs and every count it checks holds.

`bench.blind` is not a test (it never fails on a time); this runs its scenarios on the real
server at the smallest size a report accepts, so that the benchmark cannot rot between
full runs. OpenMined PSI is left out here: it installs into a virtual environment of its
own from the package index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import blind

ROWS = 1_000  # the benchmark server's minimum dataset size


@pytest.mark.slow
def test_three_brands_reach_a_checked_three_way_report(tmp_path: Path) -> None:
    results = blind.three_way(tmp_path, ROWS, np.random.default_rng(1))

    assert results["problems"] == []
    assert results["figures_released"] > 0
    phases = [p["phase"] for p in results["phases"]]
    assert phases == [
        "upload+mask acme",
        "upload+mask brightmart",
        "upload+mask corvid",
        "hops by acme",
        "hops by brightmart",
        "hops by corvid",
        "report",
    ]  # one round of hops: each brand masks both other datasets
    assert "Double-blind" in blind.render_three_way(results)


@pytest.mark.slow
def test_two_brands_match_the_planted_overlap_without_openmined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blind, "openmined_python", lambda: (None, "not installed in tests"))

    results = blind.versus_psi(tmp_path, ROWS, np.random.default_rng(2))

    assert results["problems"] == []
    assert results["figures_released"] == results["figures"]  # both directions, both sizes
    assert results["openmined"] is None
    assert "not installed in tests" in blind.render_versus_psi(results)
