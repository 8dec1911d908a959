"""What a report asks and its exact answer, before any privacy rule."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from cleanroom.names import DatasetName

MAX_OTHER_DATASETS = 7


@dataclass(frozen=True)
class OverlapQuestion:
    """What a report asks: how `base` overlaps each of `others`, optionally by segment."""

    base: DatasetName
    others: tuple[DatasetName, ...]
    segment_column: str | None = None

    @property
    def datasets(self) -> tuple[DatasetName, ...]:
        """The base dataset, then the others."""
        return (self.base, *self.others)

    def ordered_pairs(self) -> list[tuple[DatasetName, DatasetName]]:
        """Every ordered pair (X, Y) of distinct datasets of the report."""
        return list(itertools.permutations(self.datasets, 2))


@dataclass(frozen=True)
class ExactOverlap:
    """The exact counts of one question, before any privacy rule. Never released as such.

    Attributes:
        sizes: Rows per dataset, in the question's order.
        cells: Base rows per (segment value or None, membership mask); bit i of the mask is
            set when the rows match `others[i]`.
        pairwise: Rows of X matching some row of Y, per ordered pair (X, Y).
    """

    question: OverlapQuestion
    sizes: dict[DatasetName, int]
    cells: dict[tuple[str | None, int], int]
    pairwise: dict[tuple[DatasetName, DatasetName], int]
