"""Reading a brand's customer files and tables batch by batch, as text.

What CRMs, spreadsheets and pipelines hand over: CSV with any common delimiter and encoding
(sniffed from the start of the file, or given), TSV, either of them gzipped, XLSX, Parquet,
Arrow IPC files, and in Python Arrow tables, record batch readers and data frames (pandas,
Polars, anything with the Arrow stream interface). CSV goes through Arrow's reader, XLSX
through calamine; nothing here parses text by hand except the sniffing of a sample.

Identifier and segment columns are read as strings, so that nothing is reinterpreted (a
loyalty ID `00123` read as a number would lose its zeros and stop matching), and in batches,
so that a file larger than memory can be read.

No message ever quotes a value of the file: Arrow's own error texts quote whole rows, so they
are replaced by what they mean, with the file, line and column.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime
import gzip
import io
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pyarrow import ipc

from partners.errors import InputError

SourceFormat = Literal["csv", "parquet", "xlsx", "arrow"]

PARQUET_BATCH_ROWS = 65_536
"""Rows per batch read from Parquet, XLSX and in-memory tables."""

CSV_BLOCK_BYTES = 1 << 20
"""Bytes per block read from CSV. Arrow reads dozens of blocks ahead, so the block size
bounds the reader's memory; blocks are then gathered into batches of `CSV_BATCH_ROWS`."""

CSV_BATCH_ROWS = PARQUET_BATCH_ROWS
"""Rows per batch read from CSV (at least; a batch ends with a block)."""

DELIMITERS = (",", ";", "\t", "|")
"""The delimiters that sniffing chooses from, in order of preference on a tie."""

SAMPLE_BYTES = 1 << 16
"""Bytes read from the start of a CSV file to tell its encoding and delimiter."""

# What a gzipped customer file typically expands to, to foresee its size.
_GZIP_RATIO = 4
# Rows foreseen for a stream whose length is unknown: enough partitions for large ones.
_UNKNOWN_STREAM_ROWS = 1 << 24
_CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")
_SUFFIXES: dict[str, SourceFormat] = {
    **dict.fromkeys(_CSV_SUFFIXES, "csv"),
    ".parquet": "parquet",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".arrow": "arrow",
    ".feather": "arrow",
}
_ACCEPTED = ".csv, .tsv, .txt (each also gzipped, .gz), .xlsx, .xlsm, .parquet, .arrow, .feather"
_EXPECTED_COLUMNS = re.compile(r"Expected (\d+) columns, got (\d+)")
_CSV_COLUMN = re.compile(r"In CSV column #(\d+)")
# The code pages of spreadsheet exports, in the order of the markets served (Western, Thai,
# Vietnamese, then the other Windows code pages).
_CODE_PAGES = (
    "cp1252", "cp874", "cp1258", "cp1250", "cp1251", "cp1253", "cp1254", "cp1255", "cp1256",
    "cp1257",
)  # fmt: skip
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8"),  # Arrow's UTF-8 reader skips it itself
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV file is written.

    Attributes:
        delimiter: The character between fields.
        encoding: A Python codec name; `utf-8` (with or without a byte order mark) is read
            by Arrow directly, any other is transcoded to UTF-8 on the way.
    """

    delimiter: str
    encoding: str


class CustomerSource:
    """A customer file or table, opened to read its column names and then its batches.

    Args:
        source: A path, or an Arrow table, record batch, record batch reader, or any data
            frame with the Arrow stream interface (pandas, Polars).
        delimiter: For CSV, the delimiter; sniffed from the start of the file if None.
        encoding: For CSV, the encoding; told from the start of the file if None.
        sheet: For XLSX, the sheet to read; the first if None.

    Raises:
        InputError: If the path is missing (FILE_NOT_FOUND), its type is not one read here
            (UNSUPPORTED_FILE_TYPE), it cannot be read (FILE_UNREADABLE), the encoding is
            unknown (UNKNOWN_ENCODING), the workbook has no such sheet (UNKNOWN_SHEET) or
            the object is no table (UNSUPPORTED_SOURCE).
    """

    def __init__(
        self,
        source: Any,
        *,
        delimiter: str | None = None,
        encoding: str | None = None,
        sheet: str | None = None,
    ) -> None:
        self.path: Path | None = None
        self.dialect: CsvDialect | None = None
        self.sheet = sheet
        self._table: pa.Table | None = None
        self._stream: pa.RecordBatchReader | None = None
        if isinstance(source, str | Path):
            self.path = Path(source)
            self.format: SourceFormat | Literal["table"] = source_format(self.path)
            check_exists(self.path)
            if self.format == "csv":
                self.dialect = csv_dialect(self.path, delimiter=delimiter, encoding=encoding)
        else:
            self.format = "table"
            self._table, self._stream = _as_arrow(source)
        self.names = self._column_names()

    @property
    def label(self) -> str:
        """How messages name the source: its path, or `the table`."""
        return str(self.path) if self.path is not None else "the table"

    def where(self, row: int) -> str:
        """Say where the data row of index `row` (0 for the first) is, for people.

        A CSV record is one line (quoted line breaks are not accepted), after the header.
        """
        if self.format == "csv":
            return f"line {row + 2}"
        if self.format == "xlsx":
            return (
                f"row {row + 2} of sheet {self.sheet!r}"
                if self.sheet
                else (f"row {row + 2} of the first sheet")
            )
        return f"row {row + 1}"

    def check_columns(self, wanted: Sequence[str]) -> None:
        """Refuse a mapping or segment that names a column the source does not have.

        Raises:
            InputError: Naming the column and the source's columns (UNKNOWN_COLUMN).
        """
        for column in wanted:
            if column not in self.names:
                found = ", ".join(self.names)
                hint = ""
                if self.format == "csv" and len(self.names) == 1 and self.dialect:
                    hint = (
                        f" It was read as one column with delimiter {self.dialect.delimiter!r};"
                        " give the right one with --delimiter."
                    )
                raise InputError(
                    "UNKNOWN_COLUMN",
                    f"Column {column!r} is not in {self.label}; its columns are {found}.{hint}",
                    {"column": column, "path": self.label, "columns": ",".join(self.names)},
                )

    def expected_rows(self) -> int:
        """Foresee, roughly and generously, how many rows the source holds.

        Used to size work that must stay within memory; never to check anything.
        """
        if self._table is not None:
            return self._table.num_rows
        if self._stream is not None or self.path is None:
            return _UNKNOWN_STREAM_ROWS
        if self.format == "parquet":
            with contextlib.suppress(pa.ArrowException, OSError):
                return int(pq.read_metadata(self.path).num_rows)
            return 0
        size = self.path.stat().st_size
        if self.path.name.lower().endswith(".gz"):
            size *= _GZIP_RATIO
        if self.format == "xlsx":
            size *= 8  # compressed XML
        # A customer row rarely takes fewer than 16 bytes of CSV.
        return size // 16

    def batches(self, names: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """Stream the named columns as string columns, batch by batch.

        Raises:
            InputError: If the source cannot be read (FILE_UNREADABLE, MALFORMED_ROW,
                UNDECODABLE_TEXT) or a column holds no text (COLUMN_NOT_TEXT), possibly
                after some batches were yielded.
        """
        if self.format == "table":
            yield from _gathered_as_strings(self._arrow_batches(), names)
            return
        assert self.path is not None
        try:
            if self.format == "csv":
                assert self.dialect is not None
                yield from _csv_batches(self.path, self.dialect, names)
            elif self.format == "xlsx":
                yield from _xlsx_batches(self.path, names, self.sheet)
            elif self.format == "arrow":
                yield from _gathered_as_strings(_ipc_batches(self.path), names)
            else:
                yield from _parquet_batches(self.path, names)
        except pa.ArrowInvalid as error:
            raise self._explained(error, names) from None
        except UnicodeDecodeError:  # from the transcoding of a code page: no column known
            raise self._undecodable("") from None
        except (pa.ArrowException, OSError) as error:
            raise unreadable(self.path, error) from None

    def _arrow_batches(self) -> Iterator[pa.RecordBatch]:
        if self._table is not None:
            yield from self._table.to_batches(max_chunksize=PARQUET_BATCH_ROWS)
        elif self._stream is not None:
            yield from self._stream

    def _column_names(self) -> list[str]:
        if self._table is not None:
            return list(self._table.schema.names)
        if self._stream is not None:
            return list(self._stream.schema.names)
        assert self.path is not None
        try:
            if self.format == "parquet":
                return list(pq.read_schema(self.path).names)
            if self.format == "arrow":
                with pa.memory_map(str(self.path)) as mapped:
                    return list(ipc.open_file(mapped).schema.names)
            if self.format == "xlsx":
                return _xlsx_header(self.path, self.sheet)
            assert self.dialect is not None
            # Opening a CSV reader reads the header and infers types from the first block
            # only; the types are not used here, so no later block can fail to convert.
            with contextlib.closing(
                pa_csv.open_csv(
                    self.path,
                    read_options=_read_options(self.dialect),
                    parse_options=pa_csv.ParseOptions(delimiter=self.dialect.delimiter),
                )
            ) as reader:
                return list(reader.schema.names)
        except pa.ArrowInvalid as error:
            raise self._explained(error, []) from None
        except UnicodeDecodeError:
            raise self._undecodable("") from None
        except (pa.ArrowException, OSError) as error:
            raise unreadable(self.path, error) from None

    def _explained(self, error: pa.ArrowInvalid, names: Sequence[str]) -> InputError:
        """Say what an Arrow error means without its text, which quotes the file's rows."""
        assert self.path is not None
        text = str(error)
        columns = _EXPECTED_COLUMNS.search(text)
        if self.format == "csv" and self.dialect is not None and columns:
            line = _first_malformed_line(self.path, self.dialect)
            at = f" on line {line}" if line else ""
            expected, found = columns.groups()
            return InputError(
                "MALFORMED_ROW",
                f"Cannot read {self.path}: a row{at} has {found} fields where the header has"
                f" {expected} (delimiter {self.dialect.delimiter!r}, encoding"
                f" {self.dialect.encoding}). Check the delimiter (--delimiter) and the quoting"
                " of that line.",
                {"path": str(self.path), "line": str(line or ""), "fields": found},
            )
        column = _CSV_COLUMN.search(text)
        if self.format == "csv" and self.dialect is not None and "UTF8" in text:
            index = int(column.group(1)) if column else -1
            return self._undecodable(names[index] if 0 <= index < len(names) else "")
        return unreadable(self.path, error)

    def _undecodable(self, column: str) -> InputError:
        """Say that a CSV file holds bytes that are not text in its encoding, and where."""
        assert self.path is not None
        assert self.dialect is not None
        line = _first_undecodable_line(self.path, self.dialect.encoding)
        return InputError(
            "UNDECODABLE_TEXT",
            f"Cannot read {self.path}: "
            + (f"column {column!r} " if column else "a value ")
            + (f"on line {line} " if line else "")
            + f"is not valid {self.dialect.encoding} text. Give the file's encoding with"
            " --encoding (for example cp1252, cp874, utf-16).",
            {"path": str(self.path), "column": column, "line": str(line or "")},
        )


def source_format(source: Path) -> SourceFormat:
    """Tell the format of a customer file by its suffix.

    Raises:
        InputError: If the suffix is not one of the formats read here (UNSUPPORTED_FILE_TYPE).
    """
    name = source.name.lower()
    for suffix, found in _SUFFIXES.items():
        if name.endswith(suffix):
            return found
    advice = " Save it from its program as XLSX or CSV." if name.endswith((".xls", ".ods")) else ""
    raise InputError(
        "UNSUPPORTED_FILE_TYPE",
        f"Cannot read {source}: the file name must end in one of {_ACCEPTED}.{advice}",
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


def csv_dialect(
    path: Path, *, delimiter: str | None = None, encoding: str | None = None
) -> CsvDialect:
    """Tell, or check, the encoding and delimiter of a CSV file from its first bytes.

    The encoding is that of a byte order mark, else UTF-8 if the sample is UTF-8, else what
    charset-normalizer finds. The delimiter is the one of `DELIMITERS` that splits the
    sample's lines into the same number of fields (more than one), the most fields winning.

    Raises:
        InputError: If the encoding is unknown (UNKNOWN_ENCODING), the delimiter is not one
            character (INVALID_DELIMITER), or the file cannot be read (FILE_UNREADABLE).
    """
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '\r\n"'):
        raise InputError(
            "INVALID_DELIMITER",
            f"The delimiter must be one character other than a quote or line break, got"
            f" {delimiter!r}; use for example ',' ';' '|' or a tab.",
            {"delimiter": delimiter},
        )
    try:
        sample = _sample(path)
    except OSError as error:
        raise unreadable(path, error) from None
    if encoding is None:
        encoding = _detected_encoding(sample)
    else:
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            raise InputError(
                "UNKNOWN_ENCODING",
                f"Encoding {encoding!r} is not known; use a name such as utf-8, cp1252, cp874"
                " or utf-16.",
                {"encoding": encoding},
            ) from None
    if encoding in ("utf-8", "utf_8", "utf-8-sig", "ascii"):
        encoding = "utf-8"
    if delimiter is None:
        if path.name.lower().endswith((".tsv", ".tsv.gz")):
            delimiter = "\t"
        else:
            text = _decoded(sample, encoding)
            delimiter = sniff_delimiter(text)
    return CsvDialect(delimiter, encoding)


def sniff_delimiter(text: str) -> str:
    """Choose the delimiter that splits every line of a sample into the same fields.

    Args:
        text: The first lines of the file, decoded (a last partial line is ignored).

    Returns:
        The one of `DELIMITERS` for which most sampled lines have as many fields as the
        header (at least two), the most agreeing then the most fields winning; `,` when none
        does (a one-column file).
    """
    lines = text.splitlines()
    if len(lines) > 1 and not text.endswith(("\n", "\r")):
        lines = lines[:-1]
    lines = [line for line in lines[:200] if line.strip()]
    if not lines:
        return ","
    best, best_score = ",", (0.0, 1)
    for candidate in DELIMITERS:
        rows = list(csv.reader(lines, delimiter=candidate))
        fields = len(rows[0])
        consistent = sum(len(row) == fields for row in rows) / len(rows)
        # Most lines must agree with the header; a malformed line is told later, by line.
        if fields > 1 and consistent >= 0.5 and (consistent, fields) > best_score:
            best, best_score = candidate, (consistent, fields)
    return best


def unreadable(source: Path, error: Exception) -> InputError:
    """Describe a customer file that the reader could not read, without its contents."""
    # Arrow's and calamine's messages may quote cells; only the kind of error is kept.
    kind = (
        "it is not a readable file of its type"
        if not isinstance(error, OSError)
        else (error.strerror or "it cannot be opened")
    )
    return InputError(
        "FILE_UNREADABLE",
        f"Cannot read {source}: {kind} ({type(error).__name__}). Check that it is a CSV, TSV,"
        " XLSX, Parquet or Arrow file with a header row, and that its name says which.",
        {"path": str(source)},
    )


# Compatibility with callers that read paths (resolve) --------------------------------------


def column_names(source: Path, file_format: SourceFormat) -> list[str]:
    """Read the column names of a customer file from its header or schema.

    Raises:
        InputError: If the file cannot be read (FILE_UNREADABLE).
    """
    del file_format  # told again by the suffix
    return CustomerSource(source).names


def check_columns(source: Path, names: Sequence[str], wanted: Sequence[str]) -> None:
    """Refuse a mapping that names a column the file does not have (UNKNOWN_COLUMN)."""
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
    """Stream the named columns of a customer file as string columns, batch by batch."""
    del file_format  # told again by the suffix
    yield from CustomerSource(source).batches(names)


# Reading ------------------------------------------------------------------------------------


def _as_arrow(source: Any) -> tuple[pa.Table | None, pa.RecordBatchReader | None]:
    """An in-memory source as an Arrow table or a stream of batches."""
    if isinstance(source, pa.Table):
        return source, None
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source]), None
    if isinstance(source, pa.RecordBatchReader):
        return None, source
    if hasattr(source, "__arrow_c_stream__"):  # pandas >= 2.2, Polars, DuckDB relations
        return None, pa.RecordBatchReader.from_stream(source)
    if type(source).__module__.split(".")[0] == "pandas":  # older pandas
        return pa.Table.from_pandas(source, preserve_index=False), None
    if hasattr(source, "to_arrow"):  # older Polars
        table = source.to_arrow()
        if isinstance(table, pa.Table):
            return table, None
    raise InputError(
        "UNSUPPORTED_SOURCE",
        f"Cannot read a {type(source).__name__}: give a file path, an Arrow table or record"
        " batch reader, or a pandas or Polars DataFrame.",
        {"type": type(source).__name__},
    )


def _read_options(dialect: CsvDialect) -> pa_csv.ReadOptions:
    if dialect.encoding == "utf-8":
        return pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    return pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES, encoding=dialect.encoding)


def _csv_batches(path: Path, dialect: CsvDialect, names: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Stream CSV columns as strings, so that no value is reinterpreted as a number."""
    reader = pa_csv.open_csv(
        path,  # Arrow decompresses .gz by the suffix
        read_options=_read_options(dialect),
        parse_options=pa_csv.ParseOptions(delimiter=dialect.delimiter),
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


def _gathered_as_strings(
    batches: Iterator[pa.RecordBatch], names: Sequence[str]
) -> Iterator[pa.RecordBatch]:
    """Select and cast the named columns of typed batches to strings, in batches of a size."""
    for batch in batches:
        for start in range(0, batch.num_rows, PARQUET_BATCH_ROWS):
            part = batch.slice(start, PARQUET_BATCH_ROWS)
            yield pa.record_batch(
                [_as_strings(part.column(name), name) for name in names], names=list(names)
            )


def _parquet_batches(source: Path, names: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Stream Parquet columns, cast to strings when stored otherwise (for example as numbers)."""
    with pq.ParquetFile(source) as parquet:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(names)):
            yield pa.record_batch(
                [_as_strings(batch.column(name), name) for name in names], names=list(names)
            )


def _ipc_batches(source: Path) -> Iterator[pa.RecordBatch]:
    """Stream the record batches of an Arrow IPC (Feather v2) file, memory-mapped."""
    with pa.memory_map(str(source)) as mapped:
        reader = ipc.open_file(mapped)
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index)


def _as_strings(column: pa.Array[Any] | pa.ChunkedArray[Any], name: str) -> Any:
    """Cast a column to strings, or explain that it holds no text."""
    array: Any = column  # the stubs lack dictionary_decode and the casts' overloads
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.type == pa.string():
        return array
    if pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
        return pc.cast(array, pa.string())
    if pa.types.is_floating(array.type):
        # Phone numbers and IDs held as floats (pandas does it to integer columns with gaps)
        # must read as the integers they are, not as 6.6812345678e+10.
        return _integral_floats_as_text(array)
    try:
        return pc.cast(array, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(
            "COLUMN_NOT_TEXT",
            f"Column {name!r} holds {array.type} values, which cannot be read as text; store "
            "identifiers and segments as strings.",
            {"column": name, "type": str(array.type)},
        ) from None


def _integral_floats_as_text(array: Any) -> Any:
    """Write whole floats as integers and others as Arrow writes them; NaN as null."""
    valid = pc.and_kleene(pc.is_valid(array), pc.invert(pc.is_nan(array)))
    whole = pc.and_kleene(valid, pc.equal(pc.floor(array), array))
    as_integers = pc.cast(pc.if_else(whole, array, 0.0), pa.int64(), safe=False)
    text = pc.if_else(whole, pc.cast(as_integers, pa.string()), pc.cast(array, pa.string()))
    return pc.if_else(valid, text, pa.scalar(None, pa.string()))


# XLSX ---------------------------------------------------------------------------------------


def _xlsx_rows(path: Path, sheet: str | None) -> Iterator[list[Any]]:
    from python_calamine import CalamineWorkbook  # noqa: PLC0415 (only for spreadsheets)

    workbook = CalamineWorkbook.from_path(str(path))
    if sheet is None:
        yield from workbook.get_sheet_by_index(0).iter_rows()
        return
    names = list(workbook.sheet_names)
    if sheet not in names:
        raise InputError(
            "UNKNOWN_SHEET",
            f"{path} has no sheet {sheet!r}; its sheets are {', '.join(names)}.",
            {"path": str(path), "sheet": sheet, "sheets": ",".join(names)},
        )
    yield from workbook.get_sheet_by_name(sheet).iter_rows()


def _xlsx_header(path: Path, sheet: str | None) -> list[str]:
    try:
        header = next(iter(_xlsx_rows(path, sheet)), [])
    except InputError:
        raise
    except Exception as error:  # calamine raises its own types; its messages quote cells
        raise unreadable(path, error) from None
    return [_cell_text(cell) or f"column_{index + 1}" for index, cell in enumerate(header)]


def _xlsx_batches(path: Path, names: Sequence[str], sheet: str | None) -> Iterator[pa.RecordBatch]:
    """Stream a sheet's named columns as text, its first row being the header."""
    try:
        rows = _xlsx_rows(path, sheet)
        header = [
            _cell_text(cell) or f"column_{index + 1}" for index, cell in enumerate(next(rows, []))
        ]
        positions = [header.index(name) for name in names]
        pending: list[list[str | None]] = [[] for _ in names]
        for row in rows:
            for column, position in zip(pending, positions, strict=True):
                column.append(_cell_text(row[position]) if position < len(row) else None)
            if len(pending[0]) >= PARQUET_BATCH_ROWS:
                yield _text_batch(pending, names)
                pending = [[] for _ in names]
        if pending and pending[0]:
            yield _text_batch(pending, names)
    except InputError:
        raise
    except Exception as error:  # calamine raises its own types; its messages quote cells
        raise unreadable(path, error) from None


def _text_batch(columns: list[list[str | None]], names: Sequence[str]) -> pa.RecordBatch:
    return pa.record_batch([pa.array(c, pa.string()) for c in columns], names=list(names))


def _cell_text(cell: Any) -> str | None:
    """A spreadsheet cell as text: whole numbers without `.0`, dates in ISO 8601."""
    if cell is None or cell == "":
        return None
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, float):
        return str(int(cell)) if cell.is_integer() else repr(cell)
    if isinstance(cell, datetime.date | datetime.time):
        return cell.isoformat()
    return str(cell)


# Sniffing -----------------------------------------------------------------------------------


def _sample(path: Path) -> bytes:
    opener: Callable[[Path], Any] = (
        (lambda p: gzip.open(p, "rb")) if path.name.lower().endswith(".gz") else open_binary  # noqa: SIM115 (opened in a with)
    )
    with opener(path) as file:
        data: bytes = file.read(SAMPLE_BYTES)
    return data


def open_binary(path: Path) -> io.BufferedReader:
    """Open a file to read bytes."""
    return path.open("rb")


def _detected_encoding(sample: bytes) -> str:
    for bom, name in _BOMS:
        if sample.startswith(bom):
            return name
    # Without a byte order mark, UTF-16 shows as a zero byte beside every ASCII one.
    if len(sample) >= 4 and sample.count(0) > len(sample) // 4:
        return "utf-16-le" if sample[1::2].count(0) > sample[0::2].count(0) else "utf-16-be"
    try:
        _decoded(sample, "utf-8", strict=True)
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    legacy = _windows_code_page(sample)
    if legacy is not None:
        return legacy
    from charset_normalizer import from_bytes  # noqa: PLC0415 (only for other encodings)

    best = from_bytes(sample).best()
    return codecs.lookup(best.encoding).name if best is not None else "cp1252"


def _windows_code_page(sample: bytes) -> str | None:
    """The Windows code page in which the sample's non-ASCII text is letters of one script.

    Spreadsheet programs export CSV in the system's code page. A statistical detector guesses
    poorly on a few names (a short Thai name also decodes into plausible Latin or Cyrillic),
    so the code pages are tried in the order of this project's markets, and the first whose
    text is wholly letters (with their marks) of a single script wins.
    """
    for name in _CODE_PAGES:
        try:
            text = _decoded(sample, name, strict=True)
        except UnicodeDecodeError:
            continue
        scripts: dict[str, int] = {}
        others = 0
        for character in text:
            if character.isascii():
                continue
            category = unicodedata.category(character)
            if category.startswith("M"):
                continue  # a combining mark belongs to the letter before it
            if category.startswith("L"):
                script = unicodedata.name(character, "?").split(" ")[0]
                scripts[script] = scripts.get(script, 0) + 1
            else:
                others += 1
        if len(scripts) == 1 and not others:
            return name
    return None


def _decoded(sample: bytes, encoding: str, *, strict: bool = False) -> str:
    """Decode a sample that may end in the middle of a character."""
    decoder = codecs.getincrementaldecoder(encoding)("strict" if strict else "replace")
    return str(decoder.decode(sample, final=False))


def _lines(path: Path, encoding: str) -> Iterator[str]:
    """The file's lines, decoded, for finding where an error is (error paths only)."""
    raw: Any = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")  # noqa: SIM115 (closed below)
    with raw, io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="") as text:
        yield from text


def _first_malformed_line(path: Path, dialect: CsvDialect) -> int | None:
    """The line number of the first record whose field count differs from the header's."""
    with contextlib.suppress(UnicodeDecodeError, OSError, csv.Error):
        records = csv.reader(_lines(path, dialect.encoding), delimiter=dialect.delimiter)
        header = next(records, [])
        for record in records:
            if record and len(record) != len(header):
                return records.line_num
    return None


def _first_undecodable_line(path: Path, encoding: str) -> int | None:
    """The line number of the first line that is not valid text in the encoding."""
    raw: Any = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")  # noqa: SIM115 (closed below)
    with raw:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                return number
    return None
