"""Masking and shuffling a brand's rows: what makes them double-blind before they leave it.

An upload masks every digest `d` of type `t` as `k_b · P(d)`; a hop multiplies every
element it receives by `k_b`. Both keep nulls null and keep each row whole, and both are
followed by a shuffle: a uniformly random permutation of the rows drawn from the operating
system's CSPRNG, so that the order of the rows that leave the brand says nothing of the
order they came in. Every column moves with its row, `_row_tag` among them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from cleanroom.group import ristretto255

ELEMENT_TYPE = pa.binary(ristretto255.ELEMENT_BYTES)
"""The Arrow type of a column of digests or of elements: `fixed_size_binary(32)`."""

SLICE_ROWS = 1 << 16
"""Rows masked per call, so that progress is told while a large column is masked."""


def mask_digests(
    table: pa.Table,
    key: bytes,
    identifier_types: Sequence[str],
    *,
    progress: Callable[[int], None] | None = None,
) -> pa.Table:
    """`key · P(d)` for every digest `d` of each identifier column; nulls stay null.

    Args:
        table: Rows whose identifier columns (named after their types) hold digests.
        key: The brand's blind key.
        identifier_types: The identifier columns.
        progress: Called with the number of rows of each column slice once masked (each
            row is counted once per identifier column).
    """
    return _apply(
        table, identifier_types, lambda rows, t: ristretto255.mask_digests(key, rows, t), progress
    )


def multiply_elements(
    table: pa.Table,
    key: bytes,
    identifier_types: Sequence[str],
    *,
    progress: Callable[[int], None] | None = None,
) -> pa.Table:
    """`key ·` every element of each identifier column; nulls stay null.

    Raises:
        cleanroom.group.ristretto255.InvalidElementError: A value is not an element.
    """
    return _apply(
        table, identifier_types, lambda rows, _: ristretto255.multiply(key, rows), progress
    )


def shuffled(table: pa.Table) -> pa.Table:
    """The table's rows in a uniformly random order, every column moving with its row."""
    return table.take(random_permutation(table.num_rows))


def random_permutation(count: int) -> npt.NDArray[np.int64]:
    """A uniformly random permutation of `range(count)`, from the OS's CSPRNG.

    The rows are sorted by 128 random bits each (`os.urandom`): two rows draw the same bits
    with a probability below `count² / 2¹²⁹`, so the permutation is uniform to within
    that, and no bit of it comes from a predictable generator.
    """
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.frombuffer(os.urandom(16 * count), dtype=np.uint64).reshape(count, 2)
    return np.lexsort((keys[:, 1], keys[:, 0])).astype(np.int64)


def element_rows(column: Any) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """A `fixed_size_binary(32)` column as an `(n, 32)` matrix, and where it is not null."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.type != ELEMENT_TYPE:
        raise TypeError(f"not a column of {ELEMENT_TYPE}: {array.type}")
    width = ristretto255.ELEMENT_BYTES
    data = array.buffers()[1]
    matrix = (
        np.frombuffer(memoryview(data), dtype=np.uint8)
        if data is not None
        else np.zeros(0, np.uint8)
    )
    matrix = matrix[array.offset * width : (array.offset + len(array)) * width]
    present = pc.is_valid(array).to_numpy(zero_copy_only=False)
    return matrix.reshape(len(array), width), np.asarray(present, dtype=np.bool_)


def element_column(
    matrix: npt.NDArray[np.uint8], present: npt.NDArray[np.bool_]
) -> pa.FixedSizeBinaryArray:
    """A `fixed_size_binary(32)` column of the rows of `matrix`, null where not `present`."""
    count = len(present)
    validity = None
    nulls = int(count - np.count_nonzero(present))
    if nulls:
        validity = pa.py_buffer(np.packbits(present, bitorder="little").tobytes())
    values = pa.py_buffer(np.ascontiguousarray(matrix, dtype=np.uint8).tobytes())
    array: Any = pa.Array.from_buffers(ELEMENT_TYPE, count, [validity, values], null_count=nulls)
    result: pa.FixedSizeBinaryArray = array
    return result


def _apply(
    table: pa.Table,
    identifier_types: Sequence[str],
    operation: Callable[[npt.NDArray[np.uint8], str], npt.NDArray[np.uint8]],
    progress: Callable[[int], None] | None,
) -> pa.Table:
    """The table with `operation` applied to the present values of each identifier column."""
    for identifier_type in identifier_types:
        index = table.schema.get_field_index(identifier_type)
        matrix, present = element_rows(table.column(index))
        out = np.zeros_like(matrix)
        rows = np.flatnonzero(present)
        for start in range(0, len(present), SLICE_ROWS):
            first, last = np.searchsorted(rows, [start, start + SLICE_ROWS])
            chosen = rows[first:last]
            if len(chosen):
                out[chosen] = operation(matrix[chosen], identifier_type)
            if progress:
                progress(min(SLICE_ROWS, len(present) - start))
        table = table.set_column(index, table.schema.field(index), element_column(out, present))
    return table
