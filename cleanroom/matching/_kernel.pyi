"""Types of the compiled matching kernel (`_kernel.c`); `memory` is its one caller."""

from collections.abc import Sequence
from typing import Any

from numpy.typing import NDArray

Buffer = NDArray[Any]  # any C-contiguous buffer; the kernel checks sizes and alignment

# keys, words, rows (or None), row width (0, 4 or 8), start, stop, bit, masks, mask width,
# whether no two keys are equal
Side = tuple[Buffer, Buffer, Buffer | None, int, int, int, int, Buffer, int, bool]

def mark(sides: Sequence[Side], /) -> None:
    """Merge-joins the sorted lists' [start, stop) and marks the rows that matched.

    Each matched row's mask is ORed with the bits of the other lists holding its digest.
    """

def pairs(
    x_keys: Buffer,
    x_words: Buffer,
    x_start: int,
    x_stop: int,
    y_keys: Buffer,
    y_words: Buffer,
    y_start: int,
    y_stop: int,
    out_i: Buffer,
    out_j: Buffer,
    /,
) -> int:
    """Writes every (i, j) holding the same digest while they fit; returns how many there are."""

def histogram(
    masks: Buffer,
    mask_width: int,
    codes: Buffer | None,
    code_width: int,
    start: int,
    stop: int,
    values: int,
    out: Buffer,
    /,
) -> None:
    """Adds one to `out[code * values + mask]` for each row in [start, stop).

    The code is 0 for every row when `codes` is None (`code_width` then 0).
    """

def scatter(
    hits: Buffer,
    width: int,
    rows: Buffer,
    row_width: int,
    start: int,
    stop: int,
    masks: Buffer,
    /,
) -> None:
    """ORs `hits[p]` into `masks[rows[p]]` for each p in [start, stop)."""
