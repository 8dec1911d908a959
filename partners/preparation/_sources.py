"""Reading a brand's customer files (CSV or Parquet) batch by batch, as text.

Identifier and segment columns are read as strings, so that nothing is reinterpreted (a
loyalty ID `00123` read as a number would lose its zeros and stop matching), and in batches,
so that a file larger than memory can be read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from partners.errors import InputError

SourceFormat = Literal["csv", "parquet"]

PARQUET_BATCH_ROWS = 65_536
"""Rows per batch read from Parquet."""

CSV_BLOCK_BYTES = 1 << 20
"""Bytes per block read from CSV. Arrow reads dozens of blocks ahead, so the block size
bounds the reader's memory; blocks are then gathered into batches of `CSV_BATCH_ROWS`."""

CSV_BATCH_ROWS = PARQUET_BATCH_ROWS
"""Rows per batch read from CSV (at least; a batch ends with a block)."""

# What a gzipped customer file typically expands to, to foresee its size.
_GZIP_RATIO = 4


def source_format(source: Path) -> SourceFormat:
    """Tell the format of a customer file by its suffix.

    Raises:
        InputError: If the suffix is none of .csv, .csv.gz, .parquet (UNSUPPORTED_FILE_TYPE).
    """
    name = source.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    raise InputError(
        "UNSUPPORTED_FILE_TYPE",
        f"Cannot read {source}: the file name must end in .csv, .csv.gz or .parquet.",
        {"path": str(source)},
    )


def check_exists(path: Path) -> None:
    """Refuse a path that does not name a file.

    Raises:
        InputError: If it does not (FILE_NOT_FOUND).
    """
    if not path.is_file():
        raise InputError(
            "FILE_NOT_FOUND",
            f"File {path} does not exist or is not a file; check the path.",
            {"path": str(path)},
        )


def column_names(source: Path, file_format: SourceFormat) -> list[str]:
    """Read the column names of a customer file from its header or schema.

    Raises:
        InputError: If the file cannot be read (FILE_UNREADABLE).
    """
    try:
        if file_format == "parquet":
            return list(pq.read_schema(source).names)
        # Opening a CSV reader reads the header and infers types from the first block only;
        # the types are not used here, so no later block can fail to convert.
        with contextlib.closing(pa_csv.open_csv(source)) as reader:
            return list(reader.schema.names)
    except (pa.ArrowException, OSError) as error:
        raise unreadable(source, error) from None


def check_columns(source: Path, names: Sequence[str], wanted: Sequence[str]) -> None:
    """Refuse a mapping or segment that names a column the file does not have.

    Raises:
        InputError: Naming the column and the file's columns (UNKNOWN_COLUMN).
    """
    for column in wanted:
        if column not in names:
            raise InputError(
                "UNKNOWN_COLUMN",
                f"Column {column!r} is not in {source}; its columns are {', '.join(names)}.",
                {"column": column, "path": str(source), "columns": ",".join(names)},
            )


def read_batches(
    source: Path, file_format: SourceFormat, names: Sequence[str]
) -> Iterator[pa.RecordBatch]:
    """Stream the named columns of a customer file as string columns, batch by batch.

    Raises:
        InputError: If the file cannot be read (FILE_UNREADABLE) or a column holds no text
            (COLUMN_NOT_TEXT), possibly after some batches were yielded.
    """
    try:
        if file_format == "csv":
            yield from _csv_batches(source, names)
        else:
            yield from _parquet_batches(source, names)
    except (pa.ArrowException, OSError) as error:
        raise unreadable(source, error) from None


def expected_rows(source: Path, file_format: SourceFormat) -> int:
    """Foresee, roughly and generously, how many rows a customer file holds.

    Used to size work that must stay within memory; never to check anything.
    """
    if file_format == "parquet":
        try:
            return int(pq.read_metadata(source).num_rows)
        except (pa.ArrowException, OSError):
            return 0
    size = source.stat().st_size
    if source.name.lower().endswith(".gz"):
        size *= _GZIP_RATIO
    # A customer row rarely takes fewer than 16 bytes of CSV.
    return size // 16


def unreadable(source: Path, error: Exception) -> InputError:
    """Describe a customer file that the reader could not read."""
    return InputError(
        "FILE_UNREADABLE",
        f"Cannot read {source}: {error}. Check that it is a UTF-8 CSV file with a header row or "
        "a Parquet file.",
        {"path": str(source)},
    )


def _csv_batches(source: Path, names: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Stream CSV columns as strings, so that no value is reinterpreted as a number."""
    reader = pa_csv.open_csv(
        source,  # Arrow decompresses .gz by the suffix
        read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        convert_options=pa_csv.ConvertOptions(
            include_columns=list(names), column_types=dict.fromkeys(names, pa.string())
        ),
    )
    with contextlib.closing(reader):
        yield from _gathered(reader, CSV_BATCH_ROWS)


def _gathered(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Gather small batches into batches of at least `rows` rows (the last may have fewer)."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= rows:
            yield _concatenated(pending)
            pending, pending_rows = [], 0
    if pending:
        yield _concatenated(pending)


def _concatenated(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One batch of the rows of several, with contiguous columns."""
    combined = pa.Table.from_batches(batches).combine_chunks().to_batches()
    return combined[0] if len(combined) == 1 else batches[0]


def _parquet_batches(source: Path, names: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Stream Parquet columns, cast to strings when stored otherwise (for example as numbers)."""
    with pq.ParquetFile(source) as parquet:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(names)):
            yield pa.record_batch(
                [_as_strings(batch.column(name), name) for name in names], names=list(names)
            )


def _as_strings(array: pa.Array[Any], name: str) -> pa.Array[Any]:
    """Cast a column to strings, or explain that it holds no text."""
    if array.type == pa.string():
        return array
    try:
        return pc.cast(array, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(
            "COLUMN_NOT_TEXT",
            f"Column {name!r} holds {array.type} values, which cannot be read as text; store "
            "identifiers and segments as strings.",
            {"column": name, "type": str(array.type)},
        ) from None
