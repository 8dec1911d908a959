"""Turning exact counts into released figures under the collaboration's privacy policy.

This is the one seam between what the matcher computes and what leaves the server.

With noise (the default), as few counts as possible are measured with OpenDP's discrete
Laplace noise (the membership cells, the other datasets' sizes, and the pairwise counts of
the other datasets); the base's size and its pairwise counts are derived from the noisy
cells, so the figures of a report agree with each other. Counts below `k` after noise are
suppressed; that is post-processing and costs no privacy.

Without noise, counts below `k` are suppressed, and so are enough others that no
suppressed count can be worked out from the rest (`cleanroom.privacy.suppression`). Rules
that read nothing but the question and the base dataset (the analyst's own) come first:
segment values held by fewer than `k` base rows are withheld (not split out), and of two
datasets that share more than one identifier type only the first direction of their
pairwise count is released (rows of X matching Y and of Y matching X differ then, and
their difference can single out one row). A suppressed count carries one mark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cleanroom.config import PrivacyPolicy
from cleanroom.matching.question import ExactOverlap
from cleanroom.names import DatasetName, OverlapReportName
from cleanroom.privacy.noise import add_noise, calibrate, interval_half_width, sensitivity
from cleanroom.privacy.report import (
    DatasetSize,
    MembershipCell,
    NoiseParameters,
    OverlapReport,
    PairwiseOverlap,
    ReleasedCount,
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
        return ReleasedCount.suppressed()
    return ReleasedCount(count)


def _noisy_count(count: int, minimum: int, scale: float, terms: int) -> ReleasedCount:
    """A noisy count (a sum of `terms` measured ones) released with its 95% interval."""
    if count < minimum:
        return ReleasedCount.suppressed()
    half = interval_half_width(scale, terms)
    return ReleasedCount(count, None, scale, (max(count - half, 0), count + half))


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
    return _exact(exact, policy, identity, identifier_types)


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
    k, scale = policy.minimum_threshold, parameters.scale
    # How many measured counts each figure sums: 1, except the base's derived figures.
    terms = {p: 1 for p in measured_pairs}
    for bit, other in enumerate(question.others):
        terms[question.base, other] = sum(1 for _, mask in exact.cells if mask >> bit & 1)
    return _report(
        exact,
        policy,
        identity,
        sizes={
            d: _noisy_count(n, k, scale, len(exact.cells) if d == question.base else 1)
            for d, n in sizes.items()
        },
        cells={c: _noisy_count(n, k, scale, 1) for c, n in cells.items()},
        pairwise={p: _noisy_count(pairwise[p], k, scale, terms[p]) for p in exact.pairwise},
        noise=parameters,
    )


def _exact(
    exact: ExactOverlap,
    policy: PrivacyPolicy,
    identity: ReportIdentity,
    identifier_types: Mapping[DatasetName, Sequence[str]],
) -> OverlapReport:
    question = exact.question
    k = policy.minimum_threshold
    base = question.base
    withheld_segments = _withheld_segments(exact, k)

    def shared(x: DatasetName, y: DatasetName) -> int:
        return len(set(identifier_types[x]) & set(identifier_types[y]))

    values: dict[Count, int] = {CellCount(s, m): n for (s, m), n in exact.cells.items()}
    bits = {other: bit for bit, other in enumerate(question.others)}
    values.update({MarginalCount(b): exact.pairwise[base, o] for o, b in bits.items()})
    forced: list[Count] = [c for c in values if isinstance(c, CellCount)
                           and c.segment in withheld_segments]  # fmt: skip
    order = {name: i for i, name in enumerate(question.datasets)}
    # The later direction of a pair sharing several types is never released; the first
    # direction is withheld if it is below k or leaves fewer than k rows of another
    # brand's dataset unmatched. With one shared type both directions are equal.
    withheld_pairs: set[Pair] = set()
    for (x, y), n in exact.pairwise.items():
        if order[x] > order[y] and shared(x, y) > 1:
            withheld_pairs.add((x, y))
            continue
        left = exact.sizes[x] - n  # rows of x matching nothing of y
        if n < k or (x != base and 0 < left < k):
            withheld_pairs.add((x, y))

    def tied(pairs: set[Pair]) -> set[Pair]:
        """With one shared type, both directions are equal: withheld together."""
        return pairs | {(y, x) for x, y in pairs if shared(x, y) == 1}

    withheld_pairs = tied(withheld_pairs)
    forced += [MarginalCount(bits[y]) for x, y in withheld_pairs if x == base]
    suppression = protect(values, k, forced=forced)
    withheld_pairs |= {(base, o) for o, b in bits.items() if MarginalCount(b) in suppression}
    withheld_pairs = tied(withheld_pairs)

    def released(value: int, withheld: bool) -> ReleasedCount:
        return ReleasedCount.suppressed() if value < k or withheld else ReleasedCount(value)

    return _report(
        exact,
        policy,
        identity,
        sizes={d: threshold(n, k) for d, n in exact.sizes.items()},
        cells={
            (s, m): released(n, CellCount(s, m) in suppression)
            for (s, m), n in exact.cells.items()
            if s not in withheld_segments
        },
        pairwise={p: released(n, p in withheld_pairs) for p, n in exact.pairwise.items()},
        noise=None,
        withheld_segments=tuple(sorted(s or "" for s in withheld_segments)),
    )


def _withheld_segments(exact: ExactOverlap, minimum: int) -> set[str | None]:
    """The base's segment values held by fewer than `minimum` rows (None: no value).

    Read from the base's own rows alone (a segment's size is the sum of its cells,
    whatever they match), so the analyst can tell in advance which ones they are.
    """
    if exact.question.segment_column is None:
        return set()
    sizes: dict[str | None, int] = {}
    for (segment, _), n in exact.cells.items():
        sizes[segment] = sizes.get(segment, 0) + n
    return {s for s, n in sizes.items() if n < minimum}


def _report(
    exact: ExactOverlap,
    policy: PrivacyPolicy,
    identity: ReportIdentity,
    *,
    sizes: Mapping[DatasetName, ReleasedCount],
    cells: Mapping[tuple[str | None, int], ReleasedCount],
    pairwise: Mapping[Pair, ReleasedCount],
    noise: NoiseParameters | None,
    withheld_segments: tuple[str, ...] = (),
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
        withheld_segments=withheld_segments,
    )
