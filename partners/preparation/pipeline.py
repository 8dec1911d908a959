"""Turn a brand's customer file into a digests file, on the brand's own machine.

`prepare` reads a customer file (CSV or TSV in any common delimiter and encoding, gzipped
or not, XLSX, Parquet, Arrow) or an in-memory table (Arrow, pandas, Polars) batch by batch,
normalizes and digests the identifier columns (SPEC section 2), keeps each digest in the
first row that holds it (SPEC section 3), and writes a Parquet digests file that is the only
thing that is uploaded. No raw identifier leaves this module: invalid values are counted,
never written. Before anything is written, it refuses an output with no row, invalid values
when strict, and segments that the server would refuse; the summary explains large drops.

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
from partners.preparation import _sources, advice, normalize
from partners.preparation._atomic import replacing, work_folder
from partners.preparation._digesting import ColumnDigests, ColumnPlan, DigestPlan, digest_batch
from partners.preparation._first_rows import DuplicateFinder, DuplicateRows, partitions_for
from partners.preparation._worker_pool import OrderedPool, default_workers
from partners.preparation.digest import DIGEST_TYPE, key_check_value, type_key
from partners.preparation.segments import (
    MAX_SEGMENT_LABEL,
    MAX_SEGMENT_VALUES,
    check_segment_names,
    segment_mapping,
)

DIGEST_FORMAT = "cleanroom-digests/v1"
"""The value of `cleanroom.format` in the schema metadata of a digests file."""

META_FORMAT = b"cleanroom.format"
META_COLLABORATION = b"cleanroom.collaboration"
META_KEY_CHECK_VALUE = b"cleanroom.key_check_value"
META_IDENTIFIER_TYPES = b"cleanroom.identifier_types"
META_SEGMENT_COLUMNS = b"cleanroom.segment_columns"
META_MATCHING = b"cleanroom.matching"
"""How the identifier columns are made: absent or `shared_secret` for digests,
`double_blind` for digests masked with the brand's blind key (rows shuffled)."""

SHARED_SECRET = "shared_secret"  # noqa: S105 - a matching mode's name, not a secret
DOUBLE_BLIND = "double_blind"
MATCHINGS = (SHARED_SECRET, DOUBLE_BLIND)

_Item = TypeVar("_Item")
PhoneHashForm = Literal["e164", "digits"]
"""How hashed phones were made: SHA-256 of `+` and digits (E.164), or of digits alone."""

# Values of a raw column that look like SHA-256 hashes (hex, or base64 with its padding).
_HASH_LIKE = r"^\s*([0-9A-Fa-f]{64}|[A-Za-z0-9+/]{43}=)\s*$"
_HASH_SAMPLE_ROWS = 10_000
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
        first_invalid: Where the first invalid value is (for example `line 7`), if any.
    """

    values_read: int
    valid: int
    invalid_by_reason: dict[str, int]
    duplicates: int
    changes: dict[str, int]
    first_invalid: str | None = None

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
        hints: Every large drop explained with its fix (`partners.preparation.advice`).
        source: What was read, and how (for example the CSV delimiter and encoding).
    """

    rows_read: int
    rows_written: int
    rows_without_identifier: int
    types: dict[str, TypeSummary]
    hints: tuple[str, ...] = ()
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain data that `json.dumps` accepts."""
        return {
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_without_identifier": self.rows_without_identifier,
            "types": {name: summary.to_dict() for name, summary in self.types.items()},
            "hints": list(self.hints),
            "source": self.source,
        }

    def to_pandas(self) -> Any:
        """Return the counts as a tidy pandas DataFrame: one row per type, count and reason.

        Columns: `identifier_type`, `count` (values_read, valid, invalid, duplicates,
        digests_written, changed), `reason` (the reason or change, else empty) and `value`.
        pandas is needed for this method only (`pip install cleanroom-partner[pandas]`).
        """
        import pandas as pd  # noqa: PLC0415 (an optional dependency of the toolkit)

        rows: list[dict[str, Any]] = []
        for name, summary in self.types.items():
            for count in ("values_read", "valid", "duplicates", "digests_written"):
                rows.append(
                    {"identifier_type": name, "count": count, "reason": "",
                     "value": getattr(summary, count)}
                )  # fmt: skip
            for reason, value in summary.invalid_by_reason.items():
                rows.append(
                    {"identifier_type": name, "count": "invalid", "reason": reason, "value": value}
                )
            for change, value in summary.changes.items():
                rows.append(
                    {"identifier_type": name, "count": "changed", "reason": change, "value": value}
                )
        frame = pd.DataFrame(rows, columns=["identifier_type", "count", "reason", "value"])
        return frame.astype({"value": "int64"})


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
        matching: `shared_secret` (digests) or `double_blind` (digests masked with the
            brand's blind key, rows shuffled, ready to upload as they are).
    """

    path: Path
    collaboration_id: str
    key_check_value: str
    identifier_types: tuple[str, ...]
    segment_columns: tuple[str, ...]
    row_count: int
    matching: str = SHARED_SECRET


def prepare(
    source: Path | str | Any,
    destination: Path | str,
    *,
    secret: bytes,
    collaboration_id: str,
    columns: Mapping[str, str] | None = None,
    hashed_columns: Mapping[str, str] | None = None,
    segment_columns: Sequence[str] | Mapping[str, str] = (),
    default_region: str | None = None,
    region_column: str | None = None,
    declared_types: Collection[str] = (),
    delimiter: str | None = None,
    encoding: str | None = None,
    sheet: str | None = None,
    strict: bool = False,
    hashed_phone_form: PhoneHashForm = "e164",
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> PreparationSummary:
    """Read a customer file or table and write its digests file.

    Args:
        source: A file with a header row: `.csv`, `.tsv`, `.txt` (any of them gzipped),
            `.xlsx` (its first sheet), `.parquet`, `.arrow` or `.feather`; or an Arrow table,
            record batch or reader, or a pandas or Polars DataFrame.
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
        segment_columns: Input columns to copy as segment labels, in this order: a list
            keeps their names, a mapping of input column to segment name renames them. Names,
            labels and distinct values are checked against the server's rules
            (`partners.preparation.segments`) before the digests file is written.
        default_region: The region of phone numbers written without a country code.
        region_column: A column giving each row's region for its phone number: an ISO
            3166-1 alpha-2 code (TH, VN) or a country name (`normalize.region_of`); where
            it is empty, `default_region` applies.
        declared_types: Extra identifier types the collaboration declared.
        delimiter: For CSV, the delimiter; sniffed from the start of the file by default.
        encoding: For CSV, the encoding; told from the start of the file by default.
        sheet: For XLSX, the sheet to read; the first by default.
        strict: Refuse the file (and write nothing) if any value is invalid.
        hashed_phone_form: How hashed phone columns were made. Only `e164` (SHA-256 of `+`
            and digits) gives digests that match; `digits` (Meta's form, without `+`) is
            refused, since a hash cannot be given its `+` back.
        progress: Called with the number of rows of each batch once it is digested.
        workers: Processes that digest batches at once; by default one per core.

    Returns:
        What was read, dropped and written.

    Raises:
        InputError: If an option, the mapping or the source is not usable, if no row is
            left to write (NO_ROWS_WRITTEN), if `strict` and a value is invalid
            (INVALID_VALUES), or if a segment breaks the server's rules. Nothing is written
            then.
    """
    destination = Path(destination)
    if hashed_phone_form != "e164":
        raise InputError(
            "PHONE_HASH_FORM_NOT_CONVERTIBLE",
            "Hashed phones must be SHA-256 of the E.164 form with its '+' (as in +66812345678)."
            " Hashes of the digits without '+' (the form Meta asks for) cannot be converted: a"
            " hash cannot be given its '+' back. Hash the numbers again with the '+', or give"
            " the raw numbers with --column.",
            {"hashed_phone_form": str(hashed_phone_form)},
        )
    plan = _digest_plan(
        columns or {},
        hashed_columns or {},
        default_region=default_region,
        region_column=region_column,
        declared_types=declared_types,
        secret=secret,
        collaboration_id=collaboration_id,
    )
    input_columns = [column.column for column in plan.columns]
    identifier_types = [column.identifier_type for column in plan.columns]
    segments = segment_mapping(segment_columns)
    _check_segments(list(segments), input_columns, [])
    check_segment_names(segments, identifier_types)
    customers = _sources.CustomerSource(source, delimiter=delimiter, encoding=encoding, sheet=sheet)
    if customers.path is not None:
        _check_destination(customers.path, destination)
    extra = [region_column] if region_column and region_column not in input_columns else []
    read = list(dict.fromkeys([*input_columns, *segments, *extra]))
    customers.check_columns(read)
    schema = _digest_schema(
        identifier_types,
        list(segments.values()),
        collaboration_id,
        key_check_value(secret, collaboration_id),
    )
    expected_rows = customers.expected_rows()
    with work_folder(destination) as work:
        digested = _digest_all(
            customers.batches(read),
            plan,
            segment_columns=list(segments),
            schema=schema,
            work=work,
            partitions=partitions_for(expected_rows),
            workers=workers or default_workers(),
            many_batches=expected_rows > _MANY_BATCHES_ROWS,
            progress=progress,
            where=customers.where,
        )
        findings = [
            advice.ColumnFindings(
                column.identifier_type,
                column.column,
                column.hashed,
                tally.values_read,
                tally.invalid,
                0,
                tally.sampled,
                tally.looks_hashed,
            )
            for column, tally in zip(plan.columns, digested.tallies, strict=True)
        ]
        try:
            _refuse_bad_output(customers, plan, digested, findings, strict=strict)
        except BaseException:
            digested.finder.close()
            raise
        duplicates = digested.finder.finish(digested.rows_kept, workers or default_workers())
        rows_written = _write_digest_file(
            digested.rows_file, destination, schema, list(segments.values()), duplicates,
            segment_sources=list(segments),
        )  # fmt: skip
    findings = [
        dataclasses.replace(found, duplicates=rows.count)
        for found, rows in zip(findings, duplicates, strict=True)
    ]
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
        hints=tuple(
            advice.hints(
                findings,
                rows_read=digested.rows_read,
                rows_written=rows_written,
                default_region=None if region_column else default_region,
                country_columns=[
                    name
                    for name in customers.names
                    if name.strip().lower() in advice.COUNTRY_COLUMNS
                ],
            )
        ),
        source=_described(customers),
    )


def _described(customers: _sources.CustomerSource) -> str:
    """Say what was read and how, for the summary."""
    if customers.dialect is not None:
        delimiter = (
            "tab" if customers.dialect.delimiter == "\t" else repr(customers.dialect.delimiter)
        )
        return (
            f"{customers.label}: CSV, delimiter {delimiter}, encoding {customers.dialect.encoding}"
        )
    return f"{customers.label}: {customers.format}"


def _refuse_bad_output(
    customers: _sources.CustomerSource,
    plan: DigestPlan,
    digested: _FirstPass,
    findings: list[advice.ColumnFindings],
    *,
    strict: bool,
) -> None:
    """Refuse, before anything is written, an empty output and, if strict, invalid values."""
    if not digested.rows_kept:
        found = advice.hints(findings, rows_read=digested.rows_read, rows_written=0)
        raise InputError(
            "NO_ROWS_WRITTEN",
            f"No row of {customers.label} has a valid identifier"
            f" ({digested.rows_read:,} rows read), so no digests file was written. "
            + " ".join(found),
            {"path": customers.label, "rows_read": str(digested.rows_read)},
        )
    if strict:
        for column, tally in zip(plan.columns, digested.tallies, strict=True):
            if tally.invalid.total():
                reasons = ", ".join(f"{n:,} {r}" for r, n in sorted(tally.invalid.items()))
                raise InputError(
                    "INVALID_VALUES",
                    f"Column {column.column!r} of {customers.label} has"
                    f" {tally.invalid.total():,} invalid {column.identifier_type} values"
                    f" ({reasons}); the first is on {tally.first_invalid or 'an unknown row'}."
                    " Without --strict they would be dropped and counted; no digests file was"
                    " written.",
                    {
                        "path": customers.label,
                        "column": column.column,
                        "where": tally.first_invalid or "",
                        "invalid": str(tally.invalid.total()),
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
            matching=metadata.get(META_MATCHING, SHARED_SECRET.encode()).decode(),
        )
    except (KeyError, ValueError) as error:
        raise _not_a_digest_file(path, f"its metadata is incomplete ({error})") from None
    if digest_file.matching not in MATCHINGS:
        raise _not_a_digest_file(path, f"its matching {digest_file.matching!r} is unknown")
    if schema.names != [*digest_file.identifier_types, *digest_file.segment_columns]:
        raise _not_a_digest_file(path, "its columns differ from those its metadata names")
    return digest_file


@dataclass
class _Tally:
    """What normalization found in one identifier column, added up over the batches."""

    values_read: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    first_invalid: str | None = None
    sampled: int = 0
    looks_hashed: int = 0

    def add(
        self,
        digests: ColumnDigests,
        cells: pa.Array[Any],
        *,
        first_row: int,
        where: Callable[[int], str],
        raw: bool,
    ) -> None:
        """Add the counts of one batch, whose first row is row `first_row` of the source."""
        self.values_read += digests.values_read
        self.invalid.update(digests.invalid)
        self.changes.update(digests.changes)
        if self.first_invalid is None and digests.invalid.total():
            row = _first_invalid_row(cells, digests.digests)
            if row is not None:
                self.first_invalid = where(first_row + row)
        if raw and self.sampled < _HASH_SAMPLE_ROWS:
            sample = cells.slice(0, _HASH_SAMPLE_ROWS - self.sampled).drop_null()
            self.sampled += len(sample)
            matches: Any = pc.match_substring_regex(sample, _HASH_LIKE)
            self.looks_hashed += int(pc.sum(matches).as_py() or 0)

    def summary(self, duplicates: int) -> TypeSummary:
        """Return the summary of the column, given how many digests repeated an earlier row."""
        return TypeSummary(
            values_read=self.values_read,
            valid=self.values_read - self.invalid.total(),
            invalid_by_reason=dict(sorted(self.invalid.items())),
            duplicates=duplicates,
            changes=dict(sorted(self.changes.items())),
            first_invalid=self.first_invalid,
        )


def _first_invalid_row(cells: Any, digests: Any) -> int | None:
    """The index of the first cell that holds a value but gave no digest (an invalid one)."""
    candidates = pc.and_(pc.is_valid(cells), pc.is_null(digests))
    for index in pc.indices_nonzero(candidates).to_pylist():
        if str(cells[index].as_py()).strip():
            return int(index)
    return None


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
    where: Callable[[int], str],
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
                for tally, column, column_plan in zip(
                    result.tallies, digested, plan.columns, strict=True
                ):
                    tally.add(
                        column,
                        batch.column(column_plan.column),
                        first_row=result.rows_read,
                        where=where,
                        raw=not column_plan.hashed
                        and column_plan.identifier_type in normalize.BUILTIN_TYPES,
                    )
                _check_labels(batch, segment_columns, first_row=result.rows_read, where=where)
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


def _check_labels(
    batch: pa.RecordBatch,
    segment_columns: Sequence[str],
    *,
    first_row: int,
    where: Callable[[int], str],
) -> None:
    """Refuse a segment label longer than the server accepts, saying where it is."""
    for column in segment_columns:
        labels: Any = batch.column(column)
        long = pc.greater(pc.utf8_length(labels), pa.scalar(MAX_SEGMENT_LABEL))
        rows = pc.indices_nonzero(pc.fill_null(long, False))
        if len(rows):
            raise InputError(
                "SEGMENT_VALUE_TOO_LONG",
                f"Segment column {column!r} has a value longer than {MAX_SEGMENT_LABEL}"
                f" characters on {where(first_row + rows[0].as_py())}; segments are short"
                " labels such as a loyalty tier. No digests file was written.",
                {"column": column, "where": where(first_row + rows[0].as_py())},
            )


def _write_digest_file(
    rows_file: Path,
    destination: Path,
    schema: pa.Schema,
    segment_columns: Sequence[str],
    duplicates: Sequence[DuplicateRows],
    *,
    segment_sources: Sequence[str] = (),
) -> int:
    """Second pass: write the digests file without digests that repeat an earlier row.

    The distinct labels of each segment are counted over the rows written, as the server
    counts them; too many refuse the file before it replaces the destination.
    """
    written = pending_rows = 0
    pending: list[pa.RecordBatch] = []
    labels: dict[str, set[str]] = {name: set() for name in segment_columns}
    sources = dict(zip(segment_columns, segment_sources or segment_columns, strict=True))
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
            for name, seen in labels.items():
                found = pc.unique(first_seen.column(name)).drop_null().to_pylist()
                seen.update(str(value) for value in found)
                if len(seen) > MAX_SEGMENT_VALUES:
                    raise InputError(
                        "TOO_MANY_SEGMENT_VALUES",
                        f"Segment column {sources[name]!r} has more than {MAX_SEGMENT_VALUES}"
                        " distinct values; segments are labels with few values, never"
                        " per-person data. No digests file was written.",
                        {"column": sources[name], "segment": name},
                    )
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
    region_column: str | None = None,
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
    if region_column is not None and not any(
        plan.identifier_type == "phone" and not plan.hashed for plan in plans.values()
    ):
        raise InputError(
            "REGION_COLUMN_WITHOUT_PHONES",
            f"A region column ({region_column!r}) was given, but no column of raw phone"
            " numbers: map one with --column COLUMN=phone.",
            {"region_column": region_column},
        )
    plan = DigestPlan(tuple(plans.values()), default_region, tuple(declared_types), region_column)
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
