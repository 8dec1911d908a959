"""Which digests repeat one of an earlier row, found in bounded memory (SPEC section 3).

A digests file keeps each digest in the first row that holds it. Remembering every digest
seen takes memory in proportion to the file, which a file of hundreds of millions of rows does
not leave. Instead, while the rows are written, every digest goes with its row number to a
spill file on disk, grouped into partitions by its first bytes. Afterwards each partition is
read alone and sorted, and every digest that stands again in a later row is marked. Only one
partition is in memory at a time: about `PARTITION_RECORDS` records of 40 bytes.
"""

from __future__ import annotations

import concurrent.futures
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from partners.preparation._arrow import fixed_width_bytes

_DIGEST_BYTES = 32
_RECORD = np.dtype([("digest", "<u8", (4,)), ("row", "<u8")])

PARTITION_RECORDS = 1 << 20
"""Records per partition the finder aims at: 40 MiB, and as much again to sort them."""

MAX_PARTITIONS = 1 << 12
"""Partitions at most (the first 16 bits of a digest choose its partition)."""


def partitions_for(expected_records: int) -> int:
    """Choose how many partitions keep one near `PARTITION_RECORDS` records (a power of two)."""
    needed = math.ceil(max(expected_records, 1) / PARTITION_RECORDS)
    return min(MAX_PARTITIONS, 1 << max(0, math.ceil(math.log2(needed))))


class DuplicateRows:
    """The rows whose digest of one type repeats the digest of an earlier row.

    Args:
        rows: The number of rows.
    """

    def __init__(self, rows: int) -> None:
        self._bits = np.zeros((rows + 7) // 8, dtype=np.uint8)
        self.count = 0
        """How many rows are marked."""

    def mark(self, rows: np.ndarray[Any, np.dtype[np.uint64]]) -> None:
        """Mark rows as repeating an earlier digest."""
        np.bitwise_or.at(self._bits, rows >> 3, (1 << (rows & 7)).astype(np.uint8))
        self.count += len(rows)

    def mask(self, start: int, stop: int) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Return, for rows `start` to `stop` (excluded), whether each is marked."""
        first_byte = start >> 3
        bits = np.unpackbits(self._bits[first_byte : (stop + 7) >> 3], bitorder="little")
        skip = start - (first_byte << 3)
        return bits[skip : skip + stop - start].astype(bool)


class DuplicateFinder:
    """Collects the digests of each type with their rows, then finds the repeats.

    Args:
        folder: A private folder for the spill files (one per identifier type).
        type_count: How many digest columns each batch has.
        partitions: How many partitions to sort separately (see `partitions_for`).
    """

    def __init__(self, folder: Path, type_count: int, partitions: int) -> None:
        self._partitions = partitions
        self._spills = [
            _Spill(folder / f"spill-{index}.bin", partitions) for index in range(type_count)
        ]

    def add(self, columns: Sequence[pa.Array[Any]], first_row: int) -> None:
        """Add the digest columns of consecutive rows, the first of which is `first_row`.

        Batches must be added in row order: the first row of a digest is the one kept.
        """
        for spill, column in zip(self._spills, columns, strict=True):
            spill.add(column, first_row)

    def finish(self, rows: int, threads: int = 1) -> list[DuplicateRows]:
        """Find the repeats, per type, among the `rows` rows added; close the spill files."""
        try:
            return [spill.duplicates(rows, threads) for spill in self._spills]
        finally:
            self.close()

    def close(self) -> None:
        """Close the spill files (their folder is removed by its owner)."""
        for spill in self._spills:
            spill.close()


class _Spill:
    """The digests of one type, with their rows, grouped by partition within each batch."""

    def __init__(self, path: Path, partitions: int) -> None:
        self._file: io.BufferedRandom = path.open("w+b")
        self._partitions = partitions
        self._records = 0
        self._batch_starts: list[int] = []
        self._batch_counts: list[np.ndarray[Any, np.dtype[np.int64]]] = []

    def add(self, column: pa.Array[Any], first_row: int) -> None:
        """Append the digests of one batch, grouped by partition, keeping row order within."""
        present = column.is_valid().to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(present)
        if not len(rows):
            return
        digests = fixed_width_bytes(column, _DIGEST_BYTES)
        if len(rows) < len(column):
            digests = digests[rows]
        partition = self._partition(digests)
        records = np.empty(len(rows), dtype=_RECORD)
        if self._partitions > 1:
            # A radix sort (stable, on 16-bit keys) groups the records by partition.
            order = np.argsort(partition, kind="stable")
            digests, rows = digests[order], rows[order]
        records["digest"] = digests.view("<u8")
        records["row"] = rows
        records["row"] += first_row
        self._file.write(records.view(np.uint8).data)
        self._batch_starts.append(self._records)
        self._batch_counts.append(np.bincount(partition, minlength=self._partitions))
        self._records += len(records)

    def duplicates(self, rows: int, threads: int) -> DuplicateRows:
        """Read each partition and mark the rows whose digest an earlier row holds.

        Partitions are sorted on `threads` threads at once (NumPy sorts without the GIL), so
        at most that many partitions are in memory.
        """
        duplicates = DuplicateRows(rows)
        if not self._batch_counts:
            return duplicates
        self._file.flush()
        counts = np.stack(self._batch_counts)
        # Where each partition of each batch starts in the file, in records.
        starts = np.asarray(self._batch_starts)[:, None] + np.cumsum(counts, axis=1) - counts

        def repeated(partition: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
            return _repeated_rows(self._read(starts[:, partition], counts[:, partition]))

        with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
            # Marking stays on this thread: two partitions may share a byte of the bitmap.
            for found in pool.map(repeated, range(self._partitions)):
                duplicates.mark(found)
        return duplicates

    def close(self) -> None:
        """Close the spill file."""
        self._file.close()

    def _partition(
        self, digests: np.ndarray[Any, np.dtype[np.uint8]]
    ) -> np.ndarray[Any, np.dtype[np.uint16]]:
        """Choose the partition of each digest from its first 16 bits."""
        if self._partitions == 1:
            return np.zeros(len(digests), dtype=np.uint16)
        shift = 17 - self._partitions.bit_length()  # partitions is a power of two
        prefix = (digests[:, 0].astype(np.uint16) << np.uint16(8)) | digests[:, 1]
        partition: np.ndarray[Any, np.dtype[np.uint16]] = prefix >> np.uint16(shift)
        return partition

    def _read(
        self,
        starts: np.ndarray[Any, np.dtype[np.int64]],
        counts: np.ndarray[Any, np.dtype[np.int64]],
    ) -> np.ndarray[Any, np.dtype[np.void]]:
        """Read the records of one partition, batch after batch, so in row order."""
        records = np.empty(int(counts.sum()), dtype=_RECORD)
        view = records.view(np.uint8).data
        position = 0
        descriptor = self._file.fileno()
        for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
            if count:
                size = count * _RECORD.itemsize
                # pread, not seek and read: threads read different partitions at once.
                os.preadv(descriptor, [view[position : position + size]], start * _RECORD.itemsize)
                position += size
        return records


def _repeated_rows(
    records: np.ndarray[Any, np.dtype[np.void]],
) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """Return the rows whose digest also stands in an earlier row, among records.

    Sorting by the first 64 bits finds the candidates fast; only those that share them are
    compared in full, with their rows, so that the earliest row of each digest stays.
    """
    none: np.ndarray[Any, np.dtype[np.uint64]] = np.empty(0, dtype=np.uint64)
    if len(records) < 2:  # a repeat needs two records
        return none
    words = records["digest"]
    order = np.argsort(words[:, 0])
    leading = words[order, 0]
    same = leading[1:] == leading[:-1]
    if not same.any():
        return none
    candidate = np.zeros(len(order), dtype=bool)
    candidate[1:] |= same
    candidate[:-1] |= same
    chosen = order[candidate]
    keys, rows = words[chosen], records["row"][chosen]
    ranked = np.lexsort((rows, keys[:, 3], keys[:, 2], keys[:, 1], keys[:, 0]))
    keys, rows = keys[ranked], rows[ranked]
    repeats = (keys[1:] == keys[:-1]).all(axis=1)
    repeated: np.ndarray[Any, np.dtype[np.uint64]] = rows[1:][repeats]
    return repeated
