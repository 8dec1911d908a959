"""Digest columns as NumPy, and the sorted layout of a stored dataset.

At upload, `sorted_layout` sorts each digest column once and drops repeated digests in the
same pass; the stored file keeps the sorted digests, so that matching reads them as they
are (memory-mapped) instead of sorting at report time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from cleanroom.matching.engine import BoolArray, IndexArray, WordArray

DIGEST_BYTES = 32
WORDS = DIGEST_BYTES // 8
DIGEST = np.dtype((np.void, DIGEST_BYTES))
_BIG_ENDIAN_WORD = np.dtype(">u8")
_BLOCK = 1 << 20  # rows per block of a pass split over threads (`in_blocks`)

LAYOUT_KEY = b"cleanroom.layout"
SORTED_LAYOUT = b"sorted-digests/1"
SORTED_BY_KEY = b"cleanroom.sorted_by"
PRESENT_KEY = b"cleanroom.present"
UNIQUE_PREFIXES_KEY = b"cleanroom.unique_prefixes"


def sorted_column(identifier_type: str) -> str:
    """The stored column that holds a type's digests sorted (types after the first)."""
    return f"{identifier_type}.sorted"


def prefix_column(identifier_type: str) -> str:
    """The stored column that holds the sorted 64-bit prefixes of a type's digests."""
    return f"{identifier_type}.prefix"


def row_column(identifier_type: str) -> str:
    """The stored column that holds the row of each sorted digest (types after the first)."""
    return f"{identifier_type}.row"


# Digest columns as NumPy -----------------------------------------------------------------


def digest_words(
    column: pa.Array[Any] | pa.ChunkedArray[Any],
) -> tuple[WordArray, BoolArray | None]:
    """A fixed_size_binary(32) column as an (n, 4) uint64 view of its bytes, and its validity.

    The view shares the column's memory (a memory-mapped file stays mapped, not read);
    a column of several chunks is first combined. The validity is None when every value
    is present. Null rows hold arbitrary bytes.
    """
    array = one_chunk(column)
    words = fixed_width_values(array, np.dtype(np.uint64), WORDS).reshape(-1, WORDS)
    if not array.null_count:
        return words, None
    return words, array.is_valid().to_numpy(zero_copy_only=False)


def one_chunk(column: pa.Array[Any] | pa.ChunkedArray[Any]) -> pa.Array[Any]:
    """The column as one array: a chunked column of several chunks is combined."""
    if not isinstance(column, pa.ChunkedArray):
        return column
    if column.num_chunks == 1:
        return cast("pa.Array[Any]", column.chunk(0))
    return column.combine_chunks()


def fixed_width_values(
    array: pa.Array[Any], dtype: np.dtype[Any], per_row: int = 1
) -> npt.NDArray[Any]:
    """The values buffer of a fixed-width array, as NumPy, without copying."""
    data = array.buffers()[1]
    count = len(array) * per_row
    if data is None or not count:
        return np.zeros(count, dtype=dtype)
    return np.frombuffer(
        memoryview(data), dtype=dtype, count=count, offset=array.offset * per_row * dtype.itemsize
    )


def prefixes(words: WordArray) -> WordArray:
    """The first 8 bytes of each digest as a big-endian number: sorting these sorts digests."""
    return words[:, 0].view(_BIG_ENDIAN_WORD).astype(np.uint64)


def sort_digests(
    words: WordArray, valid: BoolArray | None = None, *, workers: int = 1
) -> tuple[IndexArray, BoolArray]:
    """Sorts the present digests of a column by all 32 bytes, earlier rows first among equals.

    Args:
        words: The column's digests (`digest_words`).
        valid: Which rows hold one; None for all.
        workers: Threads for the passes before and after the sort.

    Returns:
        The rows of the present digests in sorted order, and for each whether it repeats
        the digest before it (so that keeping the others keeps each digest's first row).
    """
    rows = None if valid is None else np.flatnonzero(valid)
    count = len(words) if rows is None else len(rows)
    repeated = np.zeros(count, dtype=np.bool_)
    if count == 0:
        return np.zeros(0, dtype=np.intp), repeated
    # One sort of plain integers (SIMD, no argsort): the high bits of each prefix with the
    # row number below them (the row itself, so that no gather maps positions back to
    # rows after the sort). Prefixes equal in those high bits are put right below.
    row_bits = max(1, (len(words) - 1).bit_length())
    shift = np.uint64(row_bits)
    packed = np.empty(count, dtype=np.uint64)
    tied = np.empty(max(0, count - 1), dtype=np.bool_)

    def pack(start: int, stop: int) -> None:
        part = packed[start:stop]
        if rows is None:
            keys = prefixes(words[start:stop])
            numbers = np.arange(start, stop, dtype=np.uint64)
        else:  # the prefixes of the rows these positions cover, then those of present rows
            first = rows[start]
            numbers = rows[start:stop].astype(np.uint64)
            keys = prefixes(words[first : rows[stop - 1] + 1])[rows[start:stop] - first]
        np.right_shift(keys, shift, out=part)
        part <<= shift
        part |= numbers

    def find_ties(start: int, stop: int) -> None:
        high = packed[start : stop + 1] >> shift
        np.equal(high[1:], high[:-1], out=tied[start : start + len(high) - 1])

    def unpack(start: int, stop: int) -> None:
        packed[start:stop] &= np.uint64((1 << row_bits) - 1)

    in_blocks(pack, count, workers)
    packed.sort()
    in_blocks(find_ties, count, workers)
    in_blocks(unpack, count, workers)
    held = packed.view(np.intp)
    if tied.any():
        _sort_ties(words, held, tied, repeated)
    return held, repeated


def in_blocks(work: Callable[[int, int], None], count: int, workers: int) -> None:
    """Runs `work(start, stop)` over consecutive blocks of `range(count)`, `workers` at once.

    For passes of NumPy over large arrays, which release the GIL: each block writes only
    its own part of the output. Blocks of a million rows keep each pass's temporaries
    small enough to be reused from the heap rather than mapped fresh from the kernel
    (which, on a virtual machine, can cost more than the work).
    """
    blocks = [(start, min(count, start + _BLOCK)) for start in range(0, count, _BLOCK)]
    if workers < 2 or len(blocks) < 2:
        for start, stop in blocks:
            work(start, stop)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="block") as pool:
        for future in [pool.submit(work, start, stop) for start, stop in blocks]:
            future.result()


def _sort_ties(words: WordArray, held: IndexArray, tied: BoolArray, repeated: BoolArray) -> None:
    """Sorts the runs of rows `held` sharing their high prefix bits by whole digest, then row."""
    linked = np.zeros(len(held) + 1, dtype=np.bool_)
    linked[1:-1] = tied  # linked[k]: sorted entry k is in the run of entry k - 1
    members = np.flatnonzero(linked[:-1] | linked[1:])
    run = np.cumsum(~linked[members])
    row = held[members]
    big_endian = words[row].view(_BIG_ENDIAN_WORD).astype(np.uint64)
    keys = (row, *(big_endian[:, w] for w in reversed(range(WORDS))), run)
    order = np.lexsort(keys)
    held[members] = row[order]
    big_endian = big_endian[order]
    same = (big_endian[1:] == big_endian[:-1]).all(axis=1) & (run[1:] == run[:-1])
    repeated[members[1:][same]] = True


# The sorted layout of a stored dataset ---------------------------------------------------


def sorted_layout(
    table: pa.Table,
    identifier_types: Sequence[str],
    segment_columns: Sequence[str],
    *,
    workers: int | None = None,
) -> tuple[pa.Table, list[tuple[int, int]]]:
    """The table as it is stored: sorted for matching, each digest kept in its first row only.

    - Rows are ordered by the digest of the first identifier type; rows without one come
      last, in upload order. The first type's column is therefore its own sorted index.
    - Each later type `t` also gets `t.sorted` (its digests, sorted) and `t.row` (the row
      of each); every type gets `t.prefix` (the sorted 64-bit prefixes, all the merge join
      reads). These columns are padded with nulls to the table's length.
    - A digest that a row repeats from an earlier row of the same type becomes null in the
      later row (SPEC section 3).
    - Segment columns are dictionary-encoded.

    Args:
        table: Every row uploaded, in upload order.
        identifier_types: Its digest columns, the first one the rows are sorted by.
        segment_columns: Its segment columns.
        workers: Threads for the passes over the rows; default: the machine's cores.

    Returns:
        The stored table, and per identifier type the rows holding a digest and the
        repeats dropped.
    """
    workers = workers or os.cpu_count() or 1
    rows = table.num_rows
    first = identifier_types[0]
    words: dict[str, WordArray] = {}
    kept: dict[str, IndexArray] = {}
    counts = []
    for identifier_type in identifier_types:
        words[identifier_type], valid = digest_words(table.column(identifier_type))
        order, repeated = sort_digests(words[identifier_type], valid, workers=workers)
        kept[identifier_type] = order[~repeated] if repeated.any() else order
        counts.append((len(kept[identifier_type]), int(repeated.sum())))
    order = kept[first]
    if len(order) < rows:
        rest = np.ones(rows, dtype=np.bool_)
        rest[order] = False
        order = np.concatenate([order, np.flatnonzero(rest)])
    columns: dict[str, pa.Array[Any]] = {}
    hidden: dict[str, pa.Array[Any]] = {}
    present: dict[str, int] = {}
    unique: dict[str, bool] = {}
    row_type = np.int32 if rows < 2**31 else np.int64
    new_row = np.empty(rows if len(identifier_types) > 1 else 0, dtype=row_type)

    def renumber(start: int, stop: int) -> None:
        new_row[order[start:stop]] = np.arange(start, stop, dtype=row_type)

    if len(new_row):
        in_blocks(renumber, rows, workers)
    for identifier_type in identifier_types:
        positions = kept[identifier_type]
        sorted_words, keys = _gather(words[identifier_type], positions, rows, workers)
        present[identifier_type] = len(positions)
        unique[identifier_type] = bool(len(keys) < 2 or np.all(keys[1:] != keys[:-1]))
        if identifier_type == first:
            columns[first] = _digest_array(sorted_words, _leading(len(positions), rows))
        else:
            stored_rows = _take(new_row, positions, workers)
            holds = np.zeros(rows, dtype=np.bool_)  # by stored row: one scatter, no gather
            _scatter(holds, stored_rows, workers)
            columns[identifier_type] = _digest_array(
                _gather(words[identifier_type], order, rows, workers, keys=False)[0], holds
            )
            hidden[sorted_column(identifier_type)] = _digest_array(
                sorted_words, _leading(len(positions), rows)
            )
            hidden[row_column(identifier_type)] = _padded(stored_rows, rows, row_type)
        hidden[prefix_column(identifier_type)] = _padded(keys, rows, np.uint64)
    for segment in segment_columns:
        columns[segment] = _dictionary(table.column(segment)).take(order)
    metadata = {
        LAYOUT_KEY: SORTED_LAYOUT,
        SORTED_BY_KEY: first.encode(),
        PRESENT_KEY: json.dumps(present).encode(),
        UNIQUE_PREFIXES_KEY: json.dumps(unique).encode(),
    }
    return pa.table({**columns, **hidden}).replace_schema_metadata(metadata), counts


def _gather(
    words: WordArray, take: IndexArray, rows: int, workers: int, *, keys: bool = True
) -> tuple[WordArray, WordArray]:
    """`words[take]` in an array of `rows` digests (zeros after), and their prefixes.

    The prefixes are left empty unless `keys`.
    """
    values = np.zeros((rows, WORDS), dtype=np.uint64)
    prefix = np.empty(len(take) if keys else 0, dtype=np.uint64)

    def gather(start: int, stop: int) -> None:
        part = values[start:stop]
        np.take(words, take[start:stop], axis=0, out=part, mode="clip")  # "clip": no buffer
        if keys:
            prefix[start:stop] = part[:, 0].view(_BIG_ENDIAN_WORD)

    in_blocks(gather, len(take), workers)
    return values, prefix


def _scatter(flags: BoolArray, at: npt.NDArray[Any], workers: int) -> None:
    """Sets `flags[at]`, a block at a time over `workers` threads (`at` has no repeats)."""

    def scatter(start: int, stop: int) -> None:
        flags[at[start:stop]] = True

    in_blocks(scatter, len(at), workers)


def _take(values: npt.NDArray[Any], take: IndexArray, workers: int) -> npt.NDArray[Any]:
    """`values[take]`, a block at a time over `workers` threads."""
    out = np.empty(len(take), dtype=values.dtype)

    def gather(start: int, stop: int) -> None:
        np.take(values, take[start:stop], out=out[start:stop], mode="clip")

    in_blocks(gather, len(take), workers)
    return out


def _leading(count: int, rows: int) -> BoolArray | None:
    """Validity for `count` values followed by nulls; None when there are no nulls."""
    if count == rows:
        return None
    valid = np.zeros(rows, dtype=np.bool_)
    valid[:count] = True
    return valid


def _digest_array(values: WordArray, valid: BoolArray | None) -> pa.Array[Any]:
    """A fixed_size_binary(32) array over `values`, null where not `valid`."""
    rows = len(values)
    if valid is not None and valid.all():
        valid = None
    validity = None if valid is None else pa.py_buffer(_bitmap(valid).data)
    nulls = 0 if valid is None else int(rows - np.count_nonzero(valid))
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(DIGEST_BYTES), rows, [validity, pa.py_buffer(values.data)], null_count=nulls
    )


def _padded(values: npt.NDArray[Any], rows: int, kind: type[np.generic]) -> pa.Array[Any]:
    """An integer array of `values` followed by nulls up to `rows`."""
    if len(values) == rows:
        return cast("pa.Array[Any]", pa.array(values.astype(kind, copy=False)))
    padded = np.zeros(rows, dtype=kind)
    padded[: len(values)] = values
    validity = pa.py_buffer(_bitmap(cast("BoolArray", _leading(len(values), rows))).data)
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(np.dtype(kind)),
        rows,
        [validity, pa.py_buffer(padded.data)],
        null_count=rows - len(values),
    )


def _bitmap(valid: BoolArray) -> npt.NDArray[np.uint8]:
    return np.packbits(valid, bitorder="little")


def _dictionary(column: pa.ChunkedArray[Any]) -> pa.DictionaryArray[Any, Any]:
    """A segment column dictionary-encoded once, with the smallest index type that fits."""
    array = column.combine_chunks()
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    encoded = cast("pa.DictionaryArray[Any, Any]", array)
    index = pa.int8() if len(encoded.dictionary) < 2**7 else pa.int32()
    return cast(
        "pa.DictionaryArray[Any, Any]",
        encoded.cast(pa.dictionary(index, encoded.dictionary.type)),
    )
