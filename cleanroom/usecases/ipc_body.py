"""What an Arrow IPC record batch message declares, read before Arrow decodes its body.

Arrow inflates a compressed body (LZ4 or ZSTD) as it reads it: a few kilobytes on the
wire can become gigabytes in memory. The upload reads the message's flatbuffer metadata
itself first, so that it can refuse compressed bodies, and bodies that declare more rows
than their bytes can hold, before anything is decoded. Only the few fields needed are read
(`Message.header_type`, `Message.header`, `RecordBatch.length`, `RecordBatch.compression`),
as laid out in Arrow's `Message.fbs`; Arrow has already verified the flatbuffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# `MessageHeader` union tags of Arrow's Message.fbs.
RECORD_BATCH_HEADER = 3
# Field indices of the tables read here.
_MESSAGE_HEADER_TYPE, _MESSAGE_HEADER = 1, 2
_RECORD_BATCH_LENGTH, _RECORD_BATCH_COMPRESSION = 0, 3


class MalformedMetadataError(ValueError):
    """The flatbuffer does not hold the fields where their offsets say."""


@dataclass(frozen=True)
class RecordBatchHeader:
    """The record batch message's declared row count and whether its body is compressed."""

    length: int
    compressed: bool


def record_batch_header(metadata: bytes) -> RecordBatchHeader | None:
    """The record batch header of a message's metadata, or None if it holds another kind.

    Raises:
        MalformedMetadataError: An offset points outside the metadata.
    """
    try:
        message = _table(metadata, _u32(metadata, 0))
        header_type = _field_u8(metadata, message, _MESSAGE_HEADER_TYPE)
        if header_type != RECORD_BATCH_HEADER:
            return None
        header_at = _field_position(metadata, message, _MESSAGE_HEADER)
        if header_at is None:
            raise MalformedMetadataError("a record batch message without its header")
        batch = _table(metadata, header_at + _u32(metadata, header_at))
        length_at = _field_position(metadata, batch, _RECORD_BATCH_LENGTH)
        length = 0 if length_at is None else struct.unpack_from("<q", metadata, length_at)[0]
        compressed = _field_position(metadata, batch, _RECORD_BATCH_COMPRESSION) is not None
    except struct.error as error:
        raise MalformedMetadataError(str(error)) from None
    return RecordBatchHeader(length=length, compressed=compressed)


def _u32(data: bytes, at: int) -> int:
    value: int = struct.unpack_from("<I", data, at)[0]
    return value


def _table(data: bytes, at: int) -> tuple[int, int, int]:
    """A table's position, and its vtable's position and size."""
    vtable = at - struct.unpack_from("<i", data, at)[0]
    if not 0 <= vtable < len(data):
        raise MalformedMetadataError("a vtable outside the metadata")
    (size,) = struct.unpack_from("<H", data, vtable)
    return at, vtable, size


def _field_position(data: bytes, table: tuple[int, int, int], index: int) -> int | None:
    """Where field `index` of a table is, or None if it is absent."""
    at, vtable, size = table
    slot = 4 + 2 * index
    if slot + 2 > size:
        return None
    offset: int = struct.unpack_from("<H", data, vtable + slot)[0]
    if offset == 0:
        return None
    if at + offset >= len(data):
        raise MalformedMetadataError("a field outside the metadata")
    return at + offset


def _field_u8(data: bytes, table: tuple[int, int, int], index: int) -> int:
    position = _field_position(data, table, index)
    return 0 if position is None else data[position]
