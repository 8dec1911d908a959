"""Coarse sizes for the query log: auditors see a dataset's order of magnitude, not its size.

A report releases a dataset's size only under the privacy rules (noise, or exact mode's
quotas); the log, which every auditor reads, must not give it for free.
"""

from __future__ import annotations


def size_range(count: int) -> str:
    """The decade a non-negative count falls in: "0", "1-9", "10-99", "100-999", ..."""
    if count <= 0:
        return "0"
    low = 10 ** (len(str(count)) - 1)
    return f"{low}-{low * 10 - 1}"
