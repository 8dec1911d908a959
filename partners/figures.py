"""The figures of a report as people read them: values, 95% intervals, shares and their sources.

Terminal tables, CSV, workbooks and the HTML report all take their numbers from here, so
they agree: one rounding rule for every rate and share (`percent`), shares over released
figures only (a withheld cell is left out of the denominator and said so, never guessed),
and every derived figure says what it is derived from.

With noise on, each count the server measured carries discrete Laplace noise of the
report's scale; a figure the server or the toolkit sums from several of them carries the
sum of their noises. `noise_half_width` gives the exact 95% half-width of such a sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from statistics import NormalDist
from typing import TYPE_CHECKING

from cleanroom.v1 import overlap_report_pb2

if TYPE_CHECKING:
    import numpy as np

    Probabilities = np.ndarray[tuple[int], np.dtype[np.float64]]

CONFIDENCE = 0.95
SUPPRESSED = "suppressed"
# Tail mass below which the noise's probabilities are dropped when sums are convolved;
# far below what changes a 95% quantile.
_TAIL = 1e-15
# Above this standard deviation of a sum, its quantile comes from the normal distribution
# (a sum of at least a few dozen terms, or of noise scales in the tens of thousands).
_EXACT_SPREAD = 20_000.0


def percent(numerator: int, denominator: int) -> str:
    """A rate or share as people read it: percent with one decimal (the one rounding rule)."""
    return f"{100 * numerator / denominator:.1f}%"


def _single_half_width(scale: float, confidence: float) -> int:
    """The exact quantile of one discrete Laplace noise: P(|X| <= a) >= confidence.

    P(X = x) = (1 - t) / (1 + t) * t^|x| with t = exp(-1 / scale), so
    P(|X| > a) = 2 t^(a + 1) / (1 + t).
    """
    t = math.exp(-1.0 / scale)
    alpha = 1.0 - confidence
    a = max(0, math.ceil(math.log(alpha * (1 + t) / 2) / math.log(t)) - 1)
    # The logarithms can land one off at an exact boundary: settle it with the tail itself.
    while a > 0 and 2 * t**a / (1 + t) <= alpha:
        a -= 1
    while 2 * t ** (a + 1) / (1 + t) > alpha:
        a += 1
    return a


def _pmf(scale: float) -> Probabilities:
    """The discrete Laplace probabilities on -L..L, L where the tails fall below _TAIL."""
    import numpy as np  # noqa: PLC0415 (only sums need it: tables start without it)

    t = math.exp(-1.0 / scale)
    reach = max(1, math.ceil(scale * -math.log(_TAIL)))
    x = np.abs(np.arange(-reach, reach + 1, dtype=np.float64))
    return np.asarray((1 - t) / (1 + t) * t**x, dtype=np.float64)


def _convolve(a: Probabilities, b: Probabilities) -> Probabilities:
    """The distribution of the sum of two independent noises centred on their middles."""
    import numpy as np  # noqa: PLC0415

    size = len(a) + len(b) - 1
    n = 1 << (size - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(a, n) * np.fft.rfft(b, n), n)[:size]
    out = np.clip(out, 0.0, None)
    # Keep it symmetric and short: drop the tails where they no longer matter.
    middle = size // 2
    keep = int(np.argmax(out[middle:] < _TAIL)) or (size - middle - 1)
    return np.asarray(out[middle - keep : middle + keep + 1], dtype=np.float64)


@cache
def noise_half_width(scale: float, terms: int = 1, confidence: float = CONFIDENCE) -> int:
    """The half-width of the `confidence` interval of a sum of `terms` discrete Laplace noises.

    The smallest whole `a` such that the sum of `terms` independent draws of OpenDP's
    discrete Laplace mechanism of this `scale` lies in [-a, a] with probability at least
    `confidence`: exact for one term, by exact convolution for sums (by the normal
    distribution for sums whose standard deviation passes 20,000).

    Args:
        scale: The noise scale of the report (`ReportNoise.scale`).
        terms: How many measured counts the figure adds up (1 for a measured count).
        confidence: The probability the interval should hold.
    """
    if scale <= 0 or terms <= 0:
        return 0
    if terms == 1:
        return _single_half_width(scale, confidence)
    t = math.exp(-1.0 / scale)
    spread = math.sqrt(terms * 2 * t) / (1 - t)  # the sum's standard deviation
    if spread > _EXACT_SPREAD:
        # Very wide noise (a tiny epsilon) summed many times: the exact convolution would
        # need tens of millions of points; the sum is then normal to far better than 1%.
        return math.ceil(spread * NormalDist().inv_cdf(0.5 + confidence / 2))
    one = _pmf(scale)
    import numpy as np  # noqa: PLC0415

    total: Probabilities | None = None
    power, left = one, terms
    while left:  # binary powering: O(log terms) convolutions
        if left & 1:
            total = power if total is None else _convolve(total, power)
        left >>= 1
        if left:
            power = _convolve(power, power)
    assert total is not None
    middle = len(total) // 2
    # Mass of [-a, a] for a = 0, 1, ...: the centre, then both (equal) tails a step at a time.
    central = total[middle] + 2 * np.concatenate(([0.0], np.cumsum(total[middle + 1 :])))
    return int(np.searchsorted(central, confidence))


@dataclass(frozen=True)
class Figure:
    """One figure of a report as shown: its value (None when withheld) and where it comes from.

    Attributes:
        value: The released or derived count; None when it is withheld.
        withheld: Why there is no value, for people ("" when there is one).
        terms: How many noisy counts it adds up (0 for exact counts).
        source: What the figure is, or what it is derived from, in words.
        at_least: The value is a lower bound: the sum of the released parts of a figure
            some of whose parts are withheld (the withheld parts are never estimated).
    """

    value: int | None
    withheld: str = ""
    terms: int = 1
    source: str = ""
    at_least: bool = False

    def interval(self, scale: float | None) -> tuple[int, int] | None:
        """The 95% interval of the count before noise; None when exact, withheld or a bound.

        Computed here from the report's scale and the figure's number of noisy terms; where
        the server states a figure's own interval, that is the one to show instead.
        """
        if self.value is None or self.at_least or not scale or not self.terms:
            return None
        half = noise_half_width(scale, self.terms)
        return max(0, self.value - half), self.value + half


def released(
    count: overlap_report_pb2.ReleasedCount, threshold: int, *, terms: int = 1, source: str = ""
) -> Figure:
    """A server's released count as a figure: its value, or why it is withheld.

    Args:
        count: The count as released.
        threshold: The report's minimum aggregation threshold.
        terms: How many noisy counts it adds up (0 for exact counts).
        source: What the figure is, in words.
    """
    if count.HasField("value"):
        return Figure(count.value, "", terms, source)
    # One mark whatever the reason (older reports still carry theirs): a reason that told
    # "below k" from "withheld to protect another cell" would let the analyst pin a count.
    return Figure(None, SUPPRESSED, terms, source)


def total(parts: Sequence[Figure], source: str) -> Figure:
    """The sum of figures: withheld if every part is, a lower bound if some are.

    A withheld part is never guessed: with some parts released, the figure is their sum
    and says it is a lower bound (`at_least`).
    """
    released_parts = [p for p in parts if p.value is not None]
    if not released_parts:
        return Figure(None, SUPPRESSED, 0, source)
    value = sum(p.value or 0 for p in released_parts)
    terms = sum(p.terms for p in released_parts)
    if len(released_parts) < len(parts):
        missing = len(parts) - len(released_parts)
        return Figure(
            value, "", terms, f"{source}; at least: {missing} withheld part(s) left out", True
        )
    return Figure(value, "", terms, source)


def difference(plus: Sequence[Figure], minus: Sequence[Figure], source: str) -> Figure:
    """The sum of `plus` less that of `minus`, floored at zero (noise can make it negative).

    Withheld if a part is withheld or only a lower bound.
    """
    parts = [*plus, *minus]
    if any(p.value is None or p.at_least for p in parts):
        return Figure(None, f"{SUPPRESSED} (a part is withheld)", 0, source)
    value = sum(p.value or 0 for p in plus) - sum(p.value or 0 for p in minus)
    return Figure(max(0, value), "", sum(p.terms for p in parts), source)


def short(name: str) -> str:
    """The last part of a resource name, for people."""
    return name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Pattern:
    """One membership pattern: the base rows matching exactly these others (and no other)."""

    matched: tuple[str, ...]
    figure: Figure

    def label(self, others: Sequence[str]) -> str:
        """Words for the pattern with short ids: `in X & Y only`, or `in none of the others`."""
        if not self.matched:
            return "in none of the others"
        return "in " + " & ".join(short(o) for o in others if o in self.matched) + " only"


@dataclass(frozen=True)
class Share:
    """A pattern's share of the released base rows of its segment, or why there is none."""

    text: str


@dataclass
class ReportFigures:
    """Every figure a person sees of one report, derived once.

    Attributes:
        report: The report as the server released it.
        owners: Dataset name to owner (`partners/...`), as far as the caller can list them.
        exact_sizes: The exact row counts of the caller's own datasets in the report.
    """

    report: overlap_report_pb2.OverlapReport
    owners: Mapping[str, str] = field(default_factory=dict)
    exact_sizes: Mapping[str, int] = field(default_factory=dict)

    @property
    def scale(self) -> float | None:
        """The noise scale, or None for exact counts."""
        return self.report.noise.scale if self.report.HasField("noise") else None

    @property
    def threshold(self) -> int:
        """The minimum aggregation threshold of the report."""
        return self.report.minimum_threshold

    @property
    def datasets(self) -> list[str]:
        """The report's datasets, base first."""
        return [self.report.base_dataset, *self.report.other_datasets]

    @property
    def others(self) -> list[str]:
        """The datasets the base is compared with."""
        return list(self.report.other_datasets)

    def who(self, dataset: str) -> str:
        """A dataset's short id with its owner, e.g. `acme-crm (acme)`."""
        owner = self.owners.get(dataset)
        return f"{short(dataset)} ({short(owner)})" if owner else short(dataset)

    def _noisy(self, terms: int) -> int:
        return terms if self.scale else 0

    def size(self, dataset: str) -> Figure:
        """A dataset's size as the report released it."""
        base = dataset == self.report.base_dataset
        terms = len(self.report.membership_cells) if base else 1
        source = "sum of the membership cells" if base and self.scale else "dataset size"
        for s in self.report.dataset_sizes:
            if s.dataset == dataset:
                return released(
                    s.row_count, self.threshold, terms=self._noisy(terms), source=source
                )
        return Figure(None, SUPPRESSED, 0, source)

    def pair(self, dataset: str, matched: str) -> Figure:
        """Rows of `dataset` matching some row of `matched`, as released."""
        base = dataset == self.report.base_dataset
        terms = (
            sum(matched in c.matched_datasets for c in self.report.membership_cells) if base else 1
        )
        source = (
            f"sum of the membership cells that include {short(matched)}"
            if base and self.scale
            else f"rows of {short(dataset)} matching {short(matched)}"
        )
        for p in self.report.pairwise_overlaps:
            if p.dataset == dataset and p.matched_dataset == matched:
                return released(
                    p.matched_row_count, self.threshold, terms=self._noisy(terms), source=source
                )
        return Figure(None, SUPPRESSED, 0, source)

    def match_rate(self, dataset: str, matched: str) -> str:
        """The rate of `dataset`'s rows matching `matched`, by the one rounding rule."""
        for p in self.report.pairwise_overlaps:
            if p.dataset == dataset and p.matched_dataset == matched and p.match_rate_capped:
                return f"above {p.match_rate:.1%}"
        numerator, denominator = self.pair(dataset, matched), self.size(dataset)
        if numerator.value is None or not denominator.value:
            return SUPPRESSED
        return percent(numerator.value, denominator.value)

    @property
    def segments(self) -> list[str]:
        """The segment values of the membership cells, in the server's order."""
        seen: dict[str, None] = {}
        for c in self.report.membership_cells:
            seen.setdefault(c.segment, None)
        return list(seen)

    def patterns(self, segment: str | None = None) -> list[Pattern]:
        """The membership patterns, fewest matches first; of one segment, or summed over all."""
        by_pattern: dict[tuple[str, ...], list[Figure]] = {}
        for c in self.report.membership_cells:
            if segment is not None and c.segment != segment:
                continue
            matched = tuple(o for o in self.others if o in c.matched_datasets)
            by_pattern.setdefault(matched, []).append(
                released(c.base_row_count, self.threshold, terms=self._noisy(1))
            )
        out = []
        for matched, parts in by_pattern.items():
            words = "base rows " + Pattern(matched, Figure(None)).label(self.others)
            if len(parts) == 1:
                figure = Figure(parts[0].value, parts[0].withheld, parts[0].terms, words)
            else:
                figure = total(parts, f"{words}: sum over {len(parts)} segments")
            out.append(Pattern(matched, figure))
        order = {o: i for i, o in enumerate(self.others)}
        out.sort(key=lambda p: (len(p.matched), [order[o] for o in p.matched]))
        return out

    def shares(self, patterns: Sequence[Pattern]) -> tuple[list[Share], str]:
        """Each pattern's share of the released base rows among `patterns`, and the note.

        The denominator is the sum of the released patterns only: a withheld one is left
        out (and the note says how many), never estimated from the others.
        """
        released_total = sum(p.figure.value or 0 for p in patterns)
        withheld = sum(p.figure.value is None for p in patterns)
        shares = [
            Share(percent(p.figure.value, released_total))
            if p.figure.value is not None and released_total
            else Share(SUPPRESSED if p.figure.value is None else "-")
            for p in patterns
        ]
        note = (
            f"shares are of the {released_total:,} base rows in released cells;"
            f" {withheld} cell{'s' if withheld != 1 else ''} withheld, left out of the total"
            if withheld
            else f"shares are of the {released_total:,} base rows in these cells"
        )
        return shares, note
