"""The privacy budget of a collaboration: epsilon, spent by noisy reports, never reset.

Epsilon is kept in millionths, as an integer, so that spending and comparing never drift
with floating-point rounding, and a restart reads back exactly what was spent.
"""

from __future__ import annotations

from dataclasses import dataclass

MICRO = 1_000_000


def to_micro(epsilon: float) -> int:
    """Epsilon in millionths, rounded up: the ledger never under-counts a spend."""
    return -(-round(epsilon * MICRO * 1000) // 1000)


@dataclass(frozen=True)
class PrivacyBudget:
    """A collaboration's budget as the ledger holds it."""

    total_micro: int
    spent_micro: int
    reports: int

    def __post_init__(self) -> None:
        if self.total_micro <= 0 or self.spent_micro < 0:
            raise ValueError("a budget is positive and its spend is not negative")

    @property
    def total(self) -> float:
        """The total epsilon."""
        return self.total_micro / MICRO

    @property
    def spent(self) -> float:
        """The epsilon spent so far."""
        return self.spent_micro / MICRO

    @property
    def remaining(self) -> float:
        """The epsilon left (never negative)."""
        return max(self.total_micro - self.spent_micro, 0) / MICRO

    def allows(self, spend_micro: int) -> bool:
        """Whether a spend fits in what is left."""
        return self.spent_micro + spend_micro <= self.total_micro
