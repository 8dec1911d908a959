"""The in-memory matching engine: merge joins of sorted digest columns, no per-row Python.

At report time, each digest column is a `SortedDigests`: the sorted digests, memory-mapped,
and their 64-bit prefixes. The compiled kernel (`_kernel.c`) merge-joins the sorted
prefixes of every dataset holding a type at once (one k-way pass per type, linear, no hash
table), confirms every equal prefix on all 32 bytes, so that a prefix collision never makes
a match, and marks the matched rows in the same pass: each row gets one bit per other
dataset it matched. The pass is split over the cores by ranges of prefixes (`key_ranges`).
"""

from __future__ import annotations

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
import pyarrow as pa
import pyarrow.compute as pc

from cleanroom.matching import _kernel
from cleanroom.matching.engine import BoolArray, DatasetTable, IndexArray, WordArray
from cleanroom.matching.layout import (
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

_PART = 1 << 21  # digests of the longest list per kernel call, about: parts enough to balance
_BIG_ENDIAN_WORD = np.dtype(">u8")
RowArray = npt.NDArray[np.signedinteger[Any]]  # int32 as stored, or intp
MaskArray = npt.NDArray[np.unsignedinteger[Any]]  # per row: one bit per dataset matched
MAX_DATASETS = 16  # per report: a histogram of masks has 2^16 cells at most


# Sorted digests and the merge join -------------------------------------------------------


@dataclass(frozen=True)
class SortedDigests:
    """The present digests of one identifier type of one dataset, sorted, and their rows.

    Attributes:
        words: The digests as an (m, 4) uint64 array, sorted by all 32 bytes (big-endian
            order, as `sort_digests` sorts), so sorted by `keys` too.
        keys: Their 64-bit prefixes, contiguous: all that the merge join reads, but for
            the digests whose prefix another list shares.
        rows: The row of each digest (int32 as stored, or intp); None when digest i is in
            row i.
        unique_keys: Whether no two digests share a prefix.
    """

    words: WordArray
    keys: WordArray
    rows: RowArray | None
    unique_keys: bool

    @classmethod
    def of(cls, words: WordArray, rows: RowArray | None) -> SortedDigests:
        """The index of sorted `words`, held by `rows`.

        Raises:
            ValueError: Digests sharing a prefix are out of order in their other 24 bytes
                (the merge join would miss their matches).
        """
        words = np.ascontiguousarray(words)
        keys = prefixes(words)
        unique = bool(len(keys) < 2 or np.all(keys[1:] != keys[:-1]))
        if not unique:
            _check_runs_sorted(words, keys)
        return cls(words, keys, rows, unique)

    def __len__(self) -> int:
        return len(self.keys)

    def row_of(self, positions: IndexArray) -> RowArray:
        """The rows that hold the digests at `positions`."""
        return positions if self.rows is None else self.rows[positions]


def _check_runs_sorted(words: WordArray, keys: WordArray) -> None:
    """Raises ValueError unless digests of equal prefixes are sorted by their other bytes."""
    shared = np.flatnonzero(keys[1:] == keys[:-1])
    rest = words[:, 1:].view(_BIG_ENDIAN_WORD)
    before, after = rest[shared], rest[shared + 1]
    for k in range(len(shared)):
        if tuple(before[k]) > tuple(after[k]):
            raise ValueError("digests that share a prefix are not sorted by all 32 bytes")


def digest_index(dataset: DatasetTable, identifier_type: str) -> SortedDigests:
    """The sorted digests of one type of a dataset: read from the sorted layout, or sorted now.

    Nothing is copied from a table in the sorted layout: the stored row numbers keep
    their stored width (the kernel reads int32 and int64 alike).
    """
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
    rows: RowArray | None
    if metadata[SORTED_BY_KEY] == identifier_type.encode():
        words = _stored_words(table.column(identifier_type))
        rows = None
    else:
        words = _stored_words(table.column(sorted_column(identifier_type)))
        column = one_chunk(table.column(row_column(identifier_type)))
        rows = fixed_width_values(column, np.dtype(column.type.to_pandas_dtype()))[:present]
    return SortedDigests(words[:present], keys[:present], rows, unique)


def _stored_words(column: pa.ChunkedArray[Any]) -> WordArray:
    """A stored digest column's values as (n, 4) words, its validity not read.

    The first `present` values are the digests; the nulls after them pad the column.
    """
    return fixed_width_values(one_chunk(column), np.dtype(np.uint64), WORDS).reshape(-1, WORDS)


def match_sorted(x: SortedDigests, y: SortedDigests) -> tuple[IndexArray, IndexArray]:
    """Every pair of positions (i, j) where `x` and `y` hold the same digest, all 32 bytes.

    `i` comes out increasing. One pass of the kernel's merge join; a digest that a list
    repeats pairs with every copy in the other.
    """
    return _match_range(x, y, slice(0, len(x)), slice(0, len(y)))


def key_ranges(x: SortedDigests, y: SortedDigests, parts: int) -> list[tuple[slice, slice]]:
    """Splits two sorted digest lists into `parts` pairs of ranges holding the same prefixes.

    Digests in different ranges never match, so that the ranges can be joined apart, in
    parallel (or, past one machine, on different machines: README, "Scaling").
    """
    cuts = _key_cuts([x, y], parts)
    return list(zip(cuts[0], cuts[1], strict=True))


def _key_cuts(lists: Sequence[SortedDigests], parts: int) -> list[list[slice]]:
    """For each list, `parts` consecutive ranges; range k of every list holds the same prefixes.

    The cuts are at prefixes of the longest list; each run of one prefix stays whole.
    """
    longest = max(lists, key=len)
    if parts < 2 or len(longest) < parts:
        return [[slice(0, len(d))] for d in lists]
    cuts = longest.keys[np.arange(1, parts) * len(longest) // parts]
    ranges = []
    for digests in lists:
        bounds = [0, *np.searchsorted(digests.keys, cuts).tolist(), len(digests)]
        ranges.append([slice(bounds[k], bounds[k + 1]) for k in range(parts)])
    return ranges


def _match_range(
    x: SortedDigests, y: SortedDigests, x_range: slice, y_range: slice
) -> tuple[IndexArray, IndexArray]:
    """`match_sorted` within a pair of `key_ranges`; positions are of the whole lists."""
    x_keys, x_words = _contiguous(x)
    y_keys, y_words = _contiguous(y)
    room = max(1, min(x_range.stop - x_range.start, y_range.stop - y_range.start))
    while True:
        i = np.empty(room, dtype=np.intp)
        j = np.empty(room, dtype=np.intp)
        found = _kernel.pairs(
            x_keys, x_words, x_range.start, x_range.stop,
            y_keys, y_words, y_range.start, y_range.stop,
            i, j,
        )  # fmt: skip
        if found <= room:
            return i[:found], j[:found]
        room = found  # repeated digests paired every copy with every copy: again, with room


def _contiguous(digests: SortedDigests) -> tuple[WordArray, WordArray]:
    """The keys and words as the kernel reads them (copied only if not contiguous)."""
    return np.ascontiguousarray(digests.keys), np.ascontiguousarray(digests.words)


def _side(
    digests: SortedDigests,
    part: slice,
    bit: int,
    masks: MaskArray,
    *,
    by_position: MaskArray | None = None,
) -> _kernel.Side:
    """One list's part of a kernel call: its range, its bit and the masks of its rows.

    With `by_position` (one entry per digest), the kernel marks that instead of `masks`
    (see `ArrowMatcher._masks`).
    """
    keys, words = _contiguous(digests)
    rows, width = (None, 0) if by_position is not None else _kernel_rows(digests)
    marks = masks if by_position is None else by_position
    return (
        keys, words, rows, width, part.start, part.stop, bit, marks, marks.dtype.itemsize,
        digests.unique_keys,
    )  # fmt: skip


def _kernel_rows(digests: SortedDigests) -> tuple[RowArray | None, int]:
    """The rows as the kernel reads them (int32 or int64, contiguous), and their width."""
    rows = digests.rows
    if rows is None:
        return None, 0
    if rows.dtype not in (np.int32, np.int64):
        rows = rows.astype(np.intp)
    rows = np.ascontiguousarray(rows)
    return rows, rows.dtype.itemsize


# The matcher ----------------------------------------------------------------------------


class ArrowMatcher:
    """Matches in memory: one k-way merge join per identifier type, split over the cores.

    Args:
        workers: Kernel calls run at once (the kernel releases the GIL); default: the
            machine's cores, at most 4. Each type's lists are split into ranges of
            prefixes (`key_ranges`), so that even one pair of datasets uses every core.
    """

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = workers or min(4, os.cpu_count() or 1)

    def matches(self, rows_of: DatasetTable, against: DatasetTable) -> BoolArray:
        """For each row of `rows_of`, whether some row of `against` shares a digest of a type."""
        with self._pool() as pool:
            masks = self._masks(pool, [rows_of, against])
        return np.not_equal(masks[0], 0)

    def overlap(
        self, question: OverlapQuestion, tables: Mapping[DatasetName, DatasetTable]
    ) -> ExactOverlap:
        """The exact counts of `question` (see `ExactOverlap`)."""
        started, cpu = time.perf_counter(), time.process_time()
        datasets = question.datasets
        values = 1 << len(datasets)
        with self._pool() as pool:
            masks = self._masks(pool, [tables[d] for d in datasets])
            labels, codes, label_of = _segment_codes(tables[question.base], question.segment_column)
            # Bit k of a row's mask: it matched dataset k. The base (0) never marks itself,
            # so that its masks halved are the patterns over the others (bit i: others[i]).
            by_code = self._histogram(pool, masks[0], codes, len(label_of), values)
            tallies = [by_code.sum(axis=0)]
            tallies += [self._histogram(pool, m, None, 1, values)[0] for m in masks[1:]]
        patterns = 1 << len(question.others)
        cells = {(label, mask): 0 for label in labels for mask in range(patterns)}
        for code, label in enumerate(label_of):
            for mask in range(patterns):
                cells[label, mask] += int(by_code[code, mask << 1])
        index = {d: k for k, d in enumerate(datasets)}
        has_bit = (np.arange(values)[:, None] >> np.arange(len(datasets))) & 1
        bits = [(tally[:, None] * has_bit).sum(axis=0).tolist() for tally in tallies]
        pairwise = {(x, y): int(bits[index[x]][index[y]]) for x, y in question.ordered_pairs()}
        sizes = {d: tables[d].row_count for d in datasets}
        log.info(
            "matched %d datasets (%d rows) in %.3f s (%.3f s of CPU, the process's)",
            len(datasets),
            sum(sizes.values()),
            time.perf_counter() - started,
            time.process_time() - cpu,
        )
        return ExactOverlap(question=question, sizes=sizes, cells=cells, pairwise=pairwise)

    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(self.workers, thread_name_prefix="match")

    def _masks(self, pool: ThreadPoolExecutor, datasets: Sequence[DatasetTable]) -> list[MaskArray]:
        """For each dataset, each row's mask: bit k set when it shares a digest with dataset k.

        One kernel pass per identifier type over every dataset holding it, split into
        ranges of prefixes run in parallel. Types run one after another: a row holds one
        digest of a type, so that the parts of one type never write the same row.
        """
        if len(datasets) > MAX_DATASETS:
            raise ValueError(f"at most {MAX_DATASETS} datasets are matched at once")
        mask_type = np.uint8 if len(datasets) <= 8 else np.uint16
        masks: list[MaskArray] = [np.zeros(d.row_count, dtype=mask_type) for d in datasets]
        types = list(dict.fromkeys(t for d in datasets for t in d.identifier_types))
        for identifier_type in types:
            holders = [k for k, d in enumerate(datasets) if identifier_type in d.identifier_types]
            if len(holders) < 2:
                continue
            loading = [pool.submit(digest_index, datasets[k], identifier_type) for k in holders]
            lists = [future.result() for future in loading]
            longest = max(len(d) for d in lists)
            cuts = _key_cuts(lists, self.workers if longest >= _PART else 1)
            # A list held in another order than its rows is marked by position (in order,
            # as the merge goes), then its marks are scattered to the rows' masks in a pass
            # of its own: random writes inside the merge would stall it (3 times slower).
            hits: list[MaskArray | None] = [
                None if d.rows is None else np.zeros(len(d), dtype=mask_type) for d in lists
            ]
            calls = [
                pool.submit(
                    _kernel.mark,
                    [
                        _side(lists[n], cuts[n][part], 1 << k, masks[k], by_position=hits[n])
                        for n, k in enumerate(holders)
                    ],
                )
                for part in range(len(cuts[0]))
            ]
            for call in calls:
                call.result()
            scatters = []
            for n, k in enumerate(holders):
                marks = hits[n]
                rows, width = _kernel_rows(lists[n])
                if marks is None or rows is None:
                    continue
                scatters += [
                    pool.submit(
                        _kernel.scatter,
                        *(marks, marks.dtype.itemsize, rows, width, part.start, part.stop),
                        masks[k],
                    )
                    for part in cuts[n]
                ]
            for call in scatters:
                call.result()
        return masks

    def _histogram(
        self,
        pool: ThreadPoolExecutor,
        masks: MaskArray,
        codes: npt.NDArray[np.signedinteger[Any]] | None,
        code_count: int,
        values: int,
    ) -> npt.NDArray[np.int64]:
        """Rows per (code, mask value), as a (code_count, values) array; parts in parallel."""
        rows = len(masks)
        if not rows or not code_count:
            return np.zeros((code_count, values), dtype=np.int64)
        parts = self.workers if rows >= _PART else 1
        bounds = [rows * k // parts for k in range(parts + 1)]
        outs = [np.zeros(code_count * values, dtype=np.int64) for _ in range(parts)]
        code_width = 0 if codes is None else codes.dtype.itemsize
        calls = [
            pool.submit(
                _kernel.histogram,
                masks,
                masks.dtype.itemsize,
                codes,
                code_width,
                bounds[k],
                bounds[k + 1],
                values,
                outs[k],
            )
            for k in range(parts)
        ]
        for call in calls:
            call.result()
        return cast("npt.NDArray[np.int64]", sum(outs)).reshape(code_count, values)


def _mark(
    x: SortedDigests,
    y: SortedDigests,
    ranges: tuple[slice, slice],
    x_matches_y: BoolArray,
    y_matches_x: BoolArray,
) -> None:
    """Joins one pair of key ranges and flags the rows on both sides that matched.

    Joins of the same pair of datasets over other types must not run at the same time
    over the same flags (the kernel ORs a byte in place).
    """
    _kernel.mark(
        [
            _side(x, ranges[0], 1, x_matches_y.view(np.uint8)),
            _side(y, ranges[1], 1, y_matches_x.view(np.uint8)),
        ]
    )


def _segment_codes(
    base: DatasetTable, segment_column: str | None
) -> tuple[list[str | None], npt.NDArray[np.signedinteger[Any]] | None, list[str | None]]:
    """The segment labels, each row's code, and the label of each code.

    Labels are sorted, None for rows without a value; a row's code is its dictionary index
    as stored (no copy, but where there are nulls).
    """
    if segment_column is None:
        return [None], None, [None]
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
    codes = fixed_width_values(indices, np.dtype(indices.type.to_pandas_dtype()))
    return labels, codes, found
