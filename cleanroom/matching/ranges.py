"""Datasets partitioned by digest-prefix range, as Parquet files that executors can read.

A committed dataset's copy lives under `<location>/<key>/`, `key` being the name of its
committed file without the suffix:

- `<type>/<range>.parquet`: the digests of one identifier type whose 64-bit prefix falls
  in one range, sorted, with the row of each (`row`) and the base's segment codes
  (`segment.<column>`). A range is the top `log2(ranges)` bits of the prefix, so that
  range `r` of every dataset holds the same prefixes: digests in different ranges never
  match, and each range joins on its own (`range_task`).
- `segments.parquet`: the segment code of every row, in row order.
- `manifest.json`, written last: the number of ranges, rows, the ranges present per type
  and the segment labels. A copy without it is incomplete and is never read.

The location is a local path or a URI that Arrow's file systems open (`file://`,
`hdfs://`, `s3://`; `s3a://` is read as `s3://`).
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs

from cleanroom.matching.engine import DatasetTable, IndexArray
from cleanroom.matching.layout import DIGEST_BYTES, digest_words, one_chunk
from cleanroom.matching.memory import SortedDigests, digest_index, match_sorted

RANGES_FORMAT = "prefix-ranges/1"
MANIFEST = "manifest.json"
SEGMENTS = "segments.parquet"
DIGEST = "digest"
ROW = "row"
NO_SEGMENT = -1  # the code of a row without a segment value


def copy_key(file_name: str) -> str:
    """The key of a dataset's range copy: its committed file's name, without suffix."""
    return PurePosixPath(file_name).stem


def segment_field(column: str) -> str:
    """The column of a range file holding the segment codes of `column`."""
    return f"segment.{column}"


@dataclass(frozen=True)
class RangeManifest:
    """What a dataset's copy holds, read before any of its range files.

    Attributes:
        ranges: How many prefix ranges it is split into (a power of two).
        row_count: Its rows.
        present: Per identifier type, the ranges that hold at least one digest.
        segment_labels: Per segment column, the label of each code.
        segment_rows: Per segment column, rows per code, then rows without a value.
    """

    ranges: int
    row_count: int
    present: dict[str, list[int]]
    segment_labels: dict[str, list[str]] = field(default_factory=dict)
    segment_rows: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> str:
        """The manifest as stored."""
        return json.dumps({"format": RANGES_FORMAT, **self.__dict__}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RangeManifest:
        """A stored manifest."""
        data = json.loads(text)
        if data.pop("format", None) != RANGES_FORMAT:
            raise ValueError(f"not a {RANGES_FORMAT} manifest")
        return cls(**data)


@dataclass(frozen=True)
class RangeLocation:
    """Where the copies of committed datasets are, on a file system Arrow can open."""

    filesystem: fs.FileSystem
    root: str

    @classmethod
    def parse(cls, location: str | Path) -> RangeLocation:
        """The location of a local path or a URI (`file://`, `hdfs://`, `s3://`, `s3a://`)."""
        text = os.fspath(location)
        if "://" not in text:
            return cls(fs.LocalFileSystem(), str(Path(text).resolve()))
        if text.startswith("s3a://"):  # Hadoop's name for S3; Arrow's is s3://
            text = "s3://" + text.removeprefix("s3a://")
        filesystem, root = fs.FileSystem.from_uri(text)
        return cls(filesystem, root.rstrip("/"))

    @property
    def local(self) -> bool:
        """Whether the copies are on a local file system (then they are fsynced)."""
        return isinstance(self.filesystem, fs.LocalFileSystem)

    def path(self, key: str, *parts: str) -> str:
        """The path of a file of the copy `key`."""
        return posixpath.join(self.root, key, *parts)

    def stored_keys(self) -> list[str]:
        """The keys of every copy present, complete or not."""
        try:
            infos = self.filesystem.get_file_info(fs.FileSelector(self.root, allow_not_found=True))
        except FileNotFoundError:
            return []
        return [posixpath.basename(i.path) for i in infos if i.type == fs.FileType.Directory]

    def manifest(self, key: str) -> RangeManifest | None:
        """The manifest of a copy; None when the copy is missing or incomplete."""
        try:
            with self.filesystem.open_input_stream(self.path(key, MANIFEST)) as stream:
                return RangeManifest.from_json(stream.read().decode())
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        """Removes a copy, every file of it."""
        try:
            self.filesystem.delete_dir(self.path(key))
        except FileNotFoundError:
            return
        if self.local:
            _fsync_dir(self.root)


def range_bits(ranges: int) -> int:
    """The prefix bits that name a range, for a power of two `ranges`."""
    if ranges < 1 or ranges & (ranges - 1) or ranges > 1 << 16:
        raise ValueError(f"ranges must be a power of two from 1 to 65536, got {ranges}")
    return ranges.bit_length() - 1


def range_starts(ranges: int) -> npt.NDArray[np.uint64]:
    """The first prefix of each range, and 0 for the end (prefixes are unsigned)."""
    bits = range_bits(ranges)
    if bits == 0:
        return np.zeros(1, dtype=np.uint64)
    return np.arange(ranges, dtype=np.uint64) << np.uint64(64 - bits)


def write_ranges(dataset: DatasetTable, location: RangeLocation, key: str, ranges: int) -> None:
    """Writes a dataset's copy, split into `ranges` prefix ranges, its manifest last.

    The dataset's sorted digests are cut where each range starts: nothing is sorted again.
    """
    rows = dataset.row_count
    codes = {s: _segment_codes(dataset.table, s) for s in dataset.segment_columns}
    location.filesystem.create_dir(location.path(key), recursive=True)
    present = {
        t: _write_type(dataset, t, codes, location=location, key=key, ranges=ranges)
        for t in dataset.identifier_types
    }
    manifest = RangeManifest(ranges=ranges, row_count=rows, present=present)
    if codes:
        segments = pa.table({segment_field(s): pa.array(v, pa.int16()) for s, v in codes.items()})
        _write(location, location.path(key, SEGMENTS), segments)
        labels = {s: _labels(dataset.table, s) for s in codes}
        counts = {
            s: [*np.bincount(v[v >= 0], minlength=len(labels[s])).tolist(), int((v < 0).sum())]
            for s, v in codes.items()
        }
        manifest = RangeManifest(ranges, rows, present, labels, counts)
    with location.filesystem.open_output_stream(location.path(key, MANIFEST)) as stream:
        stream.write(manifest.to_json().encode())
    if location.local:
        _fsync_file(location.path(key, MANIFEST))
        for directory in [*(location.path(key, t) for t in present), location.path(key)]:
            _fsync_dir(directory)
        _fsync_dir(location.root)


def _write_type(
    dataset: DatasetTable,
    identifier_type: str,
    codes: Mapping[str, npt.NDArray[np.int16]],
    *,
    location: RangeLocation,
    key: str,
    ranges: int,
) -> list[int]:
    """Writes the range files of one identifier type; returns the ranges written."""
    row_type = pa.int32() if dataset.row_count < 2**31 else pa.int64()
    index = digest_index(dataset, identifier_type)
    held = index.row_of(np.arange(len(index), dtype=np.intp))
    cuts = [0, *np.searchsorted(index.keys, range_starts(ranges)[1:]).tolist(), len(index)]
    location.filesystem.create_dir(location.path(key, identifier_type), recursive=True)
    written = []
    for number in range(ranges):
        begin, end = cuts[number], cuts[number + 1]
        if end == begin:
            continue
        words = np.ascontiguousarray(index.words[begin:end])
        columns: dict[str, pa.Array[Any]] = {
            DIGEST: pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(DIGEST_BYTES), end - begin, [None, pa.py_buffer(words.data)]
            ),
            ROW: pa.array(held[begin:end], row_type),
        }
        for segment, values in codes.items():
            columns[segment_field(segment)] = pa.array(values[held[begin:end]], pa.int16())
        path = location.path(key, identifier_type, f"{number:05d}.parquet")
        _write(location, path, pa.table(columns))
        written.append(number)
    return written


def _write(location: RangeLocation, path: str, table: pa.Table) -> None:
    """One Parquet file: digests neither compressed nor dictionary-encoded (they are random)."""
    compression: dict[str, Literal["gzip", "brotli", "lz4", "zstd", "snappy", "none"]] = {
        name: "none" if name == DIGEST else "snappy" for name in table.column_names
    }
    pq.write_table(
        table,
        path,
        filesystem=location.filesystem,
        compression=compression,
        use_dictionary=False,
        write_statistics=[ROW],
    )
    if location.local:
        _fsync_file(path)


def _segment_codes(table: pa.Table, column: str) -> npt.NDArray[np.int16]:
    """The code of each row's value of a segment column, NO_SEGMENT for none."""
    array = _dictionary(table, column)
    indices = cast("pa.Array[Any]", array.indices).fill_null(NO_SEGMENT)
    return np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int16)


def _labels(table: pa.Table, column: str) -> list[str]:
    return [str(v) for v in _dictionary(table, column).dictionary.to_pylist()]


def _dictionary(table: pa.Table, column: str) -> pa.DictionaryArray[Any, Any]:
    array = one_chunk(table.column(column))
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    return cast("pa.DictionaryArray[Any, Any]", array)


def _fsync_file(path: str) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The work of one range, on an executor ---------------------------------------------------


@dataclass(frozen=True)
class RangePlan:
    """What every range task of one question reads and returns; small, sent to each task.

    Attributes:
        root: The location's root; `filesystem` is rebuilt from `uri` on the executor.
        uri: The location as configured.
        keys: The copy of each dataset, in the question's order (base first).
        ranges: Per dataset, its number of ranges; tasks run over the fewest of them.
        present: Per dataset and type, the ranges present.
        pairs: The ordered pairs (x, y) to count, each with whether its matched rows must
            leave the task (their types cross ranges, or the cells need them).
        shared: Per unordered pair of datasets, the identifier types both hold.
        cell_type: The one type by which the base matches every other, when there is one:
            then cells are counted in each range; otherwise they are counted from rows.
        segment: The base's segment column, if the report is split by it.
        segment_codes: How many codes it has (labels, then rows without a value).
    """

    uri: str
    keys: tuple[str, ...]
    ranges: tuple[int, ...]
    present: tuple[Mapping[str, Sequence[int]], ...]
    pairs: tuple[tuple[int, int, bool], ...]
    shared: Mapping[tuple[int, int], tuple[str, ...]]
    cell_type: str | None
    segment: str | None
    segment_codes: int

    @property
    def tasks(self) -> int:
        """Range tasks: the fewest ranges of any dataset (finer ones read several files)."""
        return min(self.ranges)


_OUTPUT_FIELDS: list[pa.Field[Any]] = [
    pa.field("x", pa.int32()),
    pa.field("y", pa.int32()),
    pa.field("segment", pa.int32()),
    pa.field("mask", pa.int32()),
    pa.field("count", pa.int64()),
    pa.field("rows", pa.binary()),
]
OUTPUT_SCHEMA = pa.schema(_OUTPUT_FIELDS)
OUTPUT_DDL = "x int, y int, segment int, mask int, count long, rows binary"
CELL = -1  # `y` of a cell count


def range_task(plan: RangePlan, task: int) -> pa.RecordBatch:
    """Matches one range of every dataset of the plan; returns only counts and matched rows.

    Each record is a pairwise count (x, y, count), a cell count (x = base, y = CELL,
    segment code, mask, count; masks above 0 only), or the rows of x matching y in this
    range (x, y, rows as little-endian int64).
    """
    loaded = _load(plan, task)
    # Positions (in x's index of a type) of x's digests that match y, per (x, y, type).
    found: dict[tuple[int, int, str], IndexArray] = {}
    for (x, y), shared in plan.shared.items():
        for identifier_type in shared:
            if (x, identifier_type) in loaded and (y, identifier_type) in loaded:
                i, j = match_sorted(loaded[x, identifier_type][0], loaded[y, identifier_type][0])
                found[x, y, identifier_type] = i
                found[y, x, identifier_type] = j
    records: list[tuple[int, int, int, int, int, bytes | None]] = []
    for x, y, leaves in plan.pairs:
        shared = plan.shared[min(x, y), max(x, y)]
        parts = [loaded[x, t][0].row_of(found[x, y, t]) for t in shared if (x, y, t) in found]
        if leaves:
            matched = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.intp)
            records.append((x, y, 0, 0, len(matched), matched.astype("<i8").tobytes()))
        else:  # one shared type: each row of x is in one range only, so counts add up
            records.append((x, y, 0, 0, sum(len(p) for p in parts), None))
    if plan.cell_type is not None and (0, plan.cell_type) in loaded:
        records.extend(_cells(plan, *loaded[0, plan.cell_type], found))
    columns = list(zip(*records, strict=True)) if records else [()] * len(OUTPUT_SCHEMA)
    return pa.RecordBatch.from_arrays(
        [pa.array(c, f.type) for c, f in zip(columns, OUTPUT_SCHEMA, strict=True)],
        schema=OUTPUT_SCHEMA,
    )


def _load(plan: RangePlan, task: int) -> dict[tuple[int, str], tuple[SortedDigests, pa.Table]]:
    """The sorted digests of the task's range, per dataset and type that has some."""
    location = RangeLocation.parse(plan.uri)
    types = sorted({t for shared in plan.shared.values() for t in shared})
    loaded = {}
    for d, key in enumerate(plan.keys):
        per_task = plan.ranges[d] // plan.tasks
        wanted = range(task * per_task, (task + 1) * per_task)
        for identifier_type in types:
            files = [r for r in plan.present[d].get(identifier_type, ()) if r in wanted]
            if files:
                table = _read(location, key, identifier_type, files)
                words, _ = digest_words(table.column(DIGEST))
                rows = one_chunk(table.column(ROW)).to_numpy().astype(np.intp)
                loaded[d, identifier_type] = (SortedDigests.of(words, rows), table)
    return loaded


def _cells(
    plan: RangePlan,
    index: SortedDigests,
    table: pa.Table,
    found: Mapping[tuple[int, int, str], IndexArray],
) -> list[tuple[int, int, int, int, int, bytes | None]]:
    """The base's rows in this range per (segment code, mask), for masks above 0."""
    cell_type = cast("str", plan.cell_type)
    pattern = np.zeros(len(index), dtype=np.intp)
    for bit in range(len(plan.keys) - 1):
        positions = found.get((0, bit + 1, cell_type))
        if positions is not None:
            pattern[positions] |= 1 << bit
    patterns = 1 << (len(plan.keys) - 1)
    codes = np.zeros(len(index), dtype=np.intp)
    if plan.segment is not None:
        codes = one_chunk(table.column(segment_field(plan.segment))).to_numpy().astype(np.intp)
        codes[codes < 0] = plan.segment_codes - 1
    counts = np.bincount(codes * patterns + pattern, minlength=plan.segment_codes * patterns)
    return [
        (0, CELL, int(cell // patterns), int(cell % patterns), int(counts[cell]), None)
        for cell in np.flatnonzero(counts)
        if cell % patterns
    ]


def _read(location: RangeLocation, key: str, identifier_type: str, files: list[int]) -> pa.Table:
    """The range files of one type of a copy, concatenated (they are in prefix order)."""
    tables = [
        pq.read_table(
            location.path(key, identifier_type, f"{number:05d}.parquet"),
            filesystem=location.filesystem,
        )
        for number in files
    ]
    if not tables:
        return pa.table(
            {DIGEST: pa.array([], pa.binary(DIGEST_BYTES)), ROW: pa.array([], pa.int64())}
        )
    return pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
