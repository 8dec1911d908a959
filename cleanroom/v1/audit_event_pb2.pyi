import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditEvent(_message.Message):
    __slots__ = ("name", "index", "event_time", "caller", "caller_roles", "method", "resources", "request_summary", "outcome")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    CALLER_ROLES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    name: str
    index: int
    event_time: _timestamp_pb2.Timestamp
    caller: str
    caller_roles: _containers.RepeatedScalarFieldContainer[str]
    method: str
    resources: _containers.RepeatedScalarFieldContainer[str]
    request_summary: _struct_pb2.Struct
    outcome: AuditOutcome
    def __init__(self, name: _Optional[str] = ..., index: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., caller: _Optional[str] = ..., caller_roles: _Optional[_Iterable[str]] = ..., method: _Optional[str] = ..., resources: _Optional[_Iterable[str]] = ..., request_summary: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., outcome: _Optional[_Union[AuditOutcome, _Mapping]] = ...) -> None: ...

class AuditOutcome(_message.Message):
    __slots__ = ("status_code", "reason", "message", "released_count", "suppressed_count", "epsilon_spent")
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RELEASED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_COUNT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    status_code: str
    reason: str
    message: str
    released_count: int
    suppressed_count: int
    epsilon_spent: float
    def __init__(self, status_code: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., released_count: _Optional[int] = ..., suppressed_count: _Optional[int] = ..., epsilon_spent: _Optional[float] = ...) -> None: ...
