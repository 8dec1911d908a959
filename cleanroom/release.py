"""Turning exact counts into released figures under the collaboration's privacy policy.

This is the one seam between what the matcher computes and what leaves the server. Today
it applies the minimum aggregation threshold (SPEC section 5); noise, secondary
suppression and difference checks plug in here, and nowhere else.
"""

from __future__ import annotations

from datetime import datetime

from cleanroom.config import PrivacyPolicy
from cleanroom.names import OverlapReportName
from cleanroom.overlap import (
    DatasetSize,
    ExactOverlap,
    MembershipCell,
    OverlapReport,
    PairwiseOverlap,
    ReleasedCount,
    SuppressionReason,
)


def threshold(count: int, minimum: int) -> ReleasedCount:
    """Releases `count` if it reaches `minimum`, else suppresses it (zero included)."""
    if count < minimum:
        return ReleasedCount(None, SuppressionReason.BELOW_THRESHOLD)
    return ReleasedCount(count)


def rate(numerator: ReleasedCount, denominator: ReleasedCount) -> float | None:
    """A ratio derived from released counts only; None when either is suppressed."""
    if numerator.value is None or not denominator.value:
        return None
    return numerator.value / denominator.value


def release(
    exact: ExactOverlap,
    policy: PrivacyPolicy,
    *,
    name: OverlapReportName,
    creator: str,
    create_time: datetime,
) -> OverlapReport:
    """Makes the report that may leave the server from the exact counts of a question."""
    k = policy.minimum_threshold
    question = exact.question
    sizes = {d: threshold(n, k) for d, n in exact.sizes.items()}
    cells = tuple(
        MembershipCell(
            segment=segment,
            matched=tuple(o for i, o in enumerate(question.others) if mask >> i & 1),
            base_row_count=threshold(count, k),
        )
        for (segment, mask), count in exact.cells.items()
    )
    pairwise = []
    for (x, y), count in exact.pairwise.items():
        released = threshold(count, k)
        pairwise.append(PairwiseOverlap(x, y, released, rate(released, sizes[x])))
    return OverlapReport(
        name=name,
        question=question,
        creator=creator,
        create_time=create_time,
        minimum_threshold=k,
        dataset_sizes=tuple(DatasetSize(d, sizes[d]) for d in question.datasets),
        membership_cells=cells,
        pairwise_overlaps=tuple(pairwise),
    )
