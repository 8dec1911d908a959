"""Derivation: in exact reports, no suppressed count can be worked out from the rest.

The attacker here is written from scratch, not from the server's code: an integer program
over everything the analyst knows. That is the released figures; the size of each segment
of their own base dataset (they uploaded it); each suppressed count's range as its reason
tells it (below k, or at least k when withheld to protect another); and, since every
dataset here has one identifier type, that rows of X matching Y equal rows of Y matching X.
For every suppressed count, the program must find more than one feasible value.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import overlap_report_pb2
from partners.errors import PrivacyRuleError
from tests.privacy.attack import fresh, upload
from tests.support import COLLABORATION, running_server

PARENT = f"collaborations/{COLLABORATION}"
K = 10
BELOW = overlap_report_pb2.SUPPRESSION_REASON_BELOW_THRESHOLD


def audience(rng: np.random.Generator, pools: list[list[bytes]], sizes: list[int]) -> list[bytes]:
    """Rows drawn from shared pools (so that datasets overlap in small, varied amounts)."""
    rows: list[bytes] = []
    for pool, size in zip(pools, sizes, strict=True):
        rows += [pool[i] for i in rng.choice(len(pool), size=size, replace=False)]
    return rows


def attacker_ranges(
    report: overlap_report_pb2.OverlapReport, segment_sizes: Counter[str]
) -> dict[str, tuple[int, int]]:
    """The min and max the attacker's integer program allows for every suppressed figure."""
    figures: dict[str, overlap_report_pb2.ReleasedCount] = {}
    for i, cell in enumerate(report.membership_cells):
        figures[f"cell{i}"] = cell.base_row_count
    for pair in report.pairwise_overlaps:
        figures[f"pair:{pair.dataset}>{pair.matched_dataset}"] = pair.matched_row_count
    unknown = [name for name, count in figures.items() if not count.HasField("value")]
    index = {name: i for i, name in enumerate(unknown)}
    total = sum(segment_sizes.values())
    rows: list[np.ndarray] = []
    rhs: list[float] = []

    def equation(terms: dict[str, int], constant: float) -> None:
        """sum(coefficient * figure) = constant, with released figures moved right."""
        row = np.zeros(len(unknown))
        for name, coefficient in terms.items():
            if name in index:
                row[index[name]] += coefficient
            else:
                constant -= coefficient * figures[name].value
        if row.any():
            rows.append(row)
            rhs.append(constant)

    for segment, size in segment_sizes.items():
        equation(
            {f"cell{i}": 1 for i, c in enumerate(report.membership_cells) if c.segment == segment},
            size,
        )
    for other in report.other_datasets:
        terms = {
            f"cell{i}": 1
            for i, c in enumerate(report.membership_cells)
            if other in c.matched_datasets
        }
        terms[f"pair:{report.base_dataset}>{other}"] = -1
        equation(terms, 0)
    for pair in report.pairwise_overlaps:  # one identifier type: matching is symmetric
        equation(
            {
                f"pair:{pair.dataset}>{pair.matched_dataset}": 1,
                f"pair:{pair.matched_dataset}>{pair.dataset}": -1,
            },
            0,
        )
    lower = [0 if figures[n].suppression_reason == BELOW else K for n in unknown]
    upper = [K - 1 if figures[n].suppression_reason == BELOW else total for n in unknown]
    constraints = [LinearConstraint(np.array(rows), rhs, rhs)] if rows else []
    ranges = {}
    for name in unknown:
        objective = np.zeros(len(unknown))
        objective[index[name]] = 1
        ends = []
        for sign in (1, -1):
            result = milp(
                sign * objective,
                constraints=constraints,
                bounds=Bounds(lower, upper),
                integrality=np.ones(len(unknown)),
            )
            assert result.success, "the attacker's knowledge must be consistent"
            ends.append(round(sign * result.fun))
        ranges[name] = (ends[0], ends[1])
    return ranges


def test_no_suppressed_count_is_pinned(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    released = attacked = 0
    with running_server(pki, tmp_path / "data", noise=False, minimum_threshold=K) as server:
        for trial in range(8):
            others_count = 1 + trial % 3
            pools = [fresh(rng, 40) for _ in range(others_count)]
            base_rows = audience(rng, pools, [int(rng.integers(3, 30)) for _ in pools]) + fresh(
                rng, 60
            )
            tiers = [
                str(t)
                for t in rng.choice(["gold", "silver", "bronze"][: 1 + trial % 3], len(base_rows))
            ]
            base = upload(server, "acme", tmp_path, base_rows, tiers)
            others = [
                upload(
                    server,
                    brand,
                    tmp_path,
                    audience(rng, [pool], [int(rng.integers(5, 40))]) + fresh(rng, 30),
                )
                for brand, pool in zip(("brightmart", "corvid", "brightmart"), pools, strict=False)
            ]
            try:
                report = server.client("acme").create_report(
                    PARENT, base=base, others=others, segment_column="tier"
                )
            except PrivacyRuleError as refused:
                if refused.reason != "CANNOT_PROTECT_REPORT":
                    raise
                continue
            released += 1
            ranges = attacker_ranges(report, Counter(tiers))
            assert len(ranges) == report.suppressed_count
            attacked += len(ranges)
            for name, (low, high) in ranges.items():
                assert low < high, f"trial {trial}: {name} is pinned to {low}"
    assert released >= 6
    assert attacked >= 30  # the attack had suppressed counts to work on
