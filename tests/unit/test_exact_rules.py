"""Exact mode's rules in the domain: ids under their owner, suppression that never refuses,
hidden totals of matched rows never below k, intervals that hold what they say."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom.names import dataset_id_owner
from cleanroom.privacy.coarse import size_range
from cleanroom.privacy.noise import interval_half_width
from cleanroom.privacy.suppression import CellCount, MarginalCount, protect

PARTNERS = ("acme", "acme-eu", "brightmart")


def test_a_dataset_id_belongs_to_the_longest_partner_id_it_starts_with() -> None:
    assert dataset_id_owner("acme-crm", PARTNERS) == "acme"
    assert dataset_id_owner("acme-eu-crm", PARTNERS) == "acme-eu"  # never acme's
    assert dataset_id_owner("brightmart-x", PARTNERS) == "brightmart"
    assert dataset_id_owner("acme", PARTNERS) is None
    assert dataset_id_owner("crm", PARTNERS) is None


def test_sizes_in_the_log_are_decades() -> None:
    assert [size_range(n) for n in (0, 7, 10, 567, 1000, 1234, 99_999)] == [
        "0", "1-9", "10-99", "100-999", "1000-9999", "1000-9999", "10000-99999",
    ]  # fmt: skip


def test_the_interval_of_one_draw_is_the_smallest_that_holds_95_percent() -> None:
    for scale in (0.5, 1.0, 4.0, 10.0, 37.5):
        half = interval_half_width(scale)
        q = math.exp(-1 / scale)

        def coverage(t: int, q: float = q) -> float:
            return 1 - 2 * q ** (t + 1) / (1 + q)

        assert coverage(half) >= 0.95
        assert half == 0 or coverage(half - 1) < 0.95
        assert interval_half_width(scale, 16) >= half


def _cells(segments: list[list[int]]) -> dict[CellCount | MarginalCount, int]:
    """Cells (segment i, mask) for one other dataset, and the base's marginal count."""
    values: dict[CellCount | MarginalCount, int] = {}
    for i, (unmatched, matched) in enumerate(segments):
        values[CellCount(str(i), 0)] = unmatched
        values[CellCount(str(i), 1)] = matched
    values[MarginalCount(0)] = sum(m for _, m in segments)
    return values


@settings(max_examples=80, deadline=None)
@given(
    segments=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=4),
    k=st.integers(10, 20),
)
def test_suppression_never_refuses_and_hides_no_small_matched_total(
    segments: list[tuple[int, int]], k: int
) -> None:
    values = _cells([list(s) for s in segments])
    suppression = protect(values, k)  # returns a pattern whatever the data
    for count, value in values.items():
        if value < k:
            assert count in suppression
    for i in range(len(segments)):
        unmatched, matched = CellCount(str(i), 0), CellCount(str(i), 1)
        if unmatched not in suppression and matched in suppression:
            assert values[matched] == 0 or values[matched] >= k
    if MarginalCount(0) not in suppression:
        hidden = [values[CellCount(str(i), 1)] for i in range(len(segments))
                  if CellCount(str(i), 1) in suppression]  # fmt: skip
        assert not hidden or sum(hidden) >= k


def test_a_target_among_rows_that_match_nothing_is_hidden_both_ways() -> None:
    """Segment 0: the target and 9 rows that match nothing; segment 1: 100 matched rows."""
    for target_matched in (False, True):
        values = _cells([[10 - target_matched, int(target_matched)], [40, 100]])
        suppression = protect(values, 10)
        assert CellCount("0", 0) in suppression
        assert CellCount("0", 1) in suppression
        assert MarginalCount(0) in suppression
