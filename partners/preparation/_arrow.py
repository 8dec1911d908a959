"""Small, typed bridges between Arrow arrays and NumPy for the column-at-a-time code.

Flags are computed by Arrow kernels and combined as NumPy masks (cheaper, and clearer with
`&`, `|` and `~`); fixed-size binary columns (digests, decoded hashes) are built from and read
as NumPy byte matrices without a copy per value.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Mask = np.ndarray[Any, np.dtype[np.bool_]]
"""One flag per row."""

ByteMatrix = np.ndarray[Any, np.dtype[np.uint8]]
"""One row of bytes per value."""


def to_mask(flags: Any) -> Mask:
    """Turn Arrow flags into a NumPy mask, reading null flags (from null cells) as False."""
    filled = pc.fill_null(flags, pa.scalar(False))
    return cast(Mask, np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool))


def from_mask(mask: Mask) -> pa.BooleanArray:
    """Turn a NumPy mask into Arrow flags."""
    return pa.array(mask, pa.bool_())


def byte_lengths(values: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Return the length in bytes of each string (0 for null)."""
    lengths = pc.fill_null(pc.binary_length(values), pa.scalar(0, pa.int32()))
    return np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64)


def int32(value: int) -> pa.Scalar[Any]:
    """Return an Arrow int32 scalar, to compare with lengths and counts."""
    return pa.scalar(value, pa.int32())


def buffer_bytes(buffer: pa.Buffer | None) -> ByteMatrix:
    """View an Arrow buffer as NumPy bytes (empty for a missing buffer)."""
    if buffer is None:
        return np.zeros(0, dtype=np.uint8)
    return np.frombuffer(memoryview(buffer), dtype=np.uint8)


def string_offsets(strings: pa.Array[Any]) -> np.ndarray[Any, np.dtype[np.int32]]:
    """Return the `len + 1` offsets of a string array's values in its data buffer."""
    offsets = np.frombuffer(memoryview(cast(pa.Buffer, strings.buffers()[1])), dtype=np.int32)
    return offsets[strings.offset : strings.offset + len(strings) + 1]


def string_data(strings: pa.Array[Any]) -> ByteMatrix:
    """View the data buffer of a string array (all its values, back to back)."""
    return buffer_bytes(strings.buffers()[2])


def fixed_width_bytes(column: pa.Array[Any], width: int) -> ByteMatrix:
    """View a `fixed_size_binary(width)` column as a (rows, width) matrix, nulls included."""
    data = buffer_bytes(column.buffers()[1])
    start = column.offset * width
    return data[start : start + len(column) * width].reshape(len(column), width)


def fixed_binary(data: ByteMatrix, valid: Mask) -> pa.FixedSizeBinaryArray:
    """Build a `fixed_size_binary` column from a (rows, width) matrix; null where not valid."""
    rows, width = data.shape
    validity = pa.py_buffer(np.packbits(valid, bitorder="little").data)
    values = pa.py_buffer(np.ascontiguousarray(data).data)
    array = pa.Array.from_buffers(pa.binary(width), rows, [validity, values])
    return cast(pa.FixedSizeBinaryArray, array)
