"""Near-duplicate differencing: upload an audience, then the same plus one person, compare.

Without noise the second report is refused. With noise, an attacker who guesses whether the
person is in the other brand's audience from the two reports does no better than the
epsilon bound allows.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cleanroom.tls.pki import DemoPki
from partners.errors import PrivacyRuleError
from tests.privacy.attack import fresh, upload
from tests.support import COLLABORATION, running_server

PARENT = f"collaborations/{COLLABORATION}"
TRIALS = 200
EPSILON = 0.25  # per report; the attack reads two reports, so 2 * EPSILON in all


def test_without_noise_the_near_duplicate_is_refused(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with running_server(pki, tmp_path / "data", noise=False) as server:
        shared, target, audience = fresh(rng, 80), fresh(rng, 1), fresh(rng, 100)
        other = upload(server, "brightmart", tmp_path, shared + target + fresh(rng, 100))
        acme = server.client("acme")
        base = upload(server, "acme", tmp_path, shared + audience)
        acme.create_report(PARENT, base=base, others=[other])
        # The same audience plus the one person whose membership the attacker wants.
        twin = upload(server, "acme", tmp_path, shared + audience + target)
        with pytest.raises(PrivacyRuleError) as refused:
            acme.create_report(PARENT, base=twin, others=[other])
        assert refused.value.reason == "DATASET_TOO_SIMILAR"
        assert refused.value.metadata["dataset"] == twin
        # The question asked before gets the report released then, which holds nothing new;
        # a new question over the first audience is refused, as it now has a near twin.
        assert acme.create_report_response(PARENT, base=base, others=[other]).reused
        third = upload(server, "corvid", tmp_path, shared + fresh(rng, 100))
        with pytest.raises(PrivacyRuleError):
            acme.create_report(PARENT, base=base, others=[other, third])
        # An audience at least k rows away from every other of its owner is fine.
        distinct = upload(server, "acme", tmp_path, shared + fresh(rng, 100))
        acme.create_report(PARENT, base=distinct, others=[other])


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
