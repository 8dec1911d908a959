"""Turning exact counts into released figures under the collaboration's privacy policy.

This is the one seam between what the matcher computes and what leaves the server.

With noise (the default), as few counts as possible are measured with OpenDP's discrete
Laplace noise (the membership cells, the other datasets' sizes, and the pairwise counts of
the other datasets); the base's size and its pairwise counts are derived from the noisy
cells, so the figures of a report agree with each other. Counts below `k` after noise are
suppressed; that is post-processing and costs no privacy.

Without noise, counts below `k` are suppressed, and so are enough others that no
suppressed count can be worked out from the rest (`cleanroom.privacy.suppression`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cleanroom.config import PrivacyPolicy
from cleanroom.matching.question import ExactOverlap
from cleanroom.names import DatasetName, OverlapReportName
from cleanroom.privacy.noise import add_noise, calibrate, sensitivity
from cleanroom.privacy.report import (
    DatasetSize,
    MembershipCell,
    NoiseParameters,
    OverlapReport,
    PairwiseOverlap,
    ReleasedCount,
    SuppressionReason,
)
from cleanroom.privacy.suppression import CellCount, Count, MarginalCount, protect

Pair = tuple[DatasetName, DatasetName]


@dataclass(frozen=True)
class ReportIdentity:
    """What a released report is besides its figures."""

    name: OverlapReportName
    creator: str
    create_time: datetime
    fingerprint: str = ""
    inputs: tuple[tuple[DatasetName, datetime], ...] = ()


def threshold(count: int, minimum: int) -> ReleasedCount:
    """Releases `count` if it reaches `minimum`, else suppresses it (zero included)."""
    if count < minimum:
        return ReleasedCount(None, SuppressionReason.BELOW_THRESHOLD)
    return ReleasedCount(count)


def _rate(
    numerator: ReleasedCount, denominator: ReleasedCount, policy: PrivacyPolicy
) -> tuple[float | None, bool]:
    """A ratio of released counts, rounded and capped per the policy; None if suppressed."""
    if numerator.value is None or not denominator.value:
        return None, False
    rate = min(max(numerator.value / denominator.value, 0.0), 1.0)
    if policy.whole_percent_rates:
        rate = round(rate * 100) / 100
    if policy.match_rate_cap is not None and rate > policy.match_rate_cap:
        return policy.match_rate_cap, True
    return rate, False


def release(
    exact: ExactOverlap,
    policy: PrivacyPolicy,
    identity: ReportIdentity,
    identifier_types: Mapping[DatasetName, Sequence[str]],
) -> OverlapReport:
    """Makes the report that may leave the server from the exact counts of a question."""
    if policy.noise:
        return _noisy(exact, policy, identity, identifier_types)
    return _exact(exact, policy, identity)


def _derived(
    exact: ExactOverlap, cells: Mapping[tuple[str | None, int], int]
) -> tuple[int, dict[Pair, int]]:
    """The base's size and its pairwise counts, as sums of (possibly noisy) cells."""
    question = exact.question
    pairs = {
        (question.base, other): sum(n for (_, mask), n in cells.items() if mask >> bit & 1)
        for bit, other in enumerate(question.others)
    }
    return sum(cells.values()), pairs


def _noisy(
    exact: ExactOverlap,
    policy: PrivacyPolicy,
    identity: ReportIdentity,
    identifier_types: Mapping[DatasetName, Sequence[str]],
) -> OverlapReport:
    question = exact.question
    parameters = calibrate(sensitivity(question, identifier_types), policy.epsilon_per_report)
    measured_pairs = [pair for pair in exact.pairwise if pair[0] != question.base]
    vector = [
        *exact.cells.values(),
        *(exact.sizes[o] for o in question.others),
        *(exact.pairwise[p] for p in measured_pairs),
    ]
    noisy = iter(add_noise(vector, parameters))
    cells = {cell: next(noisy) for cell in exact.cells}
    sizes = {o: next(noisy) for o in question.others}
    pairwise = {pair: next(noisy) for pair in measured_pairs}
    sizes[question.base], base_pairs = _derived(exact, cells)
    pairwise.update(base_pairs)
    k = policy.minimum_threshold
    return _report(
        exact,
        policy,
        identity,
        sizes={d: threshold(n, k) for d, n in sizes.items()},
        cells={c: threshold(n, k) for c, n in cells.items()},
        pairwise={p: threshold(pairwise[p], k) for p in exact.pairwise},
        noise=parameters,
    )


def _exact(exact: ExactOverlap, policy: PrivacyPolicy, identity: ReportIdentity) -> OverlapReport:
    question = exact.question
    k = policy.minimum_threshold
    values: dict[Count, int] = {CellCount(s, m): n for (s, m), n in exact.cells.items()}
    bits = {other: bit for bit, other in enumerate(question.others)}
    values.update({MarginalCount(b): exact.pairwise[question.base, o] for o, b in bits.items()})
    # Rows of X matching Y and rows of Y matching X are equal when X and Y share one type,
    # and close otherwise: both are withheld if either is.
    withheld_pairs = {
        (x, y) for (x, y), n in exact.pairwise.items() if min(n, exact.pairwise[y, x]) < k
    }
    forced = [MarginalCount(bits[y]) for x, y in withheld_pairs if x == question.base]
    suppression = protect(values, k, forced=forced)
    withheld_pairs |= {
        (question.base, o) for o, b in bits.items() if MarginalCount(b) in suppression
    }
    withheld_pairs |= {(y, x) for x, y in withheld_pairs}

    def released(value: int, withheld: bool) -> ReleasedCount:
        if value < k:
            return ReleasedCount(None, SuppressionReason.BELOW_THRESHOLD)
        if withheld:
            return ReleasedCount(None, SuppressionReason.COMPLEMENTARY)
        return ReleasedCount(value)

    return _report(
        exact,
        policy,
        identity,
        sizes={d: threshold(n, k) for d, n in exact.sizes.items()},
        cells={
            (s, m): released(n, CellCount(s, m) in suppression) for (s, m), n in exact.cells.items()
        },
        pairwise={p: released(n, p in withheld_pairs) for p, n in exact.pairwise.items()},
        noise=None,
    )


def _report(
    exact: ExactOverlap,
    policy: PrivacyPolicy,
    identity: ReportIdentity,
    *,
    sizes: Mapping[DatasetName, ReleasedCount],
    cells: Mapping[tuple[str | None, int], ReleasedCount],
    pairwise: Mapping[Pair, ReleasedCount],
    noise: NoiseParameters | None,
) -> OverlapReport:
    question = exact.question
    overlaps = []
    for (x, y), count in pairwise.items():
        rate, capped = _rate(count, sizes[x], policy)
        overlaps.append(PairwiseOverlap(x, y, count, rate, capped))
    return OverlapReport(
        name=identity.name,
        question=question,
        creator=identity.creator,
        create_time=identity.create_time,
        minimum_threshold=policy.minimum_threshold,
        dataset_sizes=tuple(DatasetSize(d, sizes[d]) for d in question.datasets),
        membership_cells=tuple(
            MembershipCell(
                segment=segment,
                matched=tuple(o for i, o in enumerate(question.others) if mask >> i & 1),
                base_row_count=count,
            )
            for (segment, mask), count in cells.items()
        ),
        pairwise_overlaps=tuple(overlaps),
        noise=noise,
        fingerprint=identity.fingerprint,
        inputs=identity.inputs,
    )
