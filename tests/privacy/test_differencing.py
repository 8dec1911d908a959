"""Near-duplicate differencing with noise: upload an audience, then the same plus one person.

An attacker who guesses whether the person is in the other brand's audience from the two
reports does no better than the epsilon bound allows. (Without noise the second report is
refused by the exact-release quota: see test_exact_attacks.)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cleanroom.tls.pki import DemoPki
from tests.privacy.attack import fresh, upload
from tests.support import COLLABORATION, running_server

PARENT = f"collaborations/{COLLABORATION}"
TRIALS = 200
EPSILON = 0.25  # per report; the attack reads two reports, so 2 * EPSILON in all


def test_with_noise_membership_guessing_is_bounded(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    policy = {"noise": True, "epsilon_budget": 1000.0, "epsilon_per_report": EPSILON}
    with running_server(pki, tmp_path / "data", **policy) as server:
        shared, target = fresh(rng, 200), fresh(rng, 1)
        base = upload(server, "acme", tmp_path, shared + fresh(rng, 50))
        base_plus = upload(server, "acme", tmp_path, shared + fresh(rng, 50) + target)
        correct = 0
        for _ in range(TRIALS):
            member = bool(rng.integers(0, 2))
            other = upload(
                server, "brightmart", tmp_path, shared + fresh(rng, 30) + (target if member else [])
            )
            counts = []
            for mine in (base, base_plus):
                report = server.client("acme").create_report(PARENT, base=mine, others=[other])
                matched = next(p for p in report.pairwise_overlaps if p.dataset == mine)
                counts.append(matched.matched_row_count.value)
            guess = counts[1] - counts[0] >= 1  # the best simple test: did one more match?
            correct += guess == member
        rate = correct / TRIALS
        bound = math.exp(2 * EPSILON) / (1 + math.exp(2 * EPSILON))  # 2*eps-DP hypothesis test
        margin = 3 * math.sqrt(bound * (1 - bound) / TRIALS)  # three standard errors
        assert rate <= bound + margin, (rate, bound, margin)
        budget = server.client("acme").get_budget(PARENT)
        assert budget.spent_epsilon == pytest.approx(2 * TRIALS * EPSILON)
