"""Turn a brand's customer file into a digests file, on the brand's own machine.

`prepare` reads a CSV or Parquet file batch by batch, normalizes and digests the identifier
columns (SPEC section 2), keeps each digest in the first row that holds it (SPEC section 3),
and writes a Parquet digests file that is the only thing that is uploaded. No raw identifier
leaves this module: invalid values are counted, never written.

A digests file has one nullable `fixed_size_binary(32)` column per identifier type, named
exactly as the type, then one string column per segment, and its schema metadata says which
collaboration it is for and carries the key check value of the secret that made it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from partners.digest import digest_normalized, key_check_value, type_key
from partners.errors import InputError
from partners.normalize import EMPTY, InvalidIdentifierError, Normalized, explainer_for

DIGEST_FORMAT = "cleanroom-digests/v1"
"""The value of `cleanroom.format` in the schema metadata of a digests file."""

DIGEST_TYPE = pa.binary(32)
"""The Arrow type of a digest column."""

META_FORMAT = b"cleanroom.format"
META_COLLABORATION = b"cleanroom.collaboration"
META_KEY_CHECK_VALUE = b"cleanroom.key_check_value"
META_IDENTIFIER_TYPES = b"cleanroom.identifier_types"
META_SEGMENT_COLUMNS = b"cleanroom.segment_columns"

_PARQUET_BATCH_ROWS = 65_536
# About as many rows per CSV block as per Parquet batch for typical customer files, so that
# row groups are neither tiny nor large enough to strain memory.
_CSV_BLOCK_BYTES = 8 << 20

SourceFormat = Literal["csv", "parquet"]


@dataclass(frozen=True)
class TypeSummary:
    """What preparation found in the column of one identifier type.

    Attributes:
        values_read: Non-empty cells read (cells with only whitespace count as empty).
        valid: Values that normalized, duplicates included.
        invalid_by_reason: Values dropped as invalid, by reason (for example `missing_at_sign`).
        duplicates: Valid values dropped because an earlier row holds the same identifier.
        changes: Valid values changed by normalization, by change (for example `lowercased`);
            one value may count under several changes.
    """

    values_read: int
    valid: int
    invalid_by_reason: dict[str, int]
    duplicates: int
    changes: dict[str, int]

    @property
    def digests_written(self) -> int:
        """The digests of this type in the digests file."""
        return self.valid - self.duplicates

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain data that `json.dumps` accepts."""
        return dataclasses.asdict(self) | {"digests_written": self.digests_written}


@dataclass(frozen=True)
class PreparationSummary:
    """What `prepare` read, dropped and wrote.

    Attributes:
        rows_read: Data rows in the source file.
        rows_written: Rows in the digests file.
        rows_without_identifier: Rows dropped because no valid, first-seen identifier was left.
        types: Per identifier type, in the order of the digests file's columns.
    """

    rows_read: int
    rows_written: int
    rows_without_identifier: int
    types: dict[str, TypeSummary]

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain data that `json.dumps` accepts."""
        return {
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_without_identifier": self.rows_without_identifier,
            "types": {name: summary.to_dict() for name, summary in self.types.items()},
        }


@dataclass(frozen=True)
class DigestFile:
    """What the metadata of a digests file says about it.

    Attributes:
        path: The file.
        collaboration_id: The collaboration whose secret made the digests.
        key_check_value: The key check value of that secret.
        identifier_types: The digest columns, in order.
        segment_columns: The segment columns, in order.
        row_count: The number of rows.
    """

    path: Path
    collaboration_id: str
    key_check_value: str
    identifier_types: tuple[str, ...]
    segment_columns: tuple[str, ...]
    row_count: int


def prepare(
    source: Path,
    destination: Path,
    *,
    secret: bytes,
    collaboration_id: str,
    columns: Mapping[str, str],
    segment_columns: Sequence[str] = (),
    default_region: str | None = None,
    declared_types: Collection[str] = (),
    progress: Callable[[int], None] | None = None,
) -> PreparationSummary:
    """Read a customer file and write its digests file.

    Args:
        source: A `.csv`, `.csv.gz` or `.parquet` file with a header row (CSV: UTF-8).
        destination: The digests file to write; replaced if it exists. It appears only when
            complete: a failure leaves neither it nor a partial file behind.
        secret: The collaboration secret.
        collaboration_id: The collaboration the digests are for.
        columns: Input column name to identifier type, at most one column per type.
        segment_columns: Input columns to copy as segment labels, in this order.
        default_region: The region of phone numbers written without a country code.
        declared_types: Extra identifier types the collaboration declared.
        progress: Called with the number of rows of each batch once it is written.

    Returns:
        What was read, dropped and written.

    Raises:
        InputError: If an option, the mapping or the source file is not usable.
    """
    source, destination = Path(source), Path(destination)
    digesters = _digesters(columns, default_region, declared_types, secret, collaboration_id)
    _check_segments(segment_columns, columns)
    source_format = _source_format(source)
    _check_exists(source)
    _check_destination(source, destination)
    _check_columns(source, _column_names(source, source_format), [*columns, *segment_columns])
    schema = _digest_schema(
        [digester.identifier_type for digester in digesters],
        segment_columns,
        collaboration_id,
        key_check_value(secret, collaboration_id),
    )
    rows_read = rows_written = 0
    with _atomic_parquet_writer(destination, schema, segment_columns) as writer:
        for batch in _read_batches(source, source_format, [*columns, *segment_columns]):
            digested = _digest_batch(batch, digesters, segment_columns, schema)
            writer.write_batch(digested)
            rows_read += batch.num_rows
            rows_written += digested.num_rows
            if progress is not None:
                progress(batch.num_rows)
    return PreparationSummary(
        rows_read=rows_read,
        rows_written=rows_written,
        rows_without_identifier=rows_read - rows_written,
        types={digester.identifier_type: digester.summary() for digester in digesters},
    )


def read_digest_file(path: Path) -> DigestFile:
    """Read what a digests file's metadata says, without reading its rows.

    Args:
        path: A file written by `prepare`.

    Returns:
        The file's collaboration, key check value, columns and row count.

    Raises:
        InputError: If the file is missing (FILE_NOT_FOUND) or is not a digests file
            (NOT_A_DIGEST_FILE).
    """
    path = Path(path)
    _check_exists(path)
    try:
        schema = pq.read_schema(path)
        row_count = pq.read_metadata(path).num_rows
    except (pa.ArrowException, OSError) as error:
        raise _not_a_digest_file(path, f"it is not a readable Parquet file ({error})") from None
    metadata = schema.metadata or {}
    if metadata.get(META_FORMAT) != DIGEST_FORMAT.encode():
        raise _not_a_digest_file(path, f"its metadata does not say {DIGEST_FORMAT!r}")
    try:
        digest_file = DigestFile(
            path=path,
            collaboration_id=metadata[META_COLLABORATION].decode(),
            key_check_value=metadata[META_KEY_CHECK_VALUE].decode(),
            identifier_types=_json_names(metadata[META_IDENTIFIER_TYPES]),
            segment_columns=_json_names(metadata[META_SEGMENT_COLUMNS]),
            row_count=row_count,
        )
    except (KeyError, ValueError) as error:
        raise _not_a_digest_file(path, f"its metadata is incomplete ({error})") from None
    if schema.names != [*digest_file.identifier_types, *digest_file.segment_columns]:
        raise _not_a_digest_file(path, "its columns differ from those its metadata names")
    return digest_file


@dataclass
class _TypeDigester:
    """Normalizes, digests and deduplicates one identifier column, counting as it goes."""

    identifier_type: str
    column: str
    explain: Callable[[str], Normalized]
    key: bytes = field(repr=False)  # a repr in a traceback must not show the type key
    values_read: int = 0
    duplicates: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    # Every digest kept so far, to keep only the first row of each. This is the one thing that
    # grows with the file: about 100 bytes per distinct identifier.
    seen: set[bytes] = field(default_factory=set, repr=False)

    def digest_column(self, cells: list[str | None]) -> pa.Array[Any]:
        """Return the digest column of one batch: null where a cell gave no new digest."""
        rows, values = self._normalize(cells)
        column: list[bytes | None] = [None] * len(cells)
        seen = self.seen
        for row, digest in zip(rows, digest_normalized(self.key, values), strict=True):
            if digest in seen:
                self.duplicates += 1
            else:
                seen.add(digest)
                column[row] = digest
        return pa.array(column, type=DIGEST_TYPE)

    def summary(self) -> TypeSummary:
        """Return the counts so far."""
        return TypeSummary(
            values_read=self.values_read,
            valid=self.values_read - self.invalid.total(),
            invalid_by_reason=dict(sorted(self.invalid.items())),
            duplicates=self.duplicates,
            changes=dict(sorted(self.changes.items())),
        )

    def _normalize(self, cells: list[str | None]) -> tuple[list[int], list[str]]:
        """Normalize the non-empty cells; return the rows and values of the valid ones."""
        rows: list[int] = []
        values: list[str] = []
        explain, invalid, changes = self.explain, self.invalid, self.changes
        read = 0
        for row, cell in enumerate(cells):
            if not cell:
                continue
            try:
                value, made = explain(cell)
            except InvalidIdentifierError as error:
                if error.reason != EMPTY:  # whitespace only: as blank as an empty cell
                    read += 1
                    invalid[error.reason] += 1
                continue
            read += 1
            rows.append(row)
            values.append(value)
            for change in made:
                changes[change] += 1
        self.values_read += read
        return rows, values


def _digesters(
    columns: Mapping[str, str],
    default_region: str | None,
    declared_types: Collection[str],
    secret: bytes,
    collaboration_id: str,
) -> list[_TypeDigester]:
    """Check the column mapping, and make one digester per identifier type."""
    if not columns:
        raise InputError(
            "NO_IDENTIFIER_COLUMNS",
            "No identifier column was given; map at least one column to a type such as email.",
        )
    digesters: dict[str, _TypeDigester] = {}
    for column, identifier_type in columns.items():
        if identifier_type in digesters:
            raise InputError(
                "DUPLICATE_IDENTIFIER_TYPE",
                f"Columns {digesters[identifier_type].column!r} and {column!r} are both mapped "
                f"to {identifier_type!r}; map one column per identifier type.",
                {
                    "identifier_type": identifier_type,
                    "first_column": digesters[identifier_type].column,
                    "second_column": column,
                },
            )
        explain = explainer_for(
            identifier_type, default_region=default_region, declared_types=declared_types
        )
        key = type_key(secret, collaboration_id, identifier_type)
        digesters[identifier_type] = _TypeDigester(identifier_type, column, explain, key)
    return list(digesters.values())


def _check_segments(segment_columns: Sequence[str], columns: Mapping[str, str]) -> None:
    """Refuse segments that repeat, clash with a digest column, or would leak identifiers."""
    repeated = sorted({name for name in segment_columns if segment_columns.count(name) > 1})
    if repeated:
        raise InputError(
            "DUPLICATE_SEGMENT_COLUMN",
            f"Segment column {repeated[0]!r} is given more than once; name each segment once.",
            {"column": repeated[0]},
        )
    for name in segment_columns:
        if name in columns:
            # Segment labels are uploaded as they are: an identifier column among them would
            # send raw identifiers to the server.
            raise InputError(
                "IDENTIFIER_AS_SEGMENT",
                f"Column {name!r} is an identifier column and cannot be a segment; segments "
                "must be coarse labels such as a loyalty tier.",
                {"column": name},
            )
        if name in columns.values():
            raise InputError(
                "COLUMN_NAME_CONFLICT",
                f"Segment column {name!r} has the name of the digest column of that identifier "
                "type; rename the segment column in the source file.",
                {"column": name},
            )


def _source_format(source: Path) -> SourceFormat:
    """Tell the format of the source file by its suffix."""
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


def _check_destination(source: Path, destination: Path) -> None:
    """Refuse to write the digests over the customer file they come from."""
    if destination.exists() and destination.samefile(source):
        raise InputError(
            "DESTINATION_IS_SOURCE",
            f"The digests file {destination} is the source file; choose another destination.",
            {"path": str(destination)},
        )


def _check_exists(path: Path) -> None:
    """Refuse a path that does not name a file."""
    if not path.is_file():
        raise InputError(
            "FILE_NOT_FOUND",
            f"File {path} does not exist or is not a file; check the path.",
            {"path": str(path)},
        )


def _column_names(source: Path, source_format: SourceFormat) -> list[str]:
    """Read the column names of the source file from its header or schema."""
    try:
        if source_format == "parquet":
            return list(pq.read_schema(source).names)
        # Opening a CSV reader reads the header and infers types from the first block only;
        # the types are not used here, so no later block can fail to convert.
        with contextlib.closing(pa_csv.open_csv(source)) as reader:
            return list(reader.schema.names)
    except (pa.ArrowException, OSError) as error:
        raise _unreadable(source, error) from None


def _check_columns(source: Path, names: list[str], wanted: list[str]) -> None:
    """Refuse a mapping or segment that names a column the source does not have."""
    for column in wanted:
        if column not in names:
            raise InputError(
                "UNKNOWN_COLUMN",
                f"Column {column!r} is not in {source}; its columns are {', '.join(names)}.",
                {"column": column, "path": str(source), "columns": ",".join(names)},
            )


def _read_batches(
    source: Path, source_format: SourceFormat, names: list[str]
) -> Iterator[pa.RecordBatch]:
    """Stream the named columns of the source as string columns, batch by batch."""
    try:
        if source_format == "csv":
            yield from _csv_batches(source, names)
        else:
            yield from _parquet_batches(source, names)
    except (pa.ArrowException, OSError) as error:
        raise _unreadable(source, error) from None


def _csv_batches(source: Path, names: list[str]) -> Iterator[pa.RecordBatch]:
    """Stream CSV columns as strings, so that no value is reinterpreted as a number."""
    reader = pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
        convert_options=pa_csv.ConvertOptions(
            include_columns=names, column_types=dict.fromkeys(names, pa.string())
        ),
    )
    with contextlib.closing(reader):
        yield from reader


def _parquet_batches(source: Path, names: list[str]) -> Iterator[pa.RecordBatch]:
    """Stream Parquet columns, cast to strings when stored otherwise (for example as numbers)."""
    with pq.ParquetFile(source) as parquet:
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=names):
            yield pa.record_batch(
                [_as_strings(batch.column(name), name) for name in names], names=names
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


def _digest_batch(
    batch: pa.RecordBatch,
    digesters: list[_TypeDigester],
    segment_columns: Sequence[str],
    schema: pa.Schema,
) -> pa.RecordBatch:
    """Digest one batch and drop its rows that are left without any identifier."""
    digests = [
        digester.digest_column(batch.column(digester.column).to_pylist()) for digester in digesters
    ]
    segments = [batch.column(name) for name in segment_columns]
    has_identifier = pc.is_valid(digests[0])
    for column in digests[1:]:
        has_identifier = pc.or_(has_identifier, pc.is_valid(column))
    return pa.record_batch([*digests, *segments], schema=schema).filter(has_identifier)


def _digest_schema(
    identifier_types: Sequence[str],
    segment_columns: Sequence[str],
    collaboration_id: str,
    kcv: str,
) -> pa.Schema:
    """Return the schema of a digests file, with the metadata that identifies it."""
    fields: list[pa.Field[Any]] = [pa.field(name, DIGEST_TYPE) for name in identifier_types]
    fields += [pa.field(name, pa.string()) for name in segment_columns]
    return pa.schema(fields).with_metadata(
        {
            META_FORMAT: DIGEST_FORMAT.encode(),
            META_COLLABORATION: collaboration_id.encode(),
            META_KEY_CHECK_VALUE: kcv.encode(),
            META_IDENTIFIER_TYPES: json.dumps(list(identifier_types)).encode(),
            META_SEGMENT_COLUMNS: json.dumps(list(segment_columns)).encode(),
        }
    )


@contextlib.contextmanager
def _atomic_parquet_writer(
    destination: Path, schema: pa.Schema, segment_columns: Sequence[str]
) -> Iterator[pq.ParquetWriter]:
    """Write a Parquet file that appears at `destination` only once it is complete."""
    try:
        # In the destination's folder, so that the final rename stays on one file system.
        descriptor, name = tempfile.mkstemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial"
        )
    except OSError as error:
        raise InputError(
            "DESTINATION_UNWRITABLE",
            f"Cannot write {destination} ({error.strerror}); check that its folder exists and "
            "is writable.",
            {"path": str(destination)},
        ) from None
    os.close(descriptor)
    partial = Path(name)
    try:
        # Digests are random bytes: dictionaries and min/max statistics would only add size.
        with pq.ParquetWriter(
            partial,
            schema,
            use_dictionary=list(segment_columns),  # type: ignore[arg-type]  # stubs omit lists
            write_statistics=list(segment_columns),
        ) as writer:
            yield writer
        _flush_to_disk(partial)
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _flush_to_disk(path: Path) -> None:
    """Make sure a file's bytes are on disk before it is renamed into place."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _json_names(value: bytes) -> tuple[str, ...]:
    """Decode a JSON list of names from the metadata of a digests file."""
    names = json.loads(value)
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"expected a JSON list of names, found {value!r}")
    return tuple(names)


def _unreadable(source: Path, error: Exception) -> InputError:
    """Describe a source file that the reader could not read."""
    return InputError(
        "FILE_UNREADABLE",
        f"Cannot read {source}: {error}. Check that it is a UTF-8 CSV file with a header row or "
        "a Parquet file.",
        {"path": str(source)},
    )


def _not_a_digest_file(path: Path, why: str) -> InputError:
    """Describe a file that is not a digests file written by `prepare`."""
    return InputError(
        "NOT_A_DIGEST_FILE",
        f"{path} is not a digests file: {why}. Prepare the customer file again with this "
        "toolkit and use the file it writes.",
        {"path": str(path)},
    )
