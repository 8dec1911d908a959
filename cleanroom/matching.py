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
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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

DIGEST_BYTES = 32
_WORDS = DIGEST_BYTES // 8
_DIGEST = np.dtype((np.void, DIGEST_BYTES))
_BIG_ENDIAN_WORD = np.dtype(">u8")
_VERIFY_BLOCK = 1 << 16  # pairs confirmed at a time: keeps the gathered digests in cache

LAYOUT_KEY = b"cleanroom.layout"
SORTED_LAYOUT = b"sorted-digests/1"
SORTED_BY_KEY = b"cleanroom.sorted_by"
PRESENT_KEY = b"cleanroom.present"


def sorted_column(identifier_type: str) -> str:
    """The stored column that holds a type's digests sorted (types after the first)."""
    return f"{identifier_type}.sorted"


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

    def overlap(
        self, question: OverlapQuestion, tables: Mapping[DatasetName, DatasetTable]
    ) -> ExactOverlap:
        """The exact counts of `question`; `tables` holds every dataset it names."""
        ...


# Digest columns as NumPy -----------------------------------------------------------------


def digest_words(column: pa.Array[Any] | pa.ChunkedArray[Any]) -> tuple[WordArray, BoolArray | None]:
    """A fixed_size_binary(32) column as an (n, 4) uint64 view of its bytes, and its validity.

    The view shares the column's memory (a memory-mapped file stays mapped, not read);
    a column of several chunks is first combined. The validity is None when every value
    is present. Null rows hold arbitrary bytes.
    """
    if isinstance(column, pa.ChunkedArray):
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    else:
        array = column
    rows = len(array)
    data = array.buffers()[1]
    if data is None or not rows:
        return np.zeros((0, _WORDS), dtype=np.uint64), None
    words = np.frombuffer(
        data, dtype=np.uint64, count=rows * _WORDS, offset=array.offset * DIGEST_BYTES
    ).reshape(rows, _WORDS)
    if not array.null_count:
        return words, None
    return words, array.is_valid().to_numpy(zero_copy_only=False)


def prefixes(words: WordArray) -> WordArray:
    """The first 8 bytes of each digest as a big-endian number: sorting these sorts digests."""
    return words[:, 0].view(_BIG_ENDIAN_WORD).astype(np.uint64)


def sort_digests(words: WordArray, valid: BoolArray | None = None) -> tuple[IndexArray, BoolArray]:
    """Sorts the present digests of a column by all 32 bytes, earlier rows first among equals.

    Returns:
        The rows of the present digests in sorted order, and for each whether it repeats
        the digest before it (so that keeping the others keeps each digest's first row).
    """
    rows = np.arange(len(words), dtype=np.intp) if valid is None else np.flatnonzero(valid)
    count = len(rows)
    repeated = np.zeros(count, dtype=np.bool_)
    if count == 0:
        return rows, repeated
    keys = prefixes(words if valid is None else words[rows])
    # One sort of plain integers (SIMD, no argsort): the high bits of each prefix with the
    # row's position below them. Prefixes equal in those high bits are put right below.
    position_bits = max(1, (count - 1).bit_length())
    packed = keys >> np.uint64(position_bits)
    del keys
    packed <<= np.uint64(position_bits)
    packed |= np.arange(count, dtype=np.uint64)
    packed.sort()
    positions = (packed & np.uint64((1 << position_bits) - 1)).astype(np.intp)
    packed >>= np.uint64(position_bits)
    tied = packed[1:] == packed[:-1]
    del packed
    if tied.any():
        _sort_ties(words, rows, positions, tied, repeated)
    return rows[positions], repeated


def _sort_ties(
    words: WordArray, rows: IndexArray, positions: IndexArray, tied: BoolArray, repeated: BoolArray
) -> None:
    """Sorts the runs that share their high prefix bits by whole digest, then by row."""
    linked = np.zeros(len(positions) + 1, dtype=np.bool_)
    linked[1:-1] = tied  # linked[k]: sorted entry k is in the run of entry k - 1
    members = np.flatnonzero(linked[:-1] | linked[1:])
    run = np.cumsum(~linked[members])
    position = positions[members]
    big_endian = words[rows[position]].view(_BIG_ENDIAN_WORD).astype(np.uint64)
    keys = (position, *(big_endian[:, w] for w in reversed(range(_WORDS))), run)
    order = np.lexsort(keys)
    positions[members] = position[order]
    big_endian = big_endian[order]
    same = (big_endian[1:] == big_endian[:-1]).all(axis=1) & (run[1:] == run[:-1])
    repeated[members[1:][same]] = True


# The sorted layout of a stored dataset ---------------------------------------------------


def sorted_layout(
    table: pa.Table, identifier_types: Sequence[str], segment_columns: Sequence[str]
) -> tuple[pa.Table, list[tuple[int, int]]]:
    """The table as it is stored: sorted for matching, each digest kept in its first row only.

    - Rows are ordered by the digest of the first identifier type; rows without one come
      last, in upload order. The first type's digests therefore need no index.
    - Each later type `t` also gets `t.sorted` (its digests, sorted) and `t.row` (the row
      of each), padded with nulls to the table's length.
    - A digest that a row repeats from an earlier row of the same type becomes null in the
      later row (SPEC section 3).
    - Segment columns are dictionary-encoded.

    Returns:
        The stored table, and per identifier type the rows holding a digest and the
        repeats dropped.
    """
    rows = table.num_rows
    first, *later = identifier_types
    words: dict[str, WordArray] = {}
    kept: dict[str, IndexArray] = {}
    counts = []
    for identifier_type in identifier_types:
        words[identifier_type], valid = digest_words(table.column(identifier_type))
        order, repeated = sort_digests(words[identifier_type], valid)
        kept[identifier_type] = order[~repeated] if repeated.any() else order
        counts.append((len(kept[identifier_type]), int(repeated.sum())))
    order = kept[first]
    if len(order) < rows:
        rest = np.ones(rows, dtype=np.bool_)
        rest[order] = False
        order = np.concatenate([order, np.flatnonzero(rest)])
    columns: dict[str, pa.Array[Any]] = {first: _digest_array(words[first], kept[first], rows)}
    present = {first: len(kept[first])}
    new_row = np.empty(rows, dtype=np.int64) if later else None
    if new_row is not None:
        new_row[order] = np.arange(rows, dtype=np.int64)
    for identifier_type in later:
        holds = np.zeros(rows, dtype=np.bool_)
        holds[kept[identifier_type]] = True
        columns[identifier_type] = _digest_array(words[identifier_type], order, rows, holds[order])
    for segment in segment_columns:
        columns[segment] = _dictionary(table.column(segment)).take(pa.array(order))
    for identifier_type in later:
        assert new_row is not None
        positions = kept[identifier_type]
        present[identifier_type] = len(positions)
        columns[sorted_column(identifier_type)] = _digest_array(
            words[identifier_type], positions, rows
        )
        columns[row_column(identifier_type)] = _padded_rows(new_row[positions], rows)
    metadata = {
        LAYOUT_KEY: SORTED_LAYOUT,
        SORTED_BY_KEY: first.encode(),
        PRESENT_KEY: json.dumps(present).encode(),
    }
    return pa.table(columns).replace_schema_metadata(metadata), counts


def _digest_array(
    words: WordArray, take: IndexArray, rows: int, valid: BoolArray | None = None
) -> pa.Array[Any]:
    """A fixed_size_binary(32) array of `rows` values: `words[take]`, then nulls."""
    values = np.zeros((rows, _WORDS), dtype=np.uint64)
    np.take(words, take, axis=0, out=values[: len(take)])
    if valid is None and len(take) < rows:
        valid = np.arange(rows) < len(take)
    validity = None if valid is None or valid.all() else pa.py_buffer(_bitmap(valid))
    nulls = 0 if validity is None or valid is None else int(rows - np.count_nonzero(valid))
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(DIGEST_BYTES), rows, [validity, pa.py_buffer(values)], null_count=nulls
    )


def _padded_rows(values: IndexArray, rows: int) -> pa.Array[Any]:
    kind = np.int32 if rows < 2**31 else np.int64
    padded = np.zeros(rows, dtype=kind)
    padded[: len(values)] = values
    valid = np.arange(rows) < len(values)
    return pa.array(padded, mask=~valid if len(values) < rows else None)


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
        keys: Their 64-bit prefixes (contiguous; the merge join reads only these).
        rows: The row of each digest; None when digest i is in row i.
        unique_keys: Whether no two digests share a prefix (then the fast join applies).
    """

    words: WordArray
    keys: WordArray
    rows: IndexArray | None
    unique_keys: bool

    @classmethod
    def of(cls, words: WordArray, rows: IndexArray | None) -> SortedDigests:
        """The index of sorted `words`, held by `rows`."""
        keys = prefixes(words)
        unique = bool(len(keys) < 2 or np.all(keys[1:] != keys[:-1]))
        return cls(words, keys, rows, unique)

    def __len__(self) -> int:
        return len(self.keys)

    def row_of(self, positions: IndexArray) -> IndexArray:
        """The rows that hold the digests at `positions`."""
        return positions if self.rows is None else self.rows[positions]


def digest_index(dataset: DatasetTable, identifier_type: str) -> SortedDigests:
    """The sorted digests of one type of a dataset: read from the sorted layout, or sorted now."""
    table = dataset.table
    metadata = table.schema.metadata or {}
    if metadata.get(LAYOUT_KEY) == SORTED_LAYOUT:
        present = int(json.loads(metadata[PRESENT_KEY])[identifier_type])
        if metadata[SORTED_BY_KEY] == identifier_type.encode():
            words, _ = digest_words(table.column(identifier_type))
            return SortedDigests.of(words[:present], None)
        words, _ = digest_words(table.column(sorted_column(identifier_type)))
        rows = table.column(row_column(identifier_type)).to_numpy()[:present]
        return SortedDigests.of(words[:present], rows.astype(np.intp, copy=False))
    words, valid = digest_words(table.column(identifier_type))
    order, _ = sort_digests(words, valid)
    return SortedDigests.of(np.take(words, order, axis=0), order)


def match_sorted(x: SortedDigests, y: SortedDigests) -> tuple[IndexArray, IndexArray]:
    """Every pair of positions (i, j) where `x` and `y` hold the same digest, all 32 bytes.

    Both `i` and `j` come out in increasing order of `i`. Prefixes are joined first: a
    merge join when neither side repeats a prefix (always, but for a 2^-64 chance or a
    deliberate collision), otherwise a range search. Equal prefixes then have their whole
    digests compared.
    """
    if not len(x) or not len(y):
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    if x.unique_keys and y.unique_keys:
        i, j = _merge_join(x.keys, y.keys)
    else:
        i, j = _range_join(x.keys, y.keys)
    same = _same_digests(x.words, i, y.words, j)
    return i[same], j[same]


def _merge_join(x: WordArray, y: WordArray) -> tuple[IndexArray, IndexArray]:
    """Equal values of two strictly increasing arrays, by pandas' linear merge (GIL released)."""
    _, _, found = pd.Index(x, copy=False).join(
        pd.Index(y, copy=False), how="left", return_indexers=True
    )
    if found is None:  # pandas' shortcut when both sides are equal
        everything = np.arange(len(x), dtype=np.intp)
        return everything, everything
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
    """Whether x[i] and y[j] are the same 32 bytes, pair by pair."""
    same = np.empty(len(i), dtype=np.bool_)
    left = np.ascontiguousarray(x).view(_DIGEST).reshape(-1)
    right = np.ascontiguousarray(y).view(_DIGEST).reshape(-1)
    for start in range(0, len(i), _VERIFY_BLOCK):
        block = slice(start, start + _VERIFY_BLOCK)
        np.equal(np.take(left, i[block]), np.take(right, j[block]), out=same[block])
    return same


# The matcher ----------------------------------------------------------------------------


class ArrowMatcher:
    """Matches in memory: merge joins of sorted digest columns, a few in parallel.

    Args:
        workers: Joins run at once (NumPy and pandas release the GIL); default: the
            machine's cores, at most 4.
    """

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = workers or min(4, os.cpu_count() or 1)

    def matches(self, rows_of: DatasetTable, against: DatasetTable) -> BoolArray:
        """For each row of `rows_of`, whether some row of `against` shares a digest of a type."""
        matched = np.zeros(rows_of.row_count, dtype=np.bool_)
        for identifier_type in rows_of.identifier_types:
            if identifier_type not in against.identifier_types:
                continue
            index = digest_index(rows_of, identifier_type)
            i, _ = match_sorted(index, digest_index(against, identifier_type))
            matched[index.row_of(i)] = True
        return matched

    def overlap(
        self, question: OverlapQuestion, tables: Mapping[DatasetName, DatasetTable]
    ) -> ExactOverlap:
        """The exact counts of `question` (see `ExactOverlap`)."""
        datasets = question.datasets
        masks = self._membership_masks([tables[d] for d in datasets])
        base = tables[question.base]
        patterns = 1 << len(question.others)
        labels, codes = _segment_codes(base, question.segment_column)
        pattern = masks[0] >> np.uint8(1)  # bit i: matches others[i]
        if codes is None:
            counts = np.bincount(pattern, minlength=patterns)
        else:
            counts = np.bincount(codes * patterns + pattern, minlength=len(labels) * patterns)
        cells = {
            (label, mask): int(counts[i * patterns + mask])
            for i, label in enumerate(labels)
            for mask in range(patterns)
        }
        histograms = [np.bincount(mask, minlength=256) for mask in masks]
        pairwise = {}
        for x, y in itertools.combinations(range(len(datasets)), 2):
            for a, b in ((x, y), (y, x)):
                with_bit = np.flatnonzero(np.arange(256) & (1 << b))
                pairwise[datasets[a], datasets[b]] = int(histograms[a][with_bit].sum())
        ordered = {pair: pairwise[pair] for pair in question.ordered_pairs()}
        sizes = {d: tables[d].row_count for d in datasets}
        return ExactOverlap(question=question, sizes=sizes, cells=cells, pairwise=ordered)

    def _membership_masks(self, datasets: Sequence[DatasetTable]) -> list[npt.NDArray[np.uint8]]:
        """Per dataset and row, a bit for each other dataset (by position) that the row matches."""
        if len(datasets) > 8:
            raise ValueError("at most 8 datasets fit in a membership mask")
        masks = [np.zeros(d.row_count, dtype=np.uint8) for d in datasets]
        types = list(dict.fromkeys(t for d in datasets for t in d.identifier_types))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="match") as pool:
            for identifier_type in types:
                holders = [k for k, d in enumerate(datasets) if identifier_type in d.identifier_types]
                if len(holders) < 2:
                    continue
                indexes = dict(
                    zip(
                        holders,
                        pool.map(lambda k: digest_index(datasets[k], identifier_type), holders),
                        strict=True,
                    )
                )
                found = {k: np.zeros(len(indexes[k]), dtype=np.uint8) for k in holders}
                pairs = list(itertools.combinations(holders, 2))
                joins = (
                    pool.submit(match_sorted, indexes[x], indexes[y]) for x, y in pairs
                )
                for (x, y), (i, j) in zip(pairs, _bounded(joins, self.workers), strict=True):
                    found[x][i] |= np.uint8(1 << y)
                    found[y][j] |= np.uint8(1 << x)
                for k in holders:
                    rows = indexes[k].rows
                    if rows is None:
                        masks[k][: len(found[k])] |= found[k]
                    else:
                        masks[k][rows] |= found[k]
                del indexes, found
        return masks


def _bounded(
    futures: Iterator[Future[tuple[IndexArray, IndexArray]]], ahead: int
) -> Iterator[tuple[IndexArray, IndexArray]]:
    """The futures' results in order, with at most `ahead` submitted and not yet consumed.

    Keeps memory bounded: each join's result is tens of megabytes at 10 million rows.
    """
    window: list[Future[tuple[IndexArray, IndexArray]]] = []
    for future in futures:
        window.append(future)
        if len(window) > ahead:
            yield window.pop(0).result()
    for future in window:
        yield future.result()


def _segment_codes(
    base: DatasetTable, segment_column: str | None
) -> tuple[list[str | None], npt.NDArray[np.intp] | None]:
    """The segment labels (sorted, None for rows without a value) and each row's label index."""
    if segment_column is None:
        return [None], None
    column = base.table.column(segment_column)
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array, null_encoding="encode")
    encoded = cast("pa.DictionaryArray[Any, Any]", array)
    found: list[str | None] = encoded.dictionary.to_pylist()
    if encoded.null_count:
        found.append(None)  # nulls of the indices take the code after the dictionary's
    indices = pc.fill_null(encoded.indices, len(found) - 1) if encoded.null_count else encoded.indices
    labels = sorted(set(found), key=lambda v: (v is not None, v or ""))
    position = {label: i for i, label in enumerate(labels)}
    remap = np.array([position[v] for v in found], dtype=np.intp)
    return labels, remap[indices.to_numpy(zero_copy_only=False)]
