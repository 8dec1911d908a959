import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Dataset(_message.Message):
    __slots__ = ("name", "owner", "identifier_types", "segment_columns", "row_count", "checksum", "key_check_value", "create_time", "identifier_stats")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_TYPES_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    KEY_CHECK_VALUE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_STATS_FIELD_NUMBER: _ClassVar[int]
    name: str
    owner: str
    identifier_types: _containers.RepeatedScalarFieldContainer[str]
    segment_columns: _containers.RepeatedScalarFieldContainer[str]
    row_count: int
    checksum: str
    key_check_value: str
    create_time: _timestamp_pb2.Timestamp
    identifier_stats: _containers.RepeatedCompositeFieldContainer[IdentifierColumnStats]
    def __init__(self, name: _Optional[str] = ..., owner: _Optional[str] = ..., identifier_types: _Optional[_Iterable[str]] = ..., segment_columns: _Optional[_Iterable[str]] = ..., row_count: _Optional[int] = ..., checksum: _Optional[str] = ..., key_check_value: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., identifier_stats: _Optional[_Iterable[_Union[IdentifierColumnStats, _Mapping]]] = ...) -> None: ...

class IdentifierColumnStats(_message.Message):
    __slots__ = ("identifier_type", "present_count", "duplicate_count")
    IDENTIFIER_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRESENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    identifier_type: str
    present_count: int
    duplicate_count: int
    def __init__(self, identifier_type: _Optional[str] = ..., present_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ...) -> None: ...
