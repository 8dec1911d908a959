"""Exact deterministic matching of digest datasets (SPEC section 4).

`Matcher` is the seam: the report path asks it for an `ExactOverlap` and knows nothing of
how it is computed, so that an out-of-core or distributed engine can take over (README,
"Scaling"). `ArrowMatcher` works in memory, with no per-row Python:

- At upload, `sorted_layout` sorts each digest column once and drops repeated digests in
  the same pass; the stored file keeps the sorted digests (see `sorted_layout`).
- At report time, each digest column is a `SortedDigests`: the sorted digests, memory-
  mapped, and their 64-bit prefixes. Two datasets match by a merge join of the sorted
  prefixes (linear, no hash table), and every pair of equal prefixes is confirmed on all
  32 bytes, so that a prefix collision never makes a match.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cleanroom.names import DatasetName
from cleanroom.overlap import ExactOverlap, OverlapQuestion

BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.intp]
WordArray = npt.NDArray[np.uint64]

log = logging.getLogger(__name__)

DIGEST_BYTES = 32
_WORDS = DIGEST_BYTES // 8
_DIGEST = np.dtype((np.void, DIGEST_BYTES))
_BIG_ENDIAN_WORD = np.dtype(">u8")
_VERIFY_BLOCK = 1 << 16  # pairs confirmed at a time: keeps the gathered digests in cache
_JOIN_PART = 1 << 21  # digests per join task at most: bounds each task's temporaries
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


@dataclass(frozen=True)
class DatasetTable:
    """The rows of one committed dataset: digest columns by type and segment columns.

    A table in the sorted layout (as `DatasetFiles.open` returns committed datasets)
    carries its sorted digests; any other table is sorted when it is matched.
    """

    name: DatasetName
    table: pa.Table
    identifier_types: tuple[str, ...]
    segment_columns: tuple[str, ...]

    @property
    def row_count(self) -> int:
        """The number of rows."""
        return int(self.table.num_rows)


class Matcher(Protocol):
    """Computes the exact counts of a question over the datasets it names."""

    def matches(self, rows_of: DatasetTable, against: DatasetTable) -> BoolArray:
        """For each row of `rows_of`, whether some row of `against` shares a digest of a type."""
        ...

    def overlap(
        self, question: OverlapQuestion, tables: Mapping[DatasetName, DatasetTable]
    ) -> ExactOverlap:
        """The exact counts of `question`; `tables` holds every dataset it names."""
        ...


# Digest columns as NumPy -----------------------------------------------------------------


def digest_words(
    column: pa.Array[Any] | pa.ChunkedArray[Any],
) -> tuple[WordArray, BoolArray | None]:
    """A fixed_size_binary(32) column as an (n, 4) uint64 view of its bytes, and its validity.

    The view shares the column's memory (a memory-mapped file stays mapped, not read);
    a column of several chunks is first combined. The validity is None when every value
    is present. Null rows hold arbitrary bytes.
    """
    array = _one_chunk(column)
    words = _values(array, np.dtype(np.uint64), _WORDS).reshape(-1, _WORDS)
    if not array.null_count:
        return words, None
    return words, array.is_valid().to_numpy(zero_copy_only=False)


def _one_chunk(column: pa.Array[Any] | pa.ChunkedArray[Any]) -> pa.Array[Any]:
    if not isinstance(column, pa.ChunkedArray):
        return column
    if column.num_chunks == 1:
        return cast("pa.Array[Any]", column.chunk(0))
    return column.combine_chunks()


def _values(array: pa.Array[Any], dtype: np.dtype[Any], per_row: int = 1) -> npt.NDArray[Any]:
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
    # row's position below them. Prefixes equal in those high bits are put right below.
    position_bits = max(1, (count - 1).bit_length())
    shift = np.uint64(position_bits)
    packed = np.empty(count, dtype=np.uint64)
    tied = np.empty(max(0, count - 1), dtype=np.bool_)

    def pack(start: int, stop: int) -> None:
        part = packed[start:stop]
        if rows is None:
            keys = prefixes(words[start:stop])
        else:  # the prefixes of the rows these positions cover, then those of present rows
            first = rows[start]
            keys = prefixes(words[first : rows[stop - 1] + 1])[rows[start:stop] - first]
        np.right_shift(keys, shift, out=part)
        part <<= shift
        part |= np.arange(start, stop, dtype=np.uint64)

    def find_ties(start: int, stop: int) -> None:
        high = packed[start : stop + 1] >> shift
        np.equal(high[1:], high[:-1], out=tied[start : start + len(high) - 1])

    def unpack(start: int, stop: int) -> None:
        packed[start:stop] &= np.uint64((1 << position_bits) - 1)

    in_blocks(pack, count, workers)
    packed.sort()
    in_blocks(find_ties, count, workers)
    in_blocks(unpack, count, workers)
    positions = packed.view(np.intp)
    if tied.any():
        _sort_ties(words, rows, positions, tied, repeated)
    return (positions if rows is None else rows[positions]), repeated


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


def _sort_ties(
    words: WordArray,
    rows: IndexArray | None,
    positions: IndexArray,
    tied: BoolArray,
    repeated: BoolArray,
) -> None:
    """Sorts the runs that share their high prefix bits by whole digest, then by row."""
    linked = np.zeros(len(positions) + 1, dtype=np.bool_)
    linked[1:-1] = tied  # linked[k]: sorted entry k is in the run of entry k - 1
    members = np.flatnonzero(linked[:-1] | linked[1:])
    run = np.cumsum(~linked[members])
    position = positions[members]
    held = position if rows is None else rows[position]
    big_endian = words[held].view(_BIG_ENDIAN_WORD).astype(np.uint64)
    keys = (position, *(big_endian[:, w] for w in reversed(range(_WORDS))), run)
    order = np.lexsort(keys)
    positions[members] = position[order]
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
            holds = np.zeros(rows, dtype=np.bool_)
            holds[positions] = True
            columns[identifier_type] = _digest_array(
                _gather(words[identifier_type], order, rows, workers)[0], holds[order]
            )
            hidden[sorted_column(identifier_type)] = _digest_array(
                sorted_words, _leading(len(positions), rows)
            )
            hidden[row_column(identifier_type)] = _padded(
                _take(new_row, positions, workers), rows, row_type
            )
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
    words: WordArray, take: IndexArray, rows: int, workers: int
) -> tuple[WordArray, WordArray]:
    """`words[take]` in an array of `rows` digests (zeros after), and their prefixes."""
    values = np.zeros((rows, _WORDS), dtype=np.uint64)
    keys = np.empty(len(take), dtype=np.uint64)

    def gather(start: int, stop: int) -> None:
        part = values[start:stop]
        np.take(words, take[start:stop], axis=0, out=part, mode="clip")  # "clip": no buffer
        keys[start:stop] = part[:, 0].view(_BIG_ENDIAN_WORD)

    in_blocks(gather, len(take), workers)
    return values, keys


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


# Sorted digests and the merge join -------------------------------------------------------


@dataclass(frozen=True)
class SortedDigests:
    """The present digests of one identifier type of one dataset, sorted, and their rows.

    Attributes:
        words: The digests as an (m, 4) uint64 array, sorted by `prefixes`.
        keys: Their 64-bit prefixes, contiguous: all that the merge join reads.
        rows: The row of each digest; None when digest i is in row i.
        unique_keys: Whether no two digests share a prefix (then the merge join applies).
    """

    words: WordArray
    keys: WordArray
    rows: IndexArray | None
    unique_keys: bool

    @classmethod
    def of(cls, words: WordArray, rows: IndexArray | None) -> SortedDigests:
        """The index of sorted `words`, held by `rows`."""
        keys = prefixes(words)
        return cls(words, keys, rows, bool(len(keys) < 2 or np.all(keys[1:] != keys[:-1])))

    def __len__(self) -> int:
        return len(self.keys)

    def row_of(self, positions: IndexArray) -> IndexArray:
        """The rows that hold the digests at `positions`."""
        return positions if self.rows is None else self.rows[positions]


def digest_index(dataset: DatasetTable, identifier_type: str) -> SortedDigests:
    """The sorted digests of one type of a dataset: read from the sorted layout, or sorted now."""
    table = dataset.table
    metadata = table.schema.metadata or {}
    if metadata.get(LAYOUT_KEY) != SORTED_LAYOUT:
        words, valid = digest_words(table.column(identifier_type))
        order, _ = sort_digests(words, valid)
        return SortedDigests.of(np.take(words, order, axis=0), order)
    present = int(json.loads(metadata[PRESENT_KEY])[identifier_type])
    unique = bool(json.loads(metadata[UNIQUE_PREFIXES_KEY])[identifier_type])
    keys = _values(_one_chunk(table.column(prefix_column(identifier_type))), np.dtype(np.uint64))
    if metadata[SORTED_BY_KEY] == identifier_type.encode():
        words, _ = digest_words(table.column(identifier_type))
        rows = None
    else:
        words, _ = digest_words(table.column(sorted_column(identifier_type)))
        column = _one_chunk(table.column(row_column(identifier_type)))
        rows = _values(column, np.dtype(column.type.to_pandas_dtype()))[:present]
        rows = rows.astype(np.intp, copy=False)
    return SortedDigests(words[:present], keys[:present], rows, unique)


def match_sorted(x: SortedDigests, y: SortedDigests) -> tuple[IndexArray, IndexArray]:
    """Every pair of positions (i, j) where `x` and `y` hold the same digest, all 32 bytes.

    `i` comes out increasing. Prefixes are joined first: a merge join when neither side
    repeats a prefix (always, but for a 2^-64 chance or a deliberate collision), otherwise
    a range search. Equal prefixes then have their whole digests compared.
    """
    return _match_range(x, y, slice(0, len(x)), slice(0, len(y)))


def key_ranges(x: SortedDigests, y: SortedDigests, parts: int) -> list[tuple[slice, slice]]:
    """Splits two sorted digest lists into `parts` pairs of ranges holding the same prefixes.

    Digests in different ranges never match, so that the ranges can be joined apart, in
    parallel (or, past one machine, on different machines: README, "Scaling").
    """
    if parts < 2 or len(x) < parts:
        return [(slice(0, len(x)), slice(0, len(y)))]
    cuts = x.keys[np.arange(1, parts) * len(x) // parts]
    x_cuts = [0, *np.searchsorted(x.keys, cuts).tolist(), len(x)]
    y_cuts = [0, *np.searchsorted(y.keys, cuts).tolist(), len(y)]
    return [
        (slice(x_cuts[k], x_cuts[k + 1]), slice(y_cuts[k], y_cuts[k + 1])) for k in range(parts)
    ]


def _match_range(
    x: SortedDigests, y: SortedDigests, x_range: slice, y_range: slice
) -> tuple[IndexArray, IndexArray]:
    """`match_sorted` within a pair of `key_ranges`; positions are of the whole lists."""
    x_keys, y_keys = x.keys[x_range], y.keys[y_range]
    if not len(x_keys) or not len(y_keys):
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    if x.unique_keys and y.unique_keys:
        i, j = _merge_join(x_keys, y_keys)
    else:
        i, j = _range_join(x_keys, y_keys)
    i += x_range.start
    j += y_range.start
    same = _same_digests(x.words, i, y.words, j)
    return i[same], j[same]


def _merge_join(x: WordArray, y: WordArray) -> tuple[IndexArray, IndexArray]:
    """Equal values of two strictly increasing arrays, by pandas' linear merge (GIL released)."""
    _, _, found = pd.Index(x, copy=False).join(
        pd.Index(y, copy=False), how="left", return_indexers=True
    )
    if found is None:  # pandas' shortcut when both sides are equal
        everything = np.arange(len(x), dtype=np.intp)
        return everything, everything.copy()
    i = np.flatnonzero(found >= 0)
    return i, found[i].astype(np.intp, copy=False)


def _range_join(x: WordArray, y: WordArray) -> tuple[IndexArray, IndexArray]:
    """Every (i, j) with x[i] == y[j], for sorted arrays that may repeat values."""
    low = np.searchsorted(y, x, side="left")
    count = np.searchsorted(y, x, side="right") - low
    i = np.repeat(np.arange(len(x), dtype=np.intp), count)
    starts = np.cumsum(count) - count
    j = np.arange(len(i), dtype=np.intp) + np.repeat(low - starts, count)
    return i, j


def _same_digests(x: WordArray, i: IndexArray, y: WordArray, j: IndexArray) -> BoolArray:
    """Whether x[i] and y[j] are the same 32 bytes, pair by pair (the prefixes are equal)."""
    same = np.empty(len(i), dtype=np.bool_)
    left = np.ascontiguousarray(x).view(_DIGEST).reshape(-1)
    right = np.ascontiguousarray(y).view(_DIGEST).reshape(-1)
    for start in range(0, len(i), _VERIFY_BLOCK):
        block = slice(start, start + _VERIFY_BLOCK)
        a = np.take(left, i[block]).view(np.uint64).reshape(-1, _WORDS)
        b = np.take(right, j[block]).view(np.uint64).reshape(-1, _WORDS)
        equal = a[:, 1] == b[:, 1]  # word 0 is the prefix, equal already
        for word in range(2, _WORDS):
            equal &= a[:, word] == b[:, word]
        same[block] = equal
    return same


# The matcher ----------------------------------------------------------------------------


class ArrowMatcher:
    """Matches in memory: merge joins of sorted digest columns, split over the cores.

    Args:
        workers: Joins run at once (NumPy and pandas release the GIL); default: the
            machine's cores, at most 4. Each pair of datasets is split into this many
            ranges of prefixes (`key_ranges`), so that even one pair uses every core.
    """

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = workers or min(4, os.cpu_count() or 1)

    def matches(self, rows_of: DatasetTable, against: DatasetTable) -> BoolArray:
        """For each row of `rows_of`, whether some row of `against` shares a digest of a type."""
        flags = self._flags([rows_of, against])
        return flags[0, 1]

    def overlap(
        self, question: OverlapQuestion, tables: Mapping[DatasetName, DatasetTable]
    ) -> ExactOverlap:
        """The exact counts of `question` (see `ExactOverlap`)."""
        started = time.perf_counter()
        datasets = question.datasets
        flags = self._flags([tables[d] for d in datasets])
        pattern = np.zeros(tables[question.base].row_count, dtype=np.uint8)
        for bit in range(len(question.others)):
            pattern |= flags[0, bit + 1].view(np.uint8) << np.uint8(bit)
        patterns = 1 << len(question.others)
        labels, codes = _segment_codes(tables[question.base], question.segment_column)
        counts = _cell_counts(pattern, codes, patterns * len(labels), patterns)
        cells = {
            (label, mask): int(counts[i * patterns + mask])
            for i, label in enumerate(labels)
            for mask in range(patterns)
        }
        index = {d: k for k, d in enumerate(datasets)}
        pairwise = {
            (x, y): int(np.count_nonzero(flags[index[x], index[y]]))
            for x, y in question.ordered_pairs()
        }
        sizes = {d: tables[d].row_count for d in datasets}
        log.info(
            "matched %d datasets (%d rows) in %.3f s",
            len(datasets),
            sum(sizes.values()),
            time.perf_counter() - started,
        )
        return ExactOverlap(question=question, sizes=sizes, cells=cells, pairwise=pairwise)

    def _flags(self, datasets: Sequence[DatasetTable]) -> dict[tuple[int, int], BoolArray]:
        """For each ordered pair (x, y) of the datasets, whether each row of x matches y."""
        flags = {
            (x, y): np.zeros(datasets[x].row_count, dtype=np.bool_)
            for x, y in itertools.permutations(range(len(datasets)), 2)
        }
        types = list(dict.fromkeys(t for d in datasets for t in d.identifier_types))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="match") as pool:
            for identifier_type in types:
                holders = [
                    k for k, d in enumerate(datasets) if identifier_type in d.identifier_types
                ]
                if len(holders) < 2:
                    continue
                loading = [pool.submit(digest_index, datasets[k], identifier_type) for k in holders]
                indexes = {k: future.result() for k, future in zip(holders, loading, strict=True)}
                joins = [
                    pool.submit(_mark, indexes[x], indexes[y], ranges, flags[x, y], flags[y, x])
                    for x, y in itertools.combinations(holders, 2)
                    for ranges in key_ranges(
                        indexes[x], indexes[y], max(self.workers, len(indexes[x]) // _JOIN_PART)
                    )
                ]
                for join in joins:
                    join.result()
        return flags


def _mark(
    x: SortedDigests,
    y: SortedDigests,
    ranges: tuple[slice, slice],
    x_matches_y: BoolArray,
    y_matches_x: BoolArray,
) -> None:
    """Joins one pair of key ranges and flags the rows on both sides that matched.

    Joins of the same pair of datasets over other types may flag the same rows at the
    same time: they only ever store True, so none is lost.
    """
    i, j = _match_range(x, y, *ranges)
    x_matches_y[x.row_of(i)] = True
    y_matches_x[y.row_of(j)] = True


def _cell_counts(
    pattern: npt.NDArray[np.uint8], codes: npt.NDArray[np.intp] | None, cells: int, patterns: int
) -> npt.NDArray[np.intp]:
    """Rows per (segment code, pattern), counted a block at a time to keep temporaries small."""
    counts = np.zeros(cells, dtype=np.intp)
    block = 1 << 20
    for start in range(0, len(pattern), block):
        keys = pattern[start : start + block].astype(np.intp)
        if codes is not None:
            keys += codes[start : start + block] * patterns
        counts += np.bincount(keys, minlength=cells)
    return counts


def _segment_codes(
    base: DatasetTable, segment_column: str | None
) -> tuple[list[str | None], npt.NDArray[np.intp] | None]:
    """The segment labels (sorted, None for rows without a value) and each row's label index."""
    if segment_column is None:
        return [None], None
    array = _one_chunk(base.table.column(segment_column))
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array, null_encoding="encode")
    encoded = cast("pa.DictionaryArray[Any, Any]", array)
    found: list[str | None] = encoded.dictionary.to_pylist()
    if encoded.null_count:
        found.append(None)  # nulls of the indices take the code after the dictionary's
    indices = cast("pa.Array[Any]", encoded.indices)
    if encoded.null_count:
        indices = indices.fill_null(pa.scalar(len(found) - 1, indices.type))
    labels = sorted(set(found), key=lambda v: (v is not None, v or ""))
    position = {label: i for i, label in enumerate(labels)}
    remap = np.array([position[v] for v in found], dtype=np.intp)
    return labels, remap[indices.to_numpy(zero_copy_only=False)]
