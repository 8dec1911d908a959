"""The rows of a masking hop (SPEC section 8): blinded and tagged to go, checked on return.

A dataset being masked is stored as its rows in no meaningful order: one nullable
element column per identifier type and its segment columns (`masking_form`). A hop sends
the rows re-blinded, in an order of the server's, with a `_row_tag` per row when the
dataset has segments: AES-ECB of (segment combination, a zero check word, 64 random bits)
under the attempt's key, so that segments stay with their rows through the brand's
shuffle without the brand seeing them. The brand's result is read back here, every check
made, and turned into the dataset's next stored rows.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pyarrow import ipc

from cleanroom.errors import InvalidArgumentError
from cleanroom.group.ristretto255 import ELEMENT_BYTES, Elements, InvalidElementError, multiply
from cleanroom.usecases.upload import invalid_group_element, read_batches

TAG_COLUMN = "_row_tag"
TAG_BYTES = 16
TAG_KEY_BYTES = 32
# Below gRPC's default 4 MiB receive limit, with room for the message's own framing.
MAX_CHUNK_BYTES = 4 * 1024 * 1024 - 64 * 1024
_PACKED_COLUMNS = 8  # segment columns whose codes fit one 64-bit key

BoolArray = npt.NDArray[np.bool_]
CodeArray = npt.NDArray[np.int16]


@dataclass(frozen=True)
class HopRows:
    """A dataset's rows as a hop handles them.

    Attributes:
        identifier_types: The element columns, in order.
        segment_columns: The segment columns, in order.
        elements: Per type, an `(n, 32)` array of encodings (zeros where absent).
        present: Per type, which rows hold an element.
        codes: An `(n, segments)` array of each row's segment codes (-1: no value).
        labels: Per segment column, its labels: a code is a position here.
    """

    identifier_types: tuple[str, ...]
    segment_columns: tuple[str, ...]
    elements: dict[str, Elements]
    present: dict[str, BoolArray]
    codes: CodeArray
    labels: dict[str, list[str]]

    @property
    def row_count(self) -> int:
        """The number of rows."""
        return len(self.codes)

    def present_counts(self) -> dict[str, int]:
        """Per type, how many rows hold an element."""
        return {t: int(np.count_nonzero(p)) for t, p in self.present.items()}

    def combinations(self) -> tuple[npt.NDArray[np.uint32], CodeArray]:
        """Each row's segment combination (numbered in sorted order), and the combinations."""
        if not self.segment_columns:
            return np.zeros(self.row_count, dtype=np.uint32), np.zeros((1, 0), dtype=np.int16)
        if len(self.segment_columns) <= _PACKED_COLUMNS:
            # A byte per column (codes are -1 to 99) in one integer: a flat unique, fast.
            columns = len(self.segment_columns)  # the first in the high byte: sorted as rows
            shifts = np.arange(columns - 1, -1, -1, dtype=np.uint64) * np.uint64(8)
            keys = ((self.codes.astype(np.int64) + 1).astype(np.uint64) << shifts).sum(
                axis=1, dtype=np.uint64
            )
            packed, inverse = np.unique(keys, return_inverse=True)
            table = ((packed[:, None] >> shifts) & np.uint64(0xFF)).astype(np.int16) - 1
            return inverse.reshape(-1).astype(np.uint32), table
        table, inverse = np.unique(self.codes, axis=0, return_inverse=True)
        return inverse.reshape(-1).astype(np.uint32), table.astype(np.int16)

    def table(self) -> pa.Table:
        """The rows as a table to store: element columns, then dictionary-encoded segments."""
        columns: dict[str, pa.Array[Any]] = {
            t: _element_array(self.elements[t], self.present[t]) for t in self.identifier_types
        }
        for index, segment in enumerate(self.segment_columns):
            wide = len(self.labels[segment]) >= 128
            codes: npt.NDArray[Any] = self.codes[:, index].astype(np.int32 if wide else np.int8)
            indices = cast("pa.Array[Any]", pa.array(codes, mask=codes < 0))
            columns[segment] = pa.DictionaryArray.from_arrays(
                indices, pa.array(self.labels[segment], pa.string())
            )
        return pa.table(columns)


def multiplied(rows: HopRows, multiplier: bytes) -> HopRows:
    """The rows with every present element times `multiplier`, in the same order."""
    elements = {}
    for identifier_type, stored in rows.elements.items():
        valid = rows.present[identifier_type]
        values = stored.copy()
        if valid.any():
            values[valid] = multiply(multiplier, values[valid])
        elements[identifier_type] = values
    return HopRows(
        rows.identifier_types, rows.segment_columns, elements, rows.present, rows.codes,
        rows.labels,
    )  # fmt: skip


def masking_form(
    table: pa.Table, identifier_types: Sequence[str], segment_columns: Sequence[str]
) -> pa.Table:
    """The columns of a stored table that a hop reads: elements and segments, no layout."""
    return table.select([*identifier_types, *segment_columns]).replace_schema_metadata(None)


def read_rows(
    table: pa.Table, identifier_types: Sequence[str], segment_columns: Sequence[str]
) -> HopRows:
    """A stored dataset's rows (its masking form, or its sorted layout) as a hop reads them."""
    elements: dict[str, Elements] = {}
    present: dict[str, BoolArray] = {}
    rows = table.num_rows
    for identifier_type in identifier_types:
        column = table.column(identifier_type).combine_chunks()
        data = column.buffers()[1]
        values = np.zeros((rows, ELEMENT_BYTES), dtype=np.uint8)
        if data is not None and rows:
            raw = np.frombuffer(memoryview(data), dtype=np.uint8)
            start = column.offset * ELEMENT_BYTES
            values[:] = raw[start : start + rows * ELEMENT_BYTES].reshape(rows, ELEMENT_BYTES)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        values[~valid] = 0
        elements[identifier_type], present[identifier_type] = values, valid
    codes = np.full((rows, len(segment_columns)), -1, dtype=np.int16)
    labels: dict[str, list[str]] = {}
    for index, segment in enumerate(segment_columns):
        column = table.column(segment).combine_chunks()
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        encoded = cast("pa.DictionaryArray[Any, Any]", column)
        labels[segment] = [str(v) for v in encoded.dictionary.to_pylist()]
        codes[:, index] = encoded.indices.fill_null(-1).to_numpy().astype(np.int16)
    return HopRows(
        tuple(identifier_types), tuple(segment_columns), elements, present, codes, labels
    )


def hop_schema(identifier_types: Sequence[str], segment_columns: Sequence[str]) -> pa.Schema:
    """The columns a hop sends and takes back: elements, and the row tags with segments."""
    fields = [pa.field(t, pa.binary(ELEMENT_BYTES)) for t in identifier_types]
    if segment_columns:
        fields.append(pa.field(TAG_COLUMN, pa.binary(TAG_BYTES)))
    return pa.schema(fields)


@dataclass(frozen=True)
class Expected:
    """What a hop's result must hold: the rows sent, counted without their values."""

    row_count: int
    present: dict[str, int]
    per_combination: npt.NDArray[np.int64]
    combinations: CodeArray
    segment_columns: tuple[str, ...]
    labels: dict[str, list[str]]


def expected(rows: HopRows) -> Expected:
    """What the result of any attempt over these rows must hold."""
    combination, table = rows.combinations()
    counts = np.bincount(combination, minlength=len(table)).astype(np.int64)
    return Expected(
        rows.row_count, rows.present_counts(), counts, table, rows.segment_columns, rows.labels
    )


def blinded_chunks(
    rows: HopRows, multiplier: bytes | None, tag_key: bytes, *, max_chunk_bytes: int
) -> tuple[list[bytes], str]:
    """The record batches of an attempt and their checksum.

    Every present element is multiplied by `multiplier` (None: sent as stored), the rows
    are put in a fresh random order, and each gets its tag when there are segments.
    """
    order = np.random.default_rng(secrets.randbits(128)).permutation(rows.row_count)
    columns: list[pa.Array[Any]] = []
    for identifier_type in rows.identifier_types:
        values = rows.elements[identifier_type][order]
        valid = rows.present[identifier_type][order]
        if multiplier is not None and valid.any():
            values[valid] = multiply(multiplier, values[valid])
        columns.append(_element_array(values, valid))
    if rows.segment_columns:
        combination, _ = rows.combinations()
        columns.append(_tags(combination[order], tag_key))
    schema = hop_schema(rows.identifier_types, rows.segment_columns)
    batch = pa.record_batch(columns, schema=schema)
    per_row = ELEMENT_BYTES * len(rows.identifier_types) + (
        TAG_BYTES if rows.segment_columns else 0
    )
    step = max(1, min(max_chunk_bytes, MAX_CHUNK_BYTES) // (per_row + 1) - 64)
    chunks = [
        _ipc_stream(schema, batch.slice(start, step))
        for start in range(0, max(rows.row_count, 1), step)
    ]
    return chunks, hashlib.sha256(b"".join(chunks)).hexdigest()


class HopResult:
    """A brand's result of one attempt, chunk by chunk, checked as it comes and at the end."""

    def __init__(self, schema: pa.Schema, row_count: int, checksum: str) -> None:
        self.schema = schema
        self.row_count = row_count
        self.checksum = checksum
        self.rows = 0
        self.chunks = 0
        self.bytes = 0
        self._hash = hashlib.sha256()
        self._batches: list[pa.RecordBatch] = []
        self._chunk_ends: list[int] = []

    def add_chunk(self, payload: bytes) -> None:
        """Checks one chunk (an Arrow IPC stream of the sent schema) and keeps its rows.

        Raises:
            InvalidArgumentError: The chunk is not Arrow, has other columns, or takes the
                stream past the hop's rows.
        """
        self.chunks += 1
        self.bytes += len(payload)
        self._hash.update(payload)
        for batch in read_batches(payload, self.chunks, self.schema):
            self.rows += batch.num_rows
            if self.rows > self.row_count:
                raise _row_count_mismatch(self.row_count, self.rows, more=True)
            self._batches.append(batch)
        self._chunk_ends.append(self.rows)

    def finish(self, expect: Expected, multiplier: bytes, tag_key: bytes) -> HopRows:
        """Checks the whole result and returns its rows times `multiplier`.

        Raises:
            InvalidArgumentError: ROW_COUNT_MISMATCH, CHECKSUM_MISMATCH,
                MASKING_HOP_ROWS_CHANGED, INVALID_ROW_TAG or INVALID_GROUP_ELEMENT.
        """
        if self.rows != self.row_count or self.rows != expect.row_count:
            raise _row_count_mismatch(expect.row_count, self.rows, more=False)
        checksum = self._hash.hexdigest()
        if checksum != self.checksum:
            raise InvalidArgumentError(
                "CHECKSUM_MISMATCH",
                f"The SHA-256 of the {self.chunks} chunks received is {checksum}; the header"
                f" declares {self.checksum}. A chunk was lost or changed on the way: the hop"
                " was not applied; send the result again.",
                field="result.checksum",
                declared=self.checksum,
                received=checksum,
            )
        table = pa.Table.from_batches(self._batches, schema=self.schema)
        identifier_types = tuple(n for n in self.schema.names if n != TAG_COLUMN)
        codes = np.zeros((self.rows, 0), dtype=np.int16)
        if expect.segment_columns:
            codes = expect.combinations[_read_tags(table.column(TAG_COLUMN), expect, tag_key)]
        rows = read_rows(table, identifier_types, ())
        if rows.present_counts() != expect.present:
            raise _rows_changed("the number of elements of a type differs from the rows sent")
        elements = {}
        for identifier_type in identifier_types:
            values, valid = rows.elements[identifier_type], rows.present[identifier_type]
            _check_distinct(values[valid])
            try:
                product = multiply(multiplier, values[valid]) if valid.any() else values[valid]
            except InvalidElementError as error:
                row = int(np.flatnonzero(valid)[error.index])
                chunk = int(np.searchsorted(self._chunk_ends, row, side="right")) + 1
                raise invalid_group_element(chunk, identifier_type, 1) from None
            values[valid] = product
            elements[identifier_type] = values
        return HopRows(
            identifier_types, expect.segment_columns, elements, rows.present, codes, expect.labels
        )


def _read_tags(column: pa.ChunkedArray[Any], expect: Expected, tag_key: bytes) -> npt.NDArray[Any]:
    """Each row's segment combination, from its tag; refuses tags not of this attempt."""
    array = column.combine_chunks()
    if array.null_count:
        raise _invalid_tags("a row has no tag")
    data = array.buffers()[1]
    raw = (
        b""
        if data is None
        else memoryview(data)[
            array.offset * TAG_BYTES : (array.offset + len(array)) * TAG_BYTES
        ].tobytes()
    )
    decryptor = Cipher(algorithms.AES(tag_key), modes.ECB()).decryptor()  # noqa: S305 - one block a row, random in each
    plain = np.frombuffer(decryptor.update(raw) + decryptor.finalize(), dtype="<u4").reshape(-1, 4)
    combination, check = plain[:, 0], plain[:, 1]
    if check.any() or (combination >= len(expect.per_combination)).any():
        raise _invalid_tags("a tag was not made by this attempt")
    nonces = plain[:, 2:].copy().view(np.uint64).reshape(-1)
    if len(np.unique(nonces)) != len(nonces):
        raise _rows_changed("a row was sent back more than once")
    counts = np.bincount(combination, minlength=len(expect.per_combination))
    if not np.array_equal(counts, expect.per_combination):
        raise _rows_changed("the rows per segment differ from the rows sent")
    return combination.astype(np.intp)


def _tags(combination: npt.NDArray[np.uint32], tag_key: bytes) -> pa.Array[Any]:
    """The rows' tags: AES-ECB of (combination u32 LE, 0 u32, 64 random bits), one call."""
    plain = np.zeros((len(combination), 4), dtype="<u4")
    plain[:, 0] = combination
    plain[:, 2:] = np.frombuffer(os.urandom(8 * len(combination)), dtype="<u4").reshape(-1, 2)
    encryptor = Cipher(algorithms.AES(tag_key), modes.ECB()).encryptor()  # noqa: S305 - as above
    tags = encryptor.update(plain.tobytes()) + encryptor.finalize()
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(TAG_BYTES), len(combination), [None, pa.py_buffer(tags)]
    )


def _check_distinct(values: Elements) -> None:
    """Refuses a column in which an element repeats: masking maps distinct ones to distinct."""
    if len(values) < 2:
        return
    prefixes = np.sort(values[:, :8].copy().view(np.uint64).reshape(-1))
    if not (prefixes[1:] == prefixes[:-1]).any():
        return
    whole = values.view(np.dtype((np.void, ELEMENT_BYTES))).reshape(-1)
    if len(np.unique(whole)) != len(whole):
        raise _rows_changed("an element repeats")


def _element_array(values: Elements, valid: BoolArray) -> pa.Array[Any]:
    rows = len(values)
    nulls = rows - int(np.count_nonzero(valid))
    bitmap = None if not nulls else pa.py_buffer(np.packbits(valid, bitorder="little").data)
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(ELEMENT_BYTES),
        rows,
        [bitmap, pa.py_buffer(np.ascontiguousarray(values).data)],
        null_count=nulls,
    )


def _ipc_stream(schema: pa.Schema, batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _row_count_mismatch(declared: int, received: int, *, more: bool) -> InvalidArgumentError:
    held = f"at least {received}" if more else f"{received}"
    return InvalidArgumentError(
        "ROW_COUNT_MISMATCH",
        f"The result held {held} rows; the hop has {declared}. The hop was not applied:"
        " send every row the attempt sent, masked.",
        field="result.row_count",
        declared=declared,
        received=received,
    )


def _rows_changed(problem: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        "MASKING_HOP_ROWS_CHANGED",
        f"The result is not the rows the attempt sent ({problem}): a hop multiplies every"
        " element and shuffles whole rows, nothing else. The hop was not applied; start it"
        " again with `cleanroom-partner blind work`.",
        field="record_batches",
    )


def _invalid_tags(problem: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        "INVALID_ROW_TAG",
        f"A `{TAG_COLUMN}` of the result is not one the attempt sent ({problem}): the tags"
        " must stay with their rows, unchanged. The hop was not applied.",
        field="record_batches",
    )
