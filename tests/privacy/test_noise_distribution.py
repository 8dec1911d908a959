"""The released noise follows the stated discrete Laplace distribution.

Not accidentally zero, not floating-point, not mis-scaled: the noise on many releases is
tested against the probability mass function the report states, with a chi-square test
(and its scale from the report itself, end to end through the real server).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.stats import chisquare

from cleanroom.matching.question import OverlapQuestion
from cleanroom.names import DatasetName
from cleanroom.privacy.noise import add_noise, calibrate, sensitivity
from cleanroom.tls.pki import DemoPki
from tests.privacy.attack import fresh, upload
from tests.support import COLLABORATION, running_server

PARENT = f"collaborations/{COLLABORATION}"
SAMPLES = 40_000
ALPHA = 1e-4  # how rarely a correct mechanism may fail this test


def discrete_laplace_pmf(k: np.ndarray, scale: float) -> np.ndarray:
    """P(X = k) for the discrete Laplace distribution of `scale`: proportional to e^(-|k|/scale)."""
    q = math.exp(-1 / scale)
    return (1 - q) / (1 + q) * q ** np.abs(k)


def chi_square_p_value(noise: np.ndarray, scale: float) -> float:
    """The p-value of the noise against the stated distribution, tails pooled."""
    edge = int(3 * scale)
    observed = [
        np.sum(noise <= -edge),
        *(np.sum(noise == k) for k in range(-edge + 1, edge)),
        np.sum(noise >= edge),
    ]
    inner = discrete_laplace_pmf(np.arange(-edge + 1, edge), scale)
    tail = (1 - inner.sum()) / 2
    expected = np.array([tail, *inner, tail]) * len(noise)
    return float(chisquare(observed, expected).pvalue)


def test_noise_follows_the_stated_distribution() -> None:
    parameters = calibrate(6, 1.5)
    assert parameters.scale == 4.0  # sensitivity / epsilon, as OpenDP certifies it
    noise = np.array(add_noise([1000] * SAMPLES, parameters)) - 1000
    assert noise.dtype.kind == "i"
    assert abs(noise.mean()) < 0.1
    expected_variance = 2 * math.exp(-1 / 4) / (1 - math.exp(-1 / 4)) ** 2
    assert abs(noise.var() / expected_variance - 1) < 0.05
    assert chi_square_p_value(noise, parameters.scale) > ALPHA
    # A mis-scaled mechanism fails the same test.
    assert chi_square_p_value(noise, parameters.scale * 1.2) < ALPHA


def test_reports_carry_the_noise_they_state(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    policy = {"noise": True, "epsilon_budget": 1000.0, "epsilon_per_report": 2.0}
    with running_server(pki, tmp_path / "data", **policy) as server:
        shared = fresh(rng, 200)
        base = upload(server, "acme", tmp_path, shared + fresh(rng, 200))
        errors, scales = [], set()
        for _ in range(60):
            other = upload(server, "brightmart", tmp_path, shared + fresh(rng, 100))
            report = server.client("acme").create_report(PARENT, base=base, others=[other])
            scales.add((report.noise.mechanism, report.noise.scale, report.noise.sensitivity))
            size = report.dataset_sizes[1].row_count.value
            matched = next(
                p for p in report.pairwise_overlaps if p.dataset == other
            ).matched_row_count.value
            errors += [size - 300, matched - 200]
    question = OverlapQuestion(DatasetName.parse(base), (DatasetName.parse(other),))
    expected = sensitivity(question, {question.base: ["email"], question.others[0]: ["email"]})
    assert scales == {("discrete_laplace", expected / 2.0, expected)}
    assert len(set(errors)) > 3  # not accidentally zero
    noise = np.array(errors)
    assert chi_square_p_value(noise, expected / 2.0) > ALPHA
