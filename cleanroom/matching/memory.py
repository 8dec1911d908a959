"""The in-memory matching engine: merge joins of sorted digest columns, no per-row Python.

At report time, each digest column is a `SortedDigests`: the sorted digests, memory-mapped,
and their 64-bit prefixes. Two datasets match by a merge join of the sorted prefixes
(linear, no hash table), and every pair of equal prefixes is confirmed on all 32 bytes, so
that a prefix collision never makes a match.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cleanroom.matching.engine import BoolArray, DatasetTable, IndexArray, WordArray
from cleanroom.matching.layout import (
    DIGEST,
    LAYOUT_KEY,
    PRESENT_KEY,
    SORTED_BY_KEY,
    SORTED_LAYOUT,
    UNIQUE_PREFIXES_KEY,
    WORDS,
    digest_words,
    fixed_width_values,
    one_chunk,
    prefix_column,
    prefixes,
    row_column,
    sort_digests,
    sorted_column,
)
from cleanroom.matching.question import ExactOverlap, OverlapQuestion
from cleanroom.names import DatasetName

log = logging.getLogger(__name__)

_VERIFY_BLOCK = 1 << 16  # pairs confirmed at a time: keeps the gathered digests in cache
_JOIN_PART = 1 << 21  # digests per join task at most: bounds each task's temporaries


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
    keys = fixed_width_values(
        one_chunk(table.column(prefix_column(identifier_type))), np.dtype(np.uint64)
    )
    if metadata[SORTED_BY_KEY] == identifier_type.encode():
        words, _ = digest_words(table.column(identifier_type))
        rows = None
    else:
        words, _ = digest_words(table.column(sorted_column(identifier_type)))
        column = one_chunk(table.column(row_column(identifier_type)))
        rows = fixed_width_values(column, np.dtype(column.type.to_pandas_dtype()))[:present]
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
    left = np.ascontiguousarray(x).view(DIGEST).reshape(-1)
    right = np.ascontiguousarray(y).view(DIGEST).reshape(-1)
    for start in range(0, len(i), _VERIFY_BLOCK):
        block = slice(start, start + _VERIFY_BLOCK)
        a = np.take(left, i[block]).view(np.uint64).reshape(-1, WORDS)
        b = np.take(right, j[block]).view(np.uint64).reshape(-1, WORDS)
        equal = a[:, 1] == b[:, 1]  # word 0 is the prefix, equal already
        for word in range(2, WORDS):
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
    array = one_chunk(base.table.column(segment_column))
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
