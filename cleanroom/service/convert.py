"""Translation between protobuf messages and domain values: the only module that knows both."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from cleanroom.audit.log import AuditEvent, AuditFilter
from cleanroom.config import Matching, PrivacyPolicy, ServerConfig
from cleanroom.errors import InvalidArgumentError
from cleanroom.matching.question import OverlapQuestion
from cleanroom.names import CollaborationName, DatasetName, MaskingHopName, partner_name
from cleanroom.privacy.budget import PrivacyBudget
from cleanroom.privacy.report import OverlapReport, ReleasedCount
from cleanroom.proofs import merkle
from cleanroom.storage.catalog import DatasetRecord
from cleanroom.usecases.masking import HopCompletion, MaskingHop, MatchingStatus
from cleanroom.usecases.reports import Estimate, MemberBudget
from cleanroom.usecases.upload import UploadHeader
from cleanroom.v1 import (
    audit_event_pb2,
    audit_service_pb2,
    dataset_pb2,
    masking_service_pb2,
    overlap_report_pb2,
    partner_service_pb2,
    report_service_pb2,
    server_info_service_pb2,
)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf timestamp of an aware datetime."""
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def upload_header(message: partner_service_pb2.UploadDatasetRequest) -> UploadHeader:
    """The header of an upload from its first message."""
    if message.WhichOneof("payload") != "header":
        raise InvalidArgumentError(
            "HEADER_REQUIRED",
            "The first message of an upload must carry `header`; record batches follow it.",
            field="header",
        )
    header = message.header
    return UploadHeader(
        parent=CollaborationName.parse(header.parent, field="header.parent"),
        dataset_id=header.dataset_id,
        identifier_types=tuple(header.identifier_types),
        segment_columns=tuple(header.segment_columns),
        key_check_value=header.key_check_value,
        row_count=header.row_count,
        checksum=header.checksum,
        matching=_upload_matching(header.matching),
    )


def _upload_matching(value: int) -> Matching:
    if value not in _UPLOAD_MATCHING:
        raise InvalidArgumentError(
            "INVALID_MATCHING",
            f"`header.matching` is {value}, not a value of UploadMatching: send SHARED_SECRET"
            " (or leave it unset) or DOUBLE_BLIND.",
            field="header.matching",
        )
    return _UPLOAD_MATCHING[value]


_UPLOAD_MATCHING: dict[int, Matching] = {
    partner_service_pb2.UPLOAD_MATCHING_UNSPECIFIED: Matching.SHARED_SECRET,
    partner_service_pb2.UPLOAD_MATCHING_SHARED_SECRET: Matching.SHARED_SECRET,
    partner_service_pb2.UPLOAD_MATCHING_DOUBLE_BLIND: Matching.DOUBLE_BLIND,
}


def upload_chunk(message: partner_service_pb2.UploadDatasetRequest) -> bytes:
    """The record batches of a later upload message."""
    if message.WhichOneof("payload") != "record_batches":
        raise InvalidArgumentError(
            "UNEXPECTED_HEADER",
            "Only the first message of an upload carries `header`; later ones carry"
            " `record_batches`.",
            field="header",
        )
    return message.record_batches


def dataset(record: DatasetRecord, status: MatchingStatus) -> dataset_pb2.Dataset:
    """The API form of a committed dataset, for its owner, with its matching status."""
    return dataset_pb2.Dataset(
        matching_state=dataset_pb2.MATCHING_STATE_MATCHABLE
        if status.matchable
        else dataset_pb2.MATCHING_STATE_MASKING,
        mask_set=[partner_name(p) for p in status.mask_set],
        pending_maskers=[partner_name(p) for p in status.pending],
        name=str(record.name),
        owner=partner_name(record.owner),
        identifier_types=record.identifier_types,
        segment_columns=record.segment_columns,
        row_count=record.row_count,
        checksum=record.checksum,
        key_check_value=record.key_check_value,
        create_time=timestamp(record.create_time),
        identifier_stats=[
            dataset_pb2.IdentifierColumnStats(
                identifier_type=s.identifier_type,
                present_count=s.present_count,
                duplicate_count=s.duplicate_count,
            )
            for s in record.identifier_stats
        ],
    )


def masking_hop(hop: MaskingHop) -> masking_service_pb2.MaskingHop:
    """The API form of a masking hop."""
    return masking_service_pb2.MaskingHop(
        name=str(hop.name),
        dataset=str(hop.name.dataset_name),
        partner=partner_name(hop.name.partner),
        identifier_types=hop.identifier_types,
        row_count=hop.row_count,
        create_time=timestamp(hop.create_time),
    )


def hop_completion(message: masking_service_pb2.CompleteMaskingHopRequest) -> HopCompletion:
    """The header of a hop's completion from its first message."""
    if message.WhichOneof("payload") != "result":
        raise InvalidArgumentError(
            "HEADER_REQUIRED",
            "The first message of CompleteMaskingHop must carry `result`; record batches"
            " follow it.",
            field="result",
        )
    result = message.result
    return HopCompletion(
        name=MaskingHopName.parse(result.name, field="result.name"),
        attempt_id=result.attempt_id,
        row_count=result.row_count,
        checksum=result.checksum,
    )


def hop_chunk(message: masking_service_pb2.CompleteMaskingHopRequest) -> bytes:
    """The record batches of a later message of a hop's completion."""
    if message.WhichOneof("payload") != "record_batches":
        raise InvalidArgumentError(
            "UNEXPECTED_HEADER",
            "Only the first message of CompleteMaskingHop carries `result`; later ones carry"
            " `record_batches`.",
            field="result",
        )
    return message.record_batches


def shared_dataset(record: DatasetRecord) -> dataset_pb2.SharedDataset:
    """What members may see of any dataset of their collaboration: no size, no checksum."""
    return dataset_pb2.SharedDataset(
        name=str(record.name),
        owner=partner_name(record.owner),
        identifier_types=record.identifier_types,
        segment_columns=record.segment_columns,
        create_time=timestamp(record.create_time),
    )


def overlap_question(
    parent: CollaborationName, message: overlap_report_pb2.OverlapReport
) -> OverlapQuestion:
    """The question of a CreateOverlapReport request."""
    return OverlapQuestion(
        base=DatasetName.parse(message.base_dataset, field="overlap_report.base_dataset"),
        others=tuple(
            DatasetName.parse(o, field="overlap_report.other_datasets")
            for o in message.other_datasets
        ),
        segment_column=message.segment_column or None,
    )


def _count(count: ReleasedCount) -> overlap_report_pb2.ReleasedCount:
    if count.value is None:
        return overlap_report_pb2.ReleasedCount(
            suppression_reason=overlap_report_pb2.SUPPRESSION_REASON_SUPPRESSED
        )
    message = overlap_report_pb2.ReleasedCount(value=count.value, noise_scale=count.noise_scale)
    if count.interval is not None:
        message.interval_low, message.interval_high = count.interval
    return message


def overlap_report(
    report: OverlapReport, deleted_inputs: Sequence[DatasetName] = ()
) -> overlap_report_pb2.OverlapReport:
    """The API form of a released report, naming the inputs deleted since."""
    q = report.question
    return overlap_report_pb2.OverlapReport(
        name=str(report.name),
        base_dataset=str(q.base),
        other_datasets=[str(o) for o in q.others],
        segment_column=q.segment_column or "",
        creator=report.creator,
        create_time=timestamp(report.create_time),
        minimum_threshold=report.minimum_threshold,
        dataset_sizes=[
            overlap_report_pb2.DatasetSize(dataset=str(s.dataset), row_count=_count(s.row_count))
            for s in report.dataset_sizes
        ],
        membership_cells=[
            overlap_report_pb2.MembershipCell(
                segment=c.segment or "",
                matched_datasets=[str(m) for m in c.matched],
                base_row_count=_count(c.base_row_count),
            )
            for c in report.membership_cells
        ],
        pairwise_overlaps=[
            overlap_report_pb2.PairwiseOverlap(
                dataset=str(p.dataset),
                matched_dataset=str(p.matched_dataset),
                matched_row_count=_count(p.matched_row_count),
                match_rate=p.match_rate,
                match_rate_capped=p.match_rate_capped,
            )
            for p in report.pairwise_overlaps
        ],
        released_count=report.released_count,
        suppressed_count=report.suppressed_count,
        deleted_inputs=[str(d) for d in deleted_inputs],
        withheld_segments=report.withheld_segments,
        noise=overlap_report_pb2.ReportNoise(
            mechanism=report.noise.mechanism,
            epsilon=report.noise.epsilon,
            sensitivity=report.noise.sensitivity,
            scale=report.noise.scale,
        )
        if report.noise
        else None,
    )


def privacy_budget(
    collaboration: CollaborationName,
    budget: PrivacyBudget,
    policy: PrivacyPolicy,
    member: MemberBudget | None = None,
) -> report_service_pb2.PrivacyBudget:
    """The API form of a collaboration's privacy budget, with the caller's part of it."""
    mine = (
        {
            "member": member.member,
            "member_share_epsilon": member.share,
            "member_spent_epsilon": member.spent,
            "member_remaining_epsilon": member.remaining,
        }
        if member
        else {}
    )
    return report_service_pb2.PrivacyBudget(
        **mine,  # type: ignore[arg-type]
        name=f"{collaboration}/privacyBudget",
        noise=policy.noise,
        total_epsilon=budget.total,
        spent_epsilon=budget.spent,
        remaining_epsilon=budget.remaining,
        epsilon_per_report=policy.epsilon_per_report,
        released_reports=budget.reports,
    )


def report_estimate(estimate: Estimate) -> report_service_pb2.ReportEstimate:
    """The API form of a dry run's answer."""
    return report_service_pb2.ReportEstimate(
        reused=estimate.reused,
        noise=estimate.noise,
        epsilon_cost=estimate.epsilon_cost,
        noise_scale=estimate.noise_scale,
        interval_half_width=estimate.interval_half_width,
        member_remaining_epsilon=estimate.member_remaining_epsilon,
        allowed=estimate.allowed,
        refusal_reason=estimate.refusal_reason,
    )


def audit_filter(request: audit_service_pb2.ListAuditEventsRequest) -> AuditFilter:
    """The filter of a ListAuditEvents request."""
    return AuditFilter(
        start_time=_time(request, "start_time"),
        end_time=_time(request, "end_time"),
        method=_filter_text(request.method, "method"),
        caller=_filter_text(request.caller, "caller"),
        start_index=_not_negative(request.start_index, "start_index"),
        end_index=_not_negative(request.end_index, "end_index") or None,
    )


MAX_FILTER_CHARS = 200


def _time(
    request: audit_service_pb2.ListAuditEventsRequest, field: Literal["start_time", "end_time"]
) -> datetime | None:
    if not request.HasField(field):
        return None
    try:
        return getattr(request, field).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    except (ValueError, OverflowError):
        raise InvalidArgumentError(
            "INVALID_TIMESTAMP",
            f"`{field}` is not a valid time: use years 1 to 9999 and nanos below 1e9.",
            field=field,
        ) from None


def _filter_text(value: str, field: str) -> str | None:
    if len(value) > MAX_FILTER_CHARS:
        raise InvalidArgumentError(
            "FILTER_TOO_LONG",
            f"`{field}` is {len(value)} characters long; a filter has at most {MAX_FILTER_CHARS}.",
            field=field,
        )
    return value or None


def _not_negative(value: int, field: str) -> int:
    if value < 0:
        raise InvalidArgumentError(
            "NEGATIVE_VALUE", f"`{field}` must not be negative, got {value}.", field=field
        )
    return value


def audit_event(index: int, entry: bytes, log: str) -> audit_event_pb2.AuditEvent:
    """The API form of a query log event, from its canonical bytes.

    Bytes that no longer parse (a tampered store) are served as they are, without the
    fields read from them, so that the auditor's verification names the event.
    """
    try:
        event = AuditEvent.from_entry(entry)
    except (ValueError, KeyError, TypeError):
        return audit_event_pb2.AuditEvent(
            name=f"collaborations/{log}/auditEvents/{index}",
            index=index,
            entry=entry,
            leaf_hash=merkle.leaf_hash(entry),
        )
    summary = struct_pb2.Struct()
    summary.update(event.request_summary)
    outcome = event.outcome
    return audit_event_pb2.AuditEvent(
        name=f"collaborations/{log}/auditEvents/{index}",
        index=index,
        event_time=timestamp(event.event_time),
        caller=event.caller,
        caller_roles=event.caller_roles,
        method=event.method,
        resources=event.resources,
        request_summary=summary,
        outcome=audit_event_pb2.AuditOutcome(
            status_code=outcome.status_code,
            reason=outcome.reason,
            message=outcome.message,
            released_count=outcome.released_count,
            suppressed_count=outcome.suppressed_count,
            epsilon_spent=outcome.epsilon_spent,
        ),
        entry=entry,
        leaf_hash=merkle.leaf_hash(entry),
    )


def server_limits(config: ServerConfig) -> server_info_service_pb2.ServerLimits:
    """The limits of a server's configuration, as GetServerInfo tells them."""
    idle, longest = duration_pb2.Duration(), duration_pb2.Duration()
    idle.FromTimedelta(timedelta(seconds=config.upload_idle_timeout_seconds))
    longest.FromTimedelta(timedelta(seconds=config.max_upload_seconds))
    return server_info_service_pb2.ServerLimits(
        max_message_bytes=config.max_upload_message_bytes,
        upload_idle_timeout=idle,
        max_upload_duration=longest,
        min_upload_bytes_per_second=config.min_upload_bytes_per_second,
        max_calls=config.max_workers,
        max_calls_per_partner=config.max_calls_per_partner,
        max_uploads_per_partner=config.max_uploads_per_partner,
    )
