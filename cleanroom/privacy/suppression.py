"""Secondary suppression for exact (noise-free) reports: no suppressed count can be derived.

An analyst knows more than the report: their base dataset entirely, so the size of each
of its segments. With that and the released figures they can write linear equations over
the membership cells: per segment, the cells sum to the segment's size; per other dataset
i, the cells whose pattern has bit i sum to the pairwise count (base, other i). A
suppressed count carries one mark, whatever the cause, so it tells no range beyond
0 to the base's size.

`protect` adds complementary suppressions until two rules hold, each checked, not assumed:

- no suppressed count has a single feasible value under that knowledge (an integer
  program, SciPy's MILP solver, HiGHS);
- no suppressed set of *matched* rows has a total the analyst can work out that is below
  the threshold: where a segment's unmatched cell (or a pairwise count) is released, the
  suppressed matched cells it would total must hold at least k rows. Unmatched rows are
  left out of this rule on purpose: an attacker can pad them with rows that match nothing,
  so a threshold on them would itself answer.

It never refuses: if no pattern is found within its rounds, every cell and pairwise count
of the base is withheld, which leaves each cell a range (a refusal that depended on
another brand's rows would itself be an answer).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


@dataclass(frozen=True)
class CellCount:
    """The base rows of one segment (None: rows without a value) and membership mask."""

    segment: str | None
    mask: int


@dataclass(frozen=True)
class MarginalCount:
    """The base rows that match other dataset `bit`: the pairwise count (base, other)."""

    bit: int


Count = CellCount | MarginalCount


@dataclass
class Suppression:
    """What is withheld: primary (below k) and complementary (to protect the primary)."""

    primary: set[Count] = field(default_factory=set)
    complementary: set[Count] = field(default_factory=set)

    def __contains__(self, count: Count) -> bool:
        return count in self.primary or count in self.complementary

    def all(self) -> list[Count]:
        """Every suppressed count, in a stable order."""
        return sorted(self.primary | self.complementary, key=repr)


def protect(
    values: Mapping[Count, int],
    threshold: int,
    *,
    forced: Collection[Count] = (),
    max_rounds: int = 500,
) -> Suppression:
    """The suppression pattern for the membership cells and the base-vs-other counts.

    Args:
        values: The exact value of every cell and every marginal count of the report.
        threshold: k.
        forced: Counts to withhold whatever their value (a shape rule, or a count equal
            or close to them elsewhere in the report is withheld).
        max_rounds: How many complementary suppressions to try before withholding all.
    """
    suppression = Suppression({c for c, value in values.items() if value < threshold})
    suppression.complementary.update(c for c in forced if c not in suppression.primary)
    if not suppression.primary and not suppression.complementary:
        return suppression
    knowledge = AnalystKnowledge(values, threshold)
    for _ in range(max_rounds):
        exposed = knowledge.small_total(suppression)
        if exposed is not None:
            suppression.complementary.add(exposed)
            continue
        pinned = next((c for c in suppression.all() if knowledge.pinned(c, suppression)), None)
        if pinned is None:
            return suppression
        complement = _complement(pinned, values, suppression)
        if complement is None:
            break
        suppression.complementary.add(complement)
    suppression.complementary.update(c for c in values if c not in suppression.primary)
    return suppression


def _complement(
    pinned: Count, values: Mapping[Count, int], suppression: Suppression
) -> Count | None:
    """The released count whose suppression most likely unpins `pinned`.

    The smallest of those sharing an equation with it: the same segment first, then the
    same pattern, then the marginals its pattern adds to, then any cell, then anything.
    """
    released = [c for c in values if c not in suppression]
    cells = [c for c in released if isinstance(c, CellCount)]
    marginals = [c for c in released if isinstance(c, MarginalCount)]
    tiers: list[Sequence[Count]]
    if isinstance(pinned, CellCount):
        tiers = [
            [c for c in cells if c.segment == pinned.segment],
            [c for c in cells if c.mask == pinned.mask],
            [m for m in marginals if pinned.mask >> m.bit & 1],
            cells,
            released,
        ]  # fmt: skip
    else:
        tiers = [[c for c in cells if c.mask >> pinned.bit & 1], released]
    for tier in tiers:
        if tier:
            return min(tier, key=lambda c: (values[c], repr(c)))
    return None


class AnalystKnowledge:
    """What the analyst knows of the counts: linear equations and each count's range."""

    def __init__(self, values: Mapping[Count, int], threshold: int) -> None:
        self.values = dict(values)
        self.threshold = threshold
        self.total = sum(v for c, v in values.items() if isinstance(c, CellCount))
        cells = [c for c in values if isinstance(c, CellCount)]
        segments = {c.segment for c in cells}
        # Each equation: coefficients that sum to zero over the true counts, or to a known
        # size (segments): either way its value is known once the released counts are.
        self.equations: list[dict[Count, int]] = [
            {c: 1 for c in cells if c.segment == s} for s in sorted(segments, key=repr)
        ]
        for marginal in (c for c in values if isinstance(c, MarginalCount)):
            equation: dict[Count, int] = {c: 1 for c in cells if c.mask >> marginal.bit & 1}
            equation[marginal] = -1
            self.equations.append(equation)
        # The released counts that total matched cells (see `small_total`): each
        # segment's unmatched cell, and each marginal count, with the cells they total.
        self.totals: list[tuple[Count, list[CellCount]]] = []
        by_segment: dict[str | None, list[CellCount]] = {}
        for cell in cells:
            if cell.mask:
                by_segment.setdefault(cell.segment, []).append(cell)
        for segment in sorted(segments, key=repr):
            if CellCount(segment, 0) in values:
                self.totals.append((CellCount(segment, 0), by_segment.get(segment, [])))
        for marginal in sorted(
            (c for c in values if isinstance(c, MarginalCount)), key=lambda m: m.bit
        ):
            self.totals.append((marginal, [c for c in cells if c.mask >> marginal.bit & 1]))

    def bounds(self, count: Count, suppression: Suppression) -> tuple[int, int]:
        """The range a suppressed count's mark reveals: none beyond 0 to the base's size."""
        return 0, self.total

    def small_total(self, suppression: Suppression) -> Count | None:
        """A released count that would let the analyst total fewer than k hidden matched rows.

        Per segment: the unmatched cell, when released, gives the total of the
        suppressed matched cells (the segment's size minus what is released). Per other
        dataset: the pairwise count, when released, gives the total of its suppressed
        cells. Either total must be 0 (nothing suppressed) or at least k.
        """
        for released, matched in self.totals:
            if released in suppression:
                continue
            hidden = [self.values[c] for c in matched if c in suppression]
            if hidden and sum(hidden) < self.threshold:
                return released
        return None

    def pinned(self, target: Count, suppression: Suppression) -> bool:
        """Whether the knowledge leaves `target` exactly one feasible integer value."""
        unknown = suppression.all()
        index = {c: i for i, c in enumerate(unknown)}
        truth = np.array([self.values[c] for c in unknown], dtype=float)
        rows = []
        for equation in self.equations:
            row = np.zeros(len(unknown))
            for count, coefficient in equation.items():
                if count in index:
                    row[index[count]] = coefficient
            if row.any():
                rows.append(row)
        ranges = [self.bounds(c, suppression) for c in unknown]
        bounds = Bounds([r[0] for r in ranges], [r[1] for r in ranges])
        # The right-hand side is what the analyst computes from known figures; it equals
        # the equation applied to the true values of the unknowns.
        matrix = np.array(rows) if rows else np.zeros((0, len(unknown)))
        known = matrix @ truth
        constraints = [LinearConstraint(matrix, known, known)] if rows else []
        objective = np.zeros(len(unknown))
        objective[index[target]] = 1
        integrality = np.ones(len(unknown))
        extremes = []
        for sign in (1, -1):
            result = milp(
                sign * objective, constraints=constraints, bounds=bounds, integrality=integrality
            )
            if not result.success:
                return False
            extremes.append(sign * result.fun)
        return bool(round(extremes[1]) - round(extremes[0]) < 1)
