"""One dataset upload: its header checked, each chunk validated, the whole committed or nothing.

Chunks are Arrow IPC streams. Every check that can fail runs before the dataset becomes
visible (SPEC section 3): the schema, digests that are not digests, the row count, the
checksum. Repeated digests of a type are dropped after the first row that holds them.
In a double-blind collaboration (SPEC section 8) the columns hold ristretto255 elements
instead, each of which must decode; equal digests give equal elements, so repeats go the
same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

from cleanroom.config import Collaboration, Matching
from cleanroom.errors import FailedPreconditionError, InvalidArgumentError, shown
from cleanroom.group.ristretto255 import valid_elements
from cleanroom.matching.layout import sorted_layout
from cleanroom.names import CollaborationName, DatasetName, check_id
from cleanroom.storage.catalog import IdentifierStats
from cleanroom.usecases.ipc_body import MalformedMetadataError, record_batch_header

DIGEST_BYTES = 32
MAX_SEGMENT_COLUMNS = 16
MAX_SEGMENT_VALUES = 100
MAX_SEGMENT_LABEL = 64
SEGMENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
TYPE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")  # as `collaborations[].identifier_types`
CHECKSUM = re.compile(r"[0-9a-f]{64}")
KCV = re.compile(r"[0-9a-f]{16}")
MAX_TYPES = 16
PRINTABLE_LOW, PRINTABLE_HIGH = 0x20, 0x7E


@dataclass(frozen=True)
class UploadHeader:
    """The first message of an upload: where the dataset goes and what the stream holds."""

    parent: CollaborationName
    dataset_id: str
    identifier_types: tuple[str, ...]
    segment_columns: tuple[str, ...]
    key_check_value: str
    row_count: int
    checksum: str
    matching: Matching = Matching.SHARED_SECRET

    def check(self, collaboration: Collaboration) -> None:
        """Checks the header against itself and the collaboration.

        Raises:
            InvalidArgumentError: A field is malformed; the error names it.
            FailedPreconditionError: KEY_CHECK_MISMATCH, the digests were made with
                another secret than the collaboration's; MATCHING_MODE_MISMATCH, the
                columns are made for the other matching mode.
        """
        self.check_form()
        _check_columns(self.identifier_types, self.segment_columns, collaboration)
        if self.matching is not collaboration.matching:
            raise matching_mode_mismatch(collaboration, self.matching)
        if self.key_check_value not in collaboration.accepted_key_check_values:
            raise FailedPreconditionError(
                "KEY_CHECK_MISMATCH",
                f"The key check value {self.key_check_value!r} is not the one of"
                f" {self.parent} ({collaboration.key_check_value!r}): the digests were made"
                " with another secret or for another collaboration. Prepare the file again"
                " with the collaboration's secret.",
                key_check_value=self.key_check_value,
                expected_key_check_value=collaboration.key_check_value,
                collaboration=str(self.parent),
            )

    def check_form(self) -> None:
        """Checks the fields on their own, before any of them is logged or echoed.

        Ids, column names and the key check value are plain, bounded ASCII once this
        passes: nothing a caller sends reaches the query log as control characters or
        markup.

        Raises:
            InvalidArgumentError: A field is malformed; the error names it.
        """
        check_id(self.dataset_id, field="header.dataset_id", kind="dataset")
        for field, names in (
            ("header.identifier_types", self.identifier_types),
            ("header.segment_columns", self.segment_columns),
        ):
            segments = field == "header.segment_columns"
            limit = MAX_SEGMENT_COLUMNS if segments else MAX_TYPES
            if len(names) > limit:
                raise InvalidArgumentError(
                    "TOO_MANY_SEGMENT_COLUMNS" if segments else "TOO_MANY_IDENTIFIER_TYPES",
                    f"`{field}` names {len(names)} columns; at most {limit} are allowed.",
                    field=field,
                    columns=len(names),
                    max_columns=limit,
                )
            for name in names:
                if not (SEGMENT_NAME if segments else TYPE_NAME).fullmatch(name):
                    raise InvalidArgumentError(
                        "INVALID_COLUMN_NAME",
                        f"A column name in `{field}` ({shown(name)}) is not valid: use 1 to 63"
                        " lowercase letters, digits or underscores (and hyphens in identifier"
                        " types), starting with a letter.",
                        field=field,
                    )
        if not KCV.fullmatch(self.key_check_value):
            raise InvalidArgumentError(
                "INVALID_KEY_CHECK_VALUE",
                f"`header.key_check_value` ({shown(self.key_check_value)}) must be 16"
                " lowercase hex characters, as `cleanroom-partner kcv` prints.",
                field="header.key_check_value",
            )
        check_stream_totals("header", self.row_count, self.checksum)

    @property
    def dataset_name(self) -> DatasetName:
        """The name the dataset will have."""
        return DatasetName(self.parent.collaboration, self.dataset_id)

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema every chunk must have."""
        return pa.schema(
            [pa.field(t, pa.binary(DIGEST_BYTES)) for t in self.identifier_types]
            + [pa.field(s, pa.string()) for s in self.segment_columns]
        )


def matching_mode_mismatch(collaboration: Collaboration, sent: Matching) -> FailedPreconditionError:
    """The refusal of columns made for the other matching mode than the collaboration's."""
    if collaboration.matching is Matching.DOUBLE_BLIND:
        advice = (
            "it matches double-blind: make the brand's blind key once (`cleanroom-partner"
            " blind-key`) and upload with `--blind-key`"
        )
    else:
        advice = "it matches on the shared secret: upload the digests without a blind key"
    return FailedPreconditionError(
        "MATCHING_MODE_MISMATCH",
        f"The upload is made for {sent.value.replace('_', '-')} matching, but collaboration"
        f" {collaboration.id!r} uses {collaboration.matching.value.replace('_', '-')}"
        f" matching: {advice}. Nothing was stored.",
        collaboration=f"collaborations/{collaboration.id}",
        matching=collaboration.matching.value,
        upload_matching=sent.value,
    )


def check_stream_totals(message: str, row_count: int, checksum: str) -> None:
    """Checks what the first message of a stream declares of the rest: rows and checksum.

    Raises:
        InvalidArgumentError: INVALID_ROW_COUNT or INVALID_CHECKSUM, naming
            `{message}.row_count` or `{message}.checksum`.
    """
    if row_count <= 0:
        raise InvalidArgumentError(
            "INVALID_ROW_COUNT",
            f"`{message}.row_count` must be positive, got {row_count}.",
            field=f"{message}.row_count",
        )
    if not CHECKSUM.fullmatch(checksum):
        raise InvalidArgumentError(
            "INVALID_CHECKSUM",
            f"`{message}.checksum` must be the SHA-256 of the record batch payloads,"
            " 64 lowercase hex characters.",
            field=f"{message}.checksum",
        )


def _check_columns(
    types: Sequence[str], segments: Sequence[str], collaboration: Collaboration
) -> None:
    if not types:
        raise InvalidArgumentError(
            "NO_IDENTIFIER_TYPES",
            "`header.identifier_types` is empty: name at least one digest column.",
            field="header.identifier_types",
        )
    for identifier_type in types:
        if identifier_type not in collaboration.identifier_types:
            raise InvalidArgumentError(
                "UNKNOWN_IDENTIFIER_TYPE",
                f"Identifier type {identifier_type!r} is not one of collaboration"
                f" {collaboration.id!r}: use {', '.join(collaboration.identifier_types)}.",
                field="header.identifier_types",
                identifier_type=identifier_type,
            )
    for segment in segments:
        if not SEGMENT_NAME.fullmatch(segment) or segment in collaboration.identifier_types:
            raise InvalidArgumentError(
                "INVALID_SEGMENT_COLUMN",
                f"Segment column name {segment!r} is not valid: use 1 to 63 lowercase letters,"
                " digits or underscores, starting with a letter, and no identifier type name.",
                field="header.segment_columns",
                segment_column=segment,
            )
    names = [*types, *segments]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(
            "DUPLICATE_COLUMN",
            "A column is named twice in `header.identifier_types` and `header.segment_columns`.",
            field="header.identifier_types",
        )


class DatasetUpload:
    """An upload in progress. Chunks are checked as they come and kept in scratch files.

    Each digest column goes to a raw file of its own (`scratch` with `.0`, `.1`, ...
    appended), its bytes as they came, so that at the end it is one contiguous array,
    memory-mapped, with no copy. Segment columns are kept as one byte per row (the code
    of the value, -1 for none), their few labels beside.
    """

    def __init__(self, header: UploadHeader, scratch: Path) -> None:
        self.header = header
        self.scratch = scratch
        self.rows = 0
        self.chunks = 0
        self.bytes = 0
        self._hash = hashlib.sha256()
        # The labels seen so far, in order of appearance: a label's code is its position.
        self._segment_values: dict[str, dict[str, None]] = {s: {} for s in header.segment_columns}
        self._segment_codes: dict[str, list[npt.NDArray[np.int8]]] = {
            s: [] for s in header.segment_columns
        }
        self._digest_paths = [
            scratch.with_name(f"{scratch.name}.{i}") for i in range(len(header.identifier_types))
        ]
        self._digest_files: list[BinaryIO] = []
        for path in self._digest_paths:
            self._digest_files.append(path.open("wb", buffering=0))
        self._validity: list[list[npt.NDArray[np.bool_] | int]] = [
            [] for _ in header.identifier_types
        ]

    def add_chunk(self, payload: bytes) -> None:
        """Checks one chunk (an Arrow IPC stream) and appends its rows.

        Raises:
            InvalidArgumentError: The chunk is not Arrow, has the wrong columns, holds
                values that are not digests, or takes the stream past its declared rows.
        """
        self.chunks += 1
        self.bytes += len(payload)
        self._hash.update(payload)
        for batch in read_batches(payload, self.chunks, self.header.schema):
            self.rows += batch.num_rows
            if self.rows > self.header.row_count:
                raise InvalidArgumentError(
                    "ROW_COUNT_MISMATCH",
                    f"The stream holds more rows than `header.row_count` ({self.header.row_count})"
                    f" declares: at least {self.rows} by chunk {self.chunks}.",
                    field="header.row_count",
                    declared=self.header.row_count,
                    received=self.rows,
                )
            self._check_batch(batch)
            self._keep(batch)

    def _keep(self, batch: pa.RecordBatch) -> None:
        """Appends a checked batch to the scratch files."""
        for index, identifier_type in enumerate(self.header.identifier_types):
            column = batch.column(identifier_type)
            data = column.buffers()[1]
            start, size = column.offset * DIGEST_BYTES, len(column) * DIGEST_BYTES
            values = b"" if data is None else memoryview(data)[start : start + size]
            self._digest_files[index].write(values)
            if len(values) < size:  # a column of nulls may come without its values
                self._digest_files[index].write(bytes(size - len(values)))
            self._validity[index].append(
                column.is_valid().to_numpy(zero_copy_only=False)
                if column.null_count
                else len(column)
            )
        for segment, codes in self._segment_codes.items():
            labels = pa.array(list(self._segment_values[segment]), pa.string())
            found = pc.index_in(batch.column(segment), value_set=labels)
            codes.append(found.fill_null(-1).to_numpy().astype(np.int8))

    def _check_batch(self, batch: pa.RecordBatch) -> None:
        present = np.zeros(batch.num_rows, dtype=np.bool_)
        for identifier_type in self.header.identifier_types:
            column = batch.column(identifier_type)
            present |= column.is_valid().to_numpy(zero_copy_only=False)
            if self.header.matching is Matching.DOUBLE_BLIND:
                check_elements(column, identifier_type, self.chunks)
            else:
                _check_digests(column, identifier_type, self.chunks)
        if not present.all():
            raise InvalidArgumentError(
                "ROW_WITHOUT_IDENTIFIER",
                f"Chunk {self.chunks} has {int((~present).sum())} rows without any digest:"
                " drop them before upload, as `cleanroom-partner prepare` does.",
                field="record_batches",
                chunk=self.chunks,
            )
        for segment, seen in self._segment_values.items():
            values = [str(v) for v in pc.unique(batch.column(segment)).drop_null().to_pylist()]
            long = [v for v in values if len(v) > MAX_SEGMENT_LABEL]
            if long:
                raise InvalidArgumentError(
                    "SEGMENT_VALUE_TOO_LONG",
                    f"Segment column {segment!r} has a value longer than {MAX_SEGMENT_LABEL}"
                    " characters; segments are short labels such as a loyalty tier.",
                    field="record_batches",
                    segment_column=segment,
                )
            seen.update(dict.fromkeys(values))
            if len(seen) > MAX_SEGMENT_VALUES:
                raise InvalidArgumentError(
                    "TOO_MANY_SEGMENT_VALUES",
                    f"Segment column {segment!r} has more than {MAX_SEGMENT_VALUES} distinct"
                    " values; segments are labels with few values, never per-person data.",
                    field="record_batches",
                    segment_column=segment,
                )

    def finish(self) -> tuple[pa.Table, tuple[IdentifierStats, ...], str]:
        """Checks the whole stream and returns its deduplicated table, stats and checksum.

        Raises:
            InvalidArgumentError: The row count or checksum differs from the header's.
        """
        self._close()
        header = self.header
        if self.rows != header.row_count:
            raise InvalidArgumentError(
                "ROW_COUNT_MISMATCH",
                f"The stream held {self.rows} rows; `header.row_count` declares"
                f" {header.row_count}. Nothing was stored: upload the whole file again.",
                field="header.row_count",
                declared=header.row_count,
                received=self.rows,
            )
        checksum = self._hash.hexdigest()
        if checksum != header.checksum:
            raise InvalidArgumentError(
                "CHECKSUM_MISMATCH",
                f"The SHA-256 of the {self.chunks} chunks received is {checksum}; the header"
                f" declares {header.checksum}. A chunk was lost or changed on the way:"
                " nothing was stored, upload again.",
                field="header.checksum",
                declared=header.checksum,
                received=checksum,
            )
        table = self._received()
        stored, counts = sorted_layout(table, header.identifier_types, header.segment_columns)
        stats = tuple(
            IdentifierStats(identifier_type, present, repeats)
            for identifier_type, (present, repeats) in zip(
                header.identifier_types, counts, strict=True
            )
        )
        return stored, stats, checksum

    def _received(self) -> pa.Table:
        """Every row received: digests memory-mapped from their scratch files."""
        columns: dict[str, pa.Array[Any] | pa.ChunkedArray[Any]] = {}
        for index, identifier_type in enumerate(self.header.identifier_types):
            parts = self._validity[index]
            valid = None
            if any(not isinstance(part, int) for part in parts):
                valid = np.concatenate(
                    [np.ones(p, dtype=np.bool_) if isinstance(p, int) else p for p in parts]
                )
            data = np.memmap(self._digest_paths[index], dtype=np.uint8, mode="r")
            columns[identifier_type] = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(DIGEST_BYTES),
                self.rows,
                [
                    None
                    if valid is None
                    else pa.py_buffer(np.packbits(valid, bitorder="little").data),
                    pa.py_buffer(data.data),
                ],
                null_count=0 if valid is None else int(self.rows - np.count_nonzero(valid)),
            )
        for segment, pieces in self._segment_codes.items():
            codes = np.concatenate(pieces)
            indices = cast("pa.Array[Any]", pa.array(codes, mask=codes < 0))
            columns[segment] = pa.DictionaryArray.from_arrays(
                indices, pa.array(list(self._segment_values[segment]), pa.string())
            )
        return pa.Table.from_arrays(list(columns.values()), names=list(columns))

    def _close(self) -> None:
        closables: list[Any] = self._digest_files
        for closable in closables:
            # Already closed, or broken with the stream: the files go anyway.
            with contextlib.suppress(OSError, pa.ArrowException):
                closable.close()

    def discard(self) -> None:
        """Closes and removes the scratch files; nothing of the upload remains."""
        self._close()
        for path in self._digest_paths:
            path.unlink(missing_ok=True)


def read_batches(payload: bytes, chunk: int, schema: pa.Schema) -> list[pa.RecordBatch]:
    """The chunk's batches, each fully validated before anything reads its values.

    Work stays bounded by the bytes received: the schema is checked before any batch is
    read (no dictionaries, no nesting, nothing but the header's columns), and each batch's
    metadata before its body is decoded (no compression, no more rows than its body holds).
    Full validation then checks offsets, lengths and UTF-8: a crafted batch whose offsets
    point past its data would otherwise make Arrow read out of bounds.
    """
    try:
        reader = ipc.MessageReader.open_stream(pa.py_buffer(payload))
        first = reader.read_next_message()
        if first.type != "schema":
            raise ValueError(f"the stream starts with a {first.type} message, not its schema")
        received = ipc.read_schema(first)
    except StopIteration:
        raise _malformed(chunk, "an empty stream") from None
    except (pa.ArrowException, ValueError, OSError) as error:
        raise _malformed(chunk, str(error)) from None
    if received != schema:
        raise InvalidArgumentError(
            "SCHEMA_MISMATCH",
            f"Chunk {chunk} has columns {received.names} with types"
            f" {[str(t) for t in received.types]}; the header declares"
            f" {schema.names}: digests as fixed_size_binary(32),"
            " segments as string.",
            field="record_batches",
            chunk=chunk,
        )
    batches = []
    try:
        for message in reader:
            _check_body(message, chunk)
            batch = ipc.read_record_batch(message, schema)
            batch.validate(full=True)
            batches.append(batch)
    except (pa.ArrowException, ValueError, OSError) as error:
        raise _malformed(chunk, str(error)) from None
    return batches


def _check_body(message: ipc.Message, chunk: int) -> None:
    """Refuses a message whose body would decode to more than its bytes on the wire."""
    try:
        declared = record_batch_header(message.metadata.to_pybytes())
    except MalformedMetadataError as error:
        raise _malformed(chunk, str(error)) from None
    if declared is None:
        raise InvalidArgumentError(
            "UNEXPECTED_IPC_MESSAGE",
            f"Chunk {chunk} holds a {message.type} message; after the schema a chunk holds"
            " record batches only (no dictionaries: segments are plain strings).",
            field="record_batches",
            chunk=chunk,
        )
    if declared.compressed:
        raise InvalidArgumentError(
            "COMPRESSED_RECORD_BATCH",
            f"Chunk {chunk} has a compressed record batch body; the server accepts"
            " uncompressed Arrow IPC only, as `cleanroom-partner upload` sends it.",
            field="record_batches",
            chunk=chunk,
        )
    body = message.body.size if message.body is not None else 0
    # Every row has a digest column's 32 bytes in the body, null or not.
    if declared.length < 0 or declared.length * DIGEST_BYTES > body:
        raise InvalidArgumentError(
            "RECORD_BATCH_LENGTH_MISMATCH",
            f"Chunk {chunk} declares {declared.length} rows in a body of {body} bytes,"
            f" which cannot hold them ({DIGEST_BYTES} bytes per digest).",
            field="record_batches",
            chunk=chunk,
        )


def _malformed(chunk: int, problem: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        "MALFORMED_RECORD_BATCH",
        f"Chunk {chunk} is not a valid Arrow IPC stream ({problem[:200]}). Send each"
        " chunk as a whole IPC stream: schema, then record batches.",
        field="record_batches",
        chunk=chunk,
    )


def _digest_matrix(column: pa.Array[Any]) -> npt.NDArray[np.uint8]:
    """The non-null digests of a column as an (n, 32) byte matrix."""
    valid = column.drop_null() if column.null_count else column
    data = valid.buffers()[1]
    if data is None or not len(valid):
        return np.zeros((0, DIGEST_BYTES), dtype=np.uint8)
    start = valid.offset * DIGEST_BYTES
    raw = np.frombuffer(memoryview(data), dtype=np.uint8)
    return raw[start : start + len(valid) * DIGEST_BYTES].reshape(-1, DIGEST_BYTES)


def check_elements(column: pa.Array[Any], identifier_type: str, chunk: int) -> None:
    """Refuses values that are not ristretto255 encodings (nulls are not looked at).

    Raises:
        InvalidArgumentError: INVALID_GROUP_ELEMENT, naming the chunk and type, never a value.
    """
    elements = _digest_matrix(column)
    if not len(elements):
        return
    bad = len(elements) - int(np.count_nonzero(valid_elements(elements)))
    if bad:
        raise invalid_group_element(chunk, identifier_type, bad)


def invalid_group_element(chunk: int, identifier_type: str, count: int) -> InvalidArgumentError:
    """The refusal of values of a column that are not ristretto255 elements."""
    return InvalidArgumentError(
        "INVALID_GROUP_ELEMENT",
        f"Chunk {chunk}: {count} values of column {identifier_type!r} are not ristretto255"
        " elements. In a double-blind collaboration every value is a masked element, as"
        " `cleanroom-partner upload --blind-key` and `blind work` send them; nothing was stored.",
        field="record_batches",
        chunk=chunk,
        identifier_type=identifier_type,
        invalid_values=count,
    )


def _check_digests(column: pa.Array[Any], identifier_type: str, chunk: int) -> None:
    """Refuses values that cannot be HMAC-SHA256 outputs: constant bytes or plain text.

    A true digest is all-printable with probability (95/256)^32, about 1e-14, and has all
    32 bytes equal with probability 2^-248: neither happens by chance. The first two bytes
    of every value are looked up at once (`_PAIR_FLAGS`); only the few values that could
    still be text or constant are looked at further, a byte at a time.
    """
    digests = _digest_matrix(column)
    if not len(digests):
        return
    flags = _PAIR_FLAGS[digests.view(np.uint16)[:, 0]]
    printable = _still(
        digests,
        np.flatnonzero(flags & _BOTH_PRINTABLE),
        lambda value, _: (value >= PRINTABLE_LOW) & (value <= PRINTABLE_HIGH),
    )
    constant = _still(
        digests, np.flatnonzero(flags & _BOTH_EQUAL), lambda value, first: value == first
    )
    for bad, reason, what in (
        (printable, "DIGEST_LOOKS_LIKE_TEXT", "are printable text"),
        (constant, "CONSTANT_DIGEST", "repeat a single byte"),
    ):
        if bad:
            raise InvalidArgumentError(
                reason,
                f"Chunk {chunk}: {bad} values of column {identifier_type!r} {what},"
                " so they are not HMAC-SHA256 digests. Upload only what `cleanroom-partner"
                " prepare` writes; never raw identifiers.",
                field="record_batches",
                chunk=chunk,
                identifier_type=identifier_type,
            )


def _pair_flags() -> npt.NDArray[np.uint8]:
    """For each two bytes read as a little-endian uint16: both printable (1), equal (2)."""
    pairs = np.arange(1 << 16)
    low, high = pairs & 0xFF, pairs >> 8
    printable = ((low >= PRINTABLE_LOW) & (low <= PRINTABLE_HIGH)) & (
        (high >= PRINTABLE_LOW) & (high <= PRINTABLE_HIGH)
    )
    flags = printable * _BOTH_PRINTABLE + (low == high) * _BOTH_EQUAL
    return np.asarray(flags, dtype=np.uint8)


_BOTH_PRINTABLE, _BOTH_EQUAL = 1, 2
_PAIR_FLAGS = _pair_flags()


def _still(
    digests: npt.NDArray[np.uint8],
    suspects: npt.NDArray[np.intp],
    holds: Callable[[npt.NDArray[np.uint8], npt.NDArray[np.uint8]], npt.NDArray[np.bool_]],
) -> int:
    """How many of the suspect rows have `holds(byte, first byte)` at bytes 2 to 31 too."""
    for position in range(2, DIGEST_BYTES):
        if not len(suspects):
            return 0
        first = digests[suspects, 0]
        suspects = suspects[holds(digests[suspects, position], first)]
    return len(suspects)
