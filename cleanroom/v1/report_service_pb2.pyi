from cleanroom.v1 import overlap_report_pb2 as _overlap_report_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateOverlapReportRequest(_message.Message):
    __slots__ = ("parent", "overlap_report")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_REPORT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    overlap_report: _overlap_report_pb2.OverlapReport
    def __init__(self, parent: _Optional[str] = ..., overlap_report: _Optional[_Union[_overlap_report_pb2.OverlapReport, _Mapping]] = ...) -> None: ...

class CreateOverlapReportResponse(_message.Message):
    __slots__ = ("overlap_report",)
    OVERLAP_REPORT_FIELD_NUMBER: _ClassVar[int]
    overlap_report: _overlap_report_pb2.OverlapReport
    def __init__(self, overlap_report: _Optional[_Union[_overlap_report_pb2.OverlapReport, _Mapping]] = ...) -> None: ...

class GetOverlapReportRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetOverlapReportResponse(_message.Message):
    __slots__ = ("overlap_report",)
    OVERLAP_REPORT_FIELD_NUMBER: _ClassVar[int]
    overlap_report: _overlap_report_pb2.OverlapReport
    def __init__(self, overlap_report: _Optional[_Union[_overlap_report_pb2.OverlapReport, _Mapping]] = ...) -> None: ...

class ListOverlapReportsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOverlapReportsResponse(_message.Message):
    __slots__ = ("overlap_reports", "next_page_token")
    OVERLAP_REPORTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    overlap_reports: _containers.RepeatedCompositeFieldContainer[_overlap_report_pb2.OverlapReport]
    next_page_token: str
    def __init__(self, overlap_reports: _Optional[_Iterable[_Union[_overlap_report_pb2.OverlapReport, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
