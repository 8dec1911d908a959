"""Release: no count below k, rates from released counts only, noisy figures that agree."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cleanroom.config import PrivacyPolicy
from cleanroom.matching.question import ExactOverlap, OverlapQuestion
from cleanroom.names import DatasetName, OverlapReportName
from cleanroom.privacy.release import ReportIdentity, release
from cleanroom.privacy.report import OverlapReport, SuppressionReason

A, B, C = (DatasetName("room", d) for d in ("a", "b", "c"))
QUESTION = OverlapQuestion(A, (B, C), "tier")
IDENTITY = ReportIdentity(OverlapReportName("room", "r-1"), "partners/a", datetime.now(UTC))
TYPES = {A: ("email", "phone"), B: ("email",), C: ("email", "phone")}
counts = st.integers(min_value=0, max_value=200)


def exact(sizes: list[int], cells: list[int], pairwise: list[int]) -> ExactOverlap:
    cell_map = {(s, m): cells[i * 4 + m] for i, s in enumerate(["x", None]) for m in range(4)}
    pairs = dict(zip(QUESTION.ordered_pairs(), pairwise, strict=True))
    # The base's own figures follow from its cells, as they do in real data.
    sizes = [sum(cells), *sizes[1:]]
    for bit, other in enumerate(QUESTION.others):
        pairs[A, other] = sum(n for (_, m), n in cell_map.items() if m >> bit & 1)
    return ExactOverlap(QUESTION, dict(zip(QUESTION.datasets, sizes, strict=True)), cell_map, pairs)


def exact_policy(k: int = 10, **changes: object) -> PrivacyPolicy:
    return PrivacyPolicy(minimum_threshold=k, minimum_dataset_size=k, noise=False, **changes)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1000, 5000), min_size=3, max_size=3),
    cells=st.lists(counts, min_size=8, max_size=8),
    pairwise=st.lists(counts, min_size=6, max_size=6),
    k=st.integers(10, 60),
)
def test_exact_reports_release_no_count_below_k(
    sizes: list[int], cells: list[int], pairwise: list[int], k: int
) -> None:
    assume(sum(cells) >= 2 * k)  # a base reaches the minimum size, which is at least k
    truth = exact(sizes, cells, pairwise)
    # Exact mode never refuses for the data: a refusal would itself be an answer.
    report = release(truth, exact_policy(k, whole_percent_rates=False), IDENTITY, TYPES)
    withheld = {s or None for s in report.withheld_segments}
    shown = {c: n for c, n in truth.cells.items() if c[0] not in withheld}
    values = [*truth.sizes.values(), *shown.values(), *truth.pairwise.values()]
    for value, count in zip(values, report.released_counts(), strict=True):
        if value < k or count.value is None:
            assert count.value is None
            assert count.suppression is SuppressionReason.SUPPRESSED  # one mark, no reason
        else:
            assert count.value == value
    sizes_by_name = {s.dataset: s.row_count.value for s in report.dataset_sizes}
    for pair in report.pairwise_overlaps:
        if pair.matched_row_count.value is None:
            assert pair.match_rate is None
        else:
            assert pair.match_rate == pair.matched_row_count.value / sizes_by_name[pair.dataset]
    assert OverlapReport.from_json(report.to_json()) == report


def test_symmetric_pairs_are_withheld_together() -> None:
    truth = exact([0, 2000, 2000], [500] * 8, [100, 100, 5, 100, 100, 100])
    report = release(truth, exact_policy(), IDENTITY, TYPES)
    withheld = {
        (p.dataset, p.matched_dataset)
        for p in report.pairwise_overlaps
        if p.matched_row_count.value is None
    }
    pairs = list(truth.pairwise)
    x, y = pairs[2]
    assert {(x, y), (y, x)} <= withheld


def test_rates_are_whole_percent_and_capped() -> None:
    truth = exact([0, 2000, 2000], [300, 1000, 10, 10] * 2, [1950, 1948, 1946, 1944, 1942, 1940])
    report = release(truth, exact_policy(match_rate_cap=0.85), IDENTITY, TYPES)
    for pair in report.pairwise_overlaps:
        if pair.match_rate is not None:
            assert pair.match_rate == round(pair.match_rate, 2)
            assert pair.match_rate <= 0.85
    capped = [p for p in report.pairwise_overlaps if p.match_rate_capped]
    assert capped
    assert all(p.match_rate == 0.85 for p in capped)


def test_noisy_reports_are_consistent_and_state_their_noise() -> None:
    truth = exact([0, 5000, 5000], [800, 600, 400, 300] * 2, [900] * 6)
    policy = PrivacyPolicy(minimum_threshold=10, minimum_dataset_size=10, epsilon_per_report=2.0)
    report = release(truth, policy, IDENTITY, TYPES)
    assert report.noise is not None
    assert report.noise.epsilon == 2.0
    assert report.noise.scale * report.noise.epsilon >= report.noise.sensitivity
    cells = {(c.segment, c.matched): c.base_row_count.value for c in report.membership_cells}
    assert all(v is not None for v in cells.values())
    base_size = report.dataset_sizes[0].row_count.value
    assert base_size == sum(v for v in cells.values() if v is not None)
    for other in QUESTION.others:
        pair = next(
            p for p in report.pairwise_overlaps if (p.dataset, p.matched_dataset) == (A, other)
        )
        assert pair.matched_row_count.value == sum(
            v for (_, m), v in cells.items() if other in m and v is not None
        )


def test_cells_name_the_datasets_of_their_pattern() -> None:
    report = release(
        exact([0, 1000, 1000], list(range(100, 108)), [500] * 6), exact_policy(), IDENTITY, TYPES
    )
    matched = [(c.segment, c.matched) for c in report.membership_cells[:4]]
    assert matched == [("x", ()), ("x", (B,)), ("x", (C,)), ("x", (B, C))]
    assert report.membership_cells[4].segment is None
