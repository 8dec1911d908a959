"""Turn a brand's customer file into a digests file, on the brand's own machine.

`prepare` reads a CSV or Parquet file batch by batch, normalizes and digests the identifier
columns (SPEC section 2), keeps each digest in the first row that holds it (SPEC section 3),
and writes a Parquet digests file that is the only thing that is uploaded. No raw identifier
leaves this module: invalid values are counted, never written.

It works in two passes, so that memory stays bounded however large the file: the first digests
every batch (on all cores) into a work file, spilling each digest with its row to disk; the
second finds the digests that repeat an earlier row (`partners.preparation._first_rows`) and
writes the digests file without them. The work files sit in a private folder beside the
destination and are removed at the end, whatever happens.

A digests file has one nullable `fixed_size_binary(32)` column per identifier type, named
exactly as the type, then one string column per segment, and its schema metadata says which
collaboration it is for and carries the key check value of the secret that made it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import ipc

from partners.errors import InputError
from partners.preparation import _sources
from partners.preparation._atomic import replacing, work_folder
from partners.preparation._digesting import ColumnDigests, ColumnPlan, DigestPlan, digest_batch
from partners.preparation._first_rows import DuplicateFinder, DuplicateRows, partitions_for
from partners.preparation._worker_pool import OrderedPool, default_workers
from partners.preparation.digest import DIGEST_TYPE, key_check_value, type_key

DIGEST_FORMAT = "cleanroom-digests/v1"
"""The value of `cleanroom.format` in the schema metadata of a digests file."""

META_FORMAT = b"cleanroom.format"
META_COLLABORATION = b"cleanroom.collaboration"
META_KEY_CHECK_VALUE = b"cleanroom.key_check_value"
META_IDENTIFIER_TYPES = b"cleanroom.identifier_types"
META_SEGMENT_COLUMNS = b"cleanroom.segment_columns"

_Item = TypeVar("_Item")
_Codec = Literal["gzip", "brotli", "lz4", "zstd", "snappy", "none"]

ROW_GROUP_ROWS = 1 << 17
"""Rows per row group of a digests file (fewer in the last)."""

# From about this many rows on, workers are started before the first batch is read.
_MANY_BATCHES_ROWS = 1 << 20


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
    columns: Mapping[str, str] | None = None,
    hashed_columns: Mapping[str, str] | None = None,
    segment_columns: Sequence[str] = (),
    default_region: str | None = None,
    declared_types: Collection[str] = (),
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> PreparationSummary:
    """Read a customer file and write its digests file.

    Args:
        source: A `.csv`, `.csv.gz` or `.parquet` file with a header row (CSV: UTF-8).
        destination: The digests file to write; replaced if it exists. It appears only when
            complete: a failure leaves neither it nor a partial file behind.
        secret: The collaboration secret.
        collaboration_id: The collaboration the digests are for.
        columns: Input column name to identifier type, for columns of raw identifiers.
            At least one column, raw or hashed, is needed.
        hashed_columns: Input column name to identifier type, for columns that hold the
            SHA-256 hash of each normalized identifier instead (64 hex digits in either case,
            or 44 base64 characters, as UID2 and ad platforms exchange them). They give the
            digest the raw identifier would give. At most one column per type in all.
        segment_columns: Input columns to copy as segment labels, in this order.
        default_region: The region of phone numbers written without a country code.
        declared_types: Extra identifier types the collaboration declared.
        progress: Called with the number of rows of each batch once it is digested.
        workers: Processes that digest batches at once; by default one per core.

    Returns:
        What was read, dropped and written.

    Raises:
        InputError: If an option, the mapping or the source file is not usable.
    """
    source, destination = Path(source), Path(destination)
    plan = _digest_plan(
        columns or {},
        hashed_columns or {},
        default_region=default_region,
        declared_types=declared_types,
        secret=secret,
        collaboration_id=collaboration_id,
    )
    input_columns = [column.column for column in plan.columns]
    _check_segments(
        segment_columns, input_columns, [column.identifier_type for column in plan.columns]
    )
    source_format = _sources.source_format(source)
    _sources.check_exists(source)
    _check_destination(source, destination)
    names = _sources.column_names(source, source_format)
    _sources.check_columns(source, names, [*input_columns, *segment_columns])
    identifier_types = [column.identifier_type for column in plan.columns]
    schema = _digest_schema(
        identifier_types,
        segment_columns,
        collaboration_id,
        key_check_value(secret, collaboration_id),
    )
    batches = _sources.read_batches(source, source_format, [*input_columns, *segment_columns])
    expected_rows = _sources.expected_rows(source, source_format)
    with work_folder(destination) as work:
        digested = _digest_all(
            batches,
            plan,
            segment_columns=segment_columns,
            schema=schema,
            work=work,
            partitions=partitions_for(expected_rows),
            workers=workers or default_workers(),
            many_batches=expected_rows > _MANY_BATCHES_ROWS,
            progress=progress,
        )
        duplicates = digested.finder.finish(digested.rows_kept, workers or default_workers())
        rows_written = _write_digest_file(
            digested.rows_file, destination, schema, segment_columns, duplicates
        )
    return PreparationSummary(
        rows_read=digested.rows_read,
        rows_written=rows_written,
        rows_without_identifier=digested.rows_read - rows_written,
        types={
            identifier_type: tally.summary(duplicate_rows.count)
            for identifier_type, tally, duplicate_rows in zip(
                identifier_types, digested.tallies, duplicates, strict=True
            )
        },
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
    _sources.check_exists(path)
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
class _Tally:
    """What normalization found in one identifier column, added up over the batches."""

    values_read: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)

    def add(self, digests: ColumnDigests) -> None:
        """Add the counts of one batch."""
        self.values_read += digests.values_read
        self.invalid.update(digests.invalid)
        self.changes.update(digests.changes)

    def summary(self, duplicates: int) -> TypeSummary:
        """Return the summary of the column, given how many digests repeated an earlier row."""
        return TypeSummary(
            values_read=self.values_read,
            valid=self.values_read - self.invalid.total(),
            invalid_by_reason=dict(sorted(self.invalid.items())),
            duplicates=duplicates,
            changes=dict(sorted(self.changes.items())),
        )


@dataclass
class _FirstPass:
    """What the first pass wrote and counted."""

    rows_file: Path
    finder: DuplicateFinder
    tallies: list[_Tally]
    rows_read: int = 0
    rows_kept: int = 0


def _digest_all(
    batches: Iterator[pa.RecordBatch],
    plan: DigestPlan,
    *,
    segment_columns: Sequence[str],
    schema: pa.Schema,
    work: Path,
    partitions: int,
    workers: int,
    many_batches: bool,
    progress: Callable[[int], None] | None,
) -> _FirstPass:
    """First pass: digest every batch into a work file of the rows that hold an identifier."""
    result = _FirstPass(
        rows_file=work / "rows.arrows",
        finder=DuplicateFinder(work, len(plan.columns), partitions),
        tallies=[_Tally() for _ in plan.columns],
    )
    rows_schema = schema.remove_metadata()
    try:
        with (
            ipc.new_stream(str(result.rows_file), rows_schema) as rows,
            OrderedPool(digest_batch, plan, workers) as pool,
        ):
            if many_batches:
                pool.start()
            for batch, digested in pool.map(batches):
                for tally, column in zip(result.tallies, digested, strict=True):
                    tally.add(column)
                kept = _rows_with_an_identifier(
                    [column.digests for column in digested],
                    [batch.column(name) for name in segment_columns],
                    rows_schema,
                )
                result.finder.add(kept.columns[: len(digested)], result.rows_kept)
                rows.write_batch(kept)
                result.rows_read += batch.num_rows
                result.rows_kept += kept.num_rows
                if progress is not None:
                    progress(batch.num_rows)
    except BaseException:
        result.finder.close()
        raise
    return result


def _write_digest_file(
    rows_file: Path,
    destination: Path,
    schema: pa.Schema,
    segment_columns: Sequence[str],
    duplicates: Sequence[DuplicateRows],
) -> int:
    """Second pass: write the digests file without digests that repeat an earlier row."""
    written = pending_rows = 0
    pending: list[pa.RecordBatch] = []
    with (
        replacing(destination) as partial,
        # Digests are random bytes: dictionaries, statistics and compression would only add
        # size and time. Segments are few labels: they get all three.
        pq.ParquetWriter(
            partial,
            schema,
            use_dictionary=list(segment_columns),  # type: ignore[arg-type]  # stubs omit lists
            write_statistics=list(segment_columns),
            compression=_compression(schema.names[: len(duplicates)], segment_columns),
        ) as writer,
        _read_ahead(_first_seen_rows(rows_file, duplicates)) as batches,
    ):
        for first_seen in batches:
            pending.append(first_seen)
            pending_rows += first_seen.num_rows
            if pending_rows >= ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(pending, schema=schema))
                written += pending_rows
                pending, pending_rows = [], 0
        if pending_rows:
            writer.write_table(pa.Table.from_batches(pending, schema=schema))
            written += pending_rows
    return written


def _first_seen_rows(
    rows_file: Path, duplicates: Sequence[DuplicateRows]
) -> Iterator[pa.RecordBatch]:
    """Read back the work file without digests that repeat an earlier row.

    Rows left with no digest are dropped.
    """
    start = 0
    with pa.OSFile(str(rows_file), "rb") as stream, ipc.open_stream(stream) as reader:
        for batch in reader:
            stop = start + batch.num_rows
            masks = [rows.mask(start, stop) for rows in duplicates]
            yield _rows_with_an_identifier(
                [_without(batch.column(index), mask) for index, mask in enumerate(masks)],
                batch.columns[len(duplicates) :],
                batch.schema,
            )
            start = stop


@contextlib.contextmanager
def _read_ahead(items: Iterator[_Item], depth: int = 4) -> Iterator[Iterator[_Item]]:
    """Produce items on a thread of their own, a few ahead of their consumer.

    Reading and filtering the work file then runs beside the Parquet writer (both spend
    their time in Arrow, without the GIL). Leaving the context stops the thread.
    """
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(("end", None))
        except BaseException as error:  # handed to the consumer, which raises it
            ready.put(("error", error))

    def consume() -> Iterator[_Item]:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        yield consume()
    finally:
        stop.set()
        while producer.is_alive():
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)
        producer.join()


def _compression(
    digest_columns: Sequence[str], segment_columns: Sequence[str]
) -> dict[str, _Codec]:
    """Compress segment labels, not digests: random bytes do not compress."""
    codecs: dict[str, _Codec] = dict.fromkeys(digest_columns, "none")
    return codecs | dict.fromkeys(segment_columns, "snappy")


def _rows_with_an_identifier(
    digests: Sequence[pa.Array[Any]], segments: Sequence[pa.Array[Any]], schema: pa.Schema
) -> pa.RecordBatch:
    """Build a batch of digests and segments, and drop its rows without any digest."""
    has_identifier = pc.is_valid(digests[0])
    for column in digests[1:]:
        has_identifier = pc.or_(has_identifier, pc.is_valid(column))
    return pa.record_batch([*digests, *segments], schema=schema).filter(has_identifier)


def _without(column: pa.Array[Any], repeated: Any) -> pa.Array[Any]:
    """Null the digests of the rows marked as repeating an earlier row."""
    if not repeated.any():
        return column
    return cast(
        "pa.Array[Any]", pc.if_else(pa.array(repeated), pa.scalar(None, DIGEST_TYPE), column)
    )


def _digest_plan(
    columns: Mapping[str, str],
    hashed_columns: Mapping[str, str],
    *,
    default_region: str | None,
    declared_types: Collection[str],
    secret: bytes,
    collaboration_id: str,
) -> DigestPlan:
    """Check the column mappings, and plan one digest column per identifier type."""
    if not columns and not hashed_columns:
        raise InputError(
            "NO_IDENTIFIER_COLUMNS",
            "No identifier column was given; map at least one column to a type such as email.",
        )
    plans: dict[str, ColumnPlan] = {}
    mapped = [(column, kind, False) for column, kind in columns.items()]
    mapped += [(column, kind, True) for column, kind in hashed_columns.items()]
    for column, identifier_type, hashed in mapped:
        if column in columns and hashed:
            raise InputError(
                "COLUMN_MAPPED_TWICE",
                f"Column {column!r} is given both as raw and as hashed identifiers; say which "
                "it holds.",
                {"column": column},
            )
        if identifier_type in plans:
            raise InputError(
                "DUPLICATE_IDENTIFIER_TYPE",
                f"Columns {plans[identifier_type].column!r} and {column!r} are both mapped "
                f"to {identifier_type!r}; map one column per identifier type.",
                {
                    "identifier_type": identifier_type,
                    "first_column": plans[identifier_type].column,
                    "second_column": column,
                },
            )
        key = type_key(secret, collaboration_id, identifier_type)
        plans[identifier_type] = ColumnPlan(identifier_type, column, hashed, key)
    plan = DigestPlan(tuple(plans.values()), default_region, tuple(declared_types))
    plan.check()
    return plan


def _check_segments(
    segment_columns: Sequence[str], input_columns: Sequence[str], identifier_types: Sequence[str]
) -> None:
    """Refuse segments that repeat, clash with a digest column, or would leak identifiers."""
    repeated = sorted({name for name in segment_columns if segment_columns.count(name) > 1})
    if repeated:
        raise InputError(
            "DUPLICATE_SEGMENT_COLUMN",
            f"Segment column {repeated[0]!r} is given more than once; name each segment once.",
            {"column": repeated[0]},
        )
    for name in segment_columns:
        if name in input_columns:
            # Segment labels are uploaded as they are: an identifier column among them would
            # send raw identifiers to the server.
            raise InputError(
                "IDENTIFIER_AS_SEGMENT",
                f"Column {name!r} is an identifier column and cannot be a segment; segments "
                "must be coarse labels such as a loyalty tier.",
                {"column": name},
            )
        if name in identifier_types:
            raise InputError(
                "COLUMN_NAME_CONFLICT",
                f"Segment column {name!r} has the name of the digest column of that identifier "
                "type; rename the segment column in the source file.",
                {"column": name},
            )


def _check_destination(source: Path, destination: Path) -> None:
    """Refuse to write the digests over the customer file they come from."""
    if destination.exists() and destination.samefile(source):
        raise InputError(
            "DESTINATION_IS_SOURCE",
            f"The digests file {destination} is the source file; choose another destination.",
            {"path": str(destination)},
        )


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


def _json_names(value: bytes) -> tuple[str, ...]:
    """Decode a JSON list of names from the metadata of a digests file."""
    names = json.loads(value)
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"expected a JSON list of names, found {value!r}")
    return tuple(names)


def _not_a_digest_file(path: Path, why: str) -> InputError:
    """Describe a file that is not a digests file written by `prepare`."""
    return InputError(
        "NOT_A_DIGEST_FILE",
        f"{path} is not a digests file: {why}. Prepare the customer file again with this "
        "toolkit and use the file it writes.",
        {"path": str(path)},
    )
