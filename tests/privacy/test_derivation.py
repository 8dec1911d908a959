"""Derivation: in exact reports, no suppressed count can be worked out from the rest.

The attacker here is written from scratch, not from the server's code: an integer program
over everything the analyst knows. That is the released figures; the size of each segment
of their own base dataset (they uploaded it); each suppressed count's range as its reason
tells it, which is nothing (one mark, whatever the cause: 0 to the base's size); the
segments withheld whole, whose cells still count in the pairwise counts; and, since every
dataset here has one identifier type, that rows of X matching Y equal rows of Y matching X.
For every suppressed count, the program must find more than one feasible value, and every
total of suppressed matched base rows the analyst can work out from one segment or one
pairwise count must be 0 or at least k.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import overlap_report_pb2
from tests.privacy.attack import fresh, upload
from tests.support import COLLABORATION, running_server

PARENT = f"collaborations/{COLLABORATION}"
K = 10
SUPPRESSED = overlap_report_pb2.SUPPRESSION_REASON_SUPPRESSED


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
    cells = list(report.membership_cells)
    for segment in report.withheld_segments:  # not split out: unknowns in the margins
        for size in range(len(report.other_datasets) + 1):
            for matched in itertools.combinations(report.other_datasets, size):
                cells.append(overlap_report_pb2.MembershipCell(
                    segment=segment, matched_datasets=matched,
                    base_row_count=overlap_report_pb2.ReleasedCount(suppression_reason=SUPPRESSED),
                ))  # fmt: skip
    for i, cell in enumerate(cells):
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
            {f"cell{i}": 1 for i, c in enumerate(cells) if c.segment == segment},
            size,
        )
    for other in report.other_datasets:
        terms = {f"cell{i}": 1 for i, c in enumerate(cells) if other in c.matched_datasets}
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
    assert all(figures[n].suppression_reason == SUPPRESSED for n in unknown)
    lower = [0] * len(unknown)
    upper = [total] * len(unknown)
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


def assert_no_small_hidden_total(
    report: overlap_report_pb2.OverlapReport,
    base_rows: list[bytes],
    tiers: list[str],
    other_rows: list[set[bytes]],
) -> None:
    """Every total of suppressed matched base rows the analyst can work out is 0 or >= k.

    Per segment: its size (the analyst's own) minus its released cells, when its
    unmatched cell is released. Per other dataset: the released pairwise count minus
    the released cells that add up to it.
    """
    truth: Counter[tuple[str, tuple[str, ...]]] = Counter()
    for row, tier in zip(base_rows, tiers, strict=True):
        matched = tuple(o for o, rows in zip(report.other_datasets, other_rows, strict=True)
                        if row in rows)  # fmt: skip
        truth[tier, matched] += 1
    shown = {(c.segment, tuple(c.matched_datasets)): c.base_row_count
             for c in report.membership_cells}  # fmt: skip

    def hidden(key: tuple[str, tuple[str, ...]]) -> bool:
        return key not in shown or not shown[key].HasField("value")

    for segment in {c.segment for c in report.membership_cells}:
        if hidden((segment, ())):
            continue
        total = sum(n for (s, m), n in truth.items() if s == segment and m and hidden((s, m)))
        assert total == 0 or total >= K, f"segment {segment}: {total} hidden matched rows"
    for pair in report.pairwise_overlaps:
        if pair.dataset != report.base_dataset or not pair.matched_row_count.HasField("value"):
            continue
        total = sum(n for (s, m), n in truth.items()
                    if pair.matched_dataset in m and hidden((s, m)))  # fmt: skip
        assert total == 0 or total >= K, f"{pair.matched_dataset}: {total} hidden rows"


@pytest.mark.slow
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
            other_rows = [
                audience(rng, [pool], [int(rng.integers(5, 40))]) + fresh(rng, 30) for pool in pools
            ]
            others = [
                upload(server, brand, tmp_path, rows)
                for brand, rows in zip(("brightmart", "corvid", "brightmart"), other_rows,
                                       strict=False)
            ]  # fmt: skip
            report = server.client("acme").create_report(
                PARENT, base=base, others=others, segment_column="tier"
            )
            released += 1
            ranges = attacker_ranges(report, Counter(tiers))
            withheld = len(report.withheld_segments) * 2 ** len(others)
            assert len(ranges) == report.suppressed_count + withheld
            assert_no_small_hidden_total(report, base_rows, tiers, [set(r) for r in other_rows])
            attacked += len(ranges)
            for name, (low, high) in ranges.items():
                assert low < high, f"trial {trial}: {name} is pinned to {low}"
    assert released >= 6
    assert attacked >= 30  # the attack had suppressed counts to work on
