"""Release under the minimum threshold: no count below k, rates only from released counts."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from cleanroom.config import PrivacyPolicy
from cleanroom.names import DatasetName, OverlapReportName
from cleanroom.overlap import ExactOverlap, OverlapQuestion, OverlapReport, SuppressionReason
from cleanroom.release import release

A, B, C = (DatasetName("room", d) for d in ("a", "b", "c"))
QUESTION = OverlapQuestion(A, (B, C), "tier")
NAME = OverlapReportName("room", "r-1")
counts = st.integers(min_value=0, max_value=200)


def exact(sizes: list[int], cells: list[int], pairwise: list[int]) -> ExactOverlap:
    return ExactOverlap(
        question=QUESTION,
        sizes=dict(zip(QUESTION.datasets, sizes, strict=True)),
        cells={(segment, mask): cells[i * 4 + mask] for i, segment in enumerate(["x", None]) for mask in range(4)},
        pairwise=dict(zip(QUESTION.ordered_pairs(), pairwise, strict=True)),
    )  # fmt: skip


@given(
    sizes=st.lists(st.integers(1000, 5000), min_size=3, max_size=3),
    cells=st.lists(counts, min_size=8, max_size=8),
    pairwise=st.lists(counts, min_size=6, max_size=6),
    k=st.integers(10, 100),
)
def test_no_released_count_is_below_k(
    sizes: list[int], cells: list[int], pairwise: list[int], k: int
) -> None:
    policy = PrivacyPolicy(minimum_threshold=k, minimum_dataset_size=1000)
    report = release(exact(sizes, cells, pairwise), policy, name=NAME, creator="partners/a",
                     create_time=datetime.now(UTC))  # fmt: skip
    truth = [*sizes, *cells, *pairwise]
    for value, count in zip(truth, report.released_counts(), strict=True):
        if value < k:
            assert count.value is None
            assert count.suppression is SuppressionReason.BELOW_THRESHOLD
        else:
            assert count.value == value
    for pair in report.pairwise_overlaps:
        if pair.matched_row_count.value is None:
            assert pair.match_rate is None
        else:
            size = next(
                s.row_count.value for s in report.dataset_sizes if s.dataset == pair.dataset
            )
            assert pair.match_rate == pair.matched_row_count.value / size
    assert OverlapReport.from_json(report.to_json()) == report


def test_cells_name_the_datasets_of_their_pattern() -> None:
    report = release(exact([1000] * 3, list(range(100, 108)), [500] * 6), PrivacyPolicy(),
                     name=NAME, creator="partners/a", create_time=datetime.now(UTC))  # fmt: skip
    matched = [(c.segment, c.matched) for c in report.membership_cells[:4]]
    assert matched == [("x", ()), ("x", (B,)), ("x", (C,)), ("x", (B, C))]
    assert report.membership_cells[4].segment is None
