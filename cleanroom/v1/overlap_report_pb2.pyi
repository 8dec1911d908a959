import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SuppressionReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUPPRESSION_REASON_UNSPECIFIED: _ClassVar[SuppressionReason]
    SUPPRESSION_REASON_BELOW_THRESHOLD: _ClassVar[SuppressionReason]
    SUPPRESSION_REASON_COMPLEMENTARY: _ClassVar[SuppressionReason]
SUPPRESSION_REASON_UNSPECIFIED: SuppressionReason
SUPPRESSION_REASON_BELOW_THRESHOLD: SuppressionReason
SUPPRESSION_REASON_COMPLEMENTARY: SuppressionReason

class OverlapReport(_message.Message):
    __slots__ = ("name", "base_dataset", "other_datasets", "segment_column", "creator", "create_time", "minimum_threshold", "dataset_sizes", "membership_cells", "pairwise_overlaps", "released_count", "suppressed_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_DATASET_FIELD_NUMBER: _ClassVar[int]
    OTHER_DATASETS_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_COLUMN_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DATASET_SIZES_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_CELLS_FIELD_NUMBER: _ClassVar[int]
    PAIRWISE_OVERLAPS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    base_dataset: str
    other_datasets: _containers.RepeatedScalarFieldContainer[str]
    segment_column: str
    creator: str
    create_time: _timestamp_pb2.Timestamp
    minimum_threshold: int
    dataset_sizes: _containers.RepeatedCompositeFieldContainer[DatasetSize]
    membership_cells: _containers.RepeatedCompositeFieldContainer[MembershipCell]
    pairwise_overlaps: _containers.RepeatedCompositeFieldContainer[PairwiseOverlap]
    released_count: int
    suppressed_count: int
    def __init__(self, name: _Optional[str] = ..., base_dataset: _Optional[str] = ..., other_datasets: _Optional[_Iterable[str]] = ..., segment_column: _Optional[str] = ..., creator: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., minimum_threshold: _Optional[int] = ..., dataset_sizes: _Optional[_Iterable[_Union[DatasetSize, _Mapping]]] = ..., membership_cells: _Optional[_Iterable[_Union[MembershipCell, _Mapping]]] = ..., pairwise_overlaps: _Optional[_Iterable[_Union[PairwiseOverlap, _Mapping]]] = ..., released_count: _Optional[int] = ..., suppressed_count: _Optional[int] = ...) -> None: ...

class ReleasedCount(_message.Message):
    __slots__ = ("value", "suppression_reason")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSION_REASON_FIELD_NUMBER: _ClassVar[int]
    value: int
    suppression_reason: SuppressionReason
    def __init__(self, value: _Optional[int] = ..., suppression_reason: _Optional[_Union[SuppressionReason, str]] = ...) -> None: ...

class DatasetSize(_message.Message):
    __slots__ = ("dataset", "row_count")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    row_count: ReleasedCount
    def __init__(self, dataset: _Optional[str] = ..., row_count: _Optional[_Union[ReleasedCount, _Mapping]] = ...) -> None: ...

class MembershipCell(_message.Message):
    __slots__ = ("segment", "matched_datasets", "base_row_count")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_DATASETS_FIELD_NUMBER: _ClassVar[int]
    BASE_ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    segment: str
    matched_datasets: _containers.RepeatedScalarFieldContainer[str]
    base_row_count: ReleasedCount
    def __init__(self, segment: _Optional[str] = ..., matched_datasets: _Optional[_Iterable[str]] = ..., base_row_count: _Optional[_Union[ReleasedCount, _Mapping]] = ...) -> None: ...

class PairwiseOverlap(_message.Message):
    __slots__ = ("dataset", "matched_dataset", "matched_row_count", "match_rate")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    MATCHED_DATASET_FIELD_NUMBER: _ClassVar[int]
    MATCHED_ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    MATCH_RATE_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    matched_dataset: str
    matched_row_count: ReleasedCount
    match_rate: float
    def __init__(self, dataset: _Optional[str] = ..., matched_dataset: _Optional[str] = ..., matched_row_count: _Optional[_Union[ReleasedCount, _Mapping]] = ..., match_rate: _Optional[float] = ...) -> None: ...
