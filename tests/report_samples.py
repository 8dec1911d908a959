"""Overlap reports as the server releases them, built by hand for tests of their views.

Figures are chosen so that every kind of cell shows: released, below the threshold and
withheld as a complement; segment labels in Thai and Vietnamese.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from cleanroom.v1 import overlap_report_pb2 as pb

PARENT = "collaborations/spring-launch"
BELOW = pb.SUPPRESSION_REASON_BELOW_THRESHOLD
COMPLEMENTARY = pb.SUPPRESSION_REASON_COMPLEMENTARY


def dataset(dataset_id: str) -> str:
    return f"{PARENT}/datasets/{dataset_id}"


def count(value: int | None, reason: int = BELOW) -> pb.ReleasedCount:
    if value is None:
        return pb.ReleasedCount(suppression_reason=reason)
    return pb.ReleasedCount(value=value)


def sample_report(
    *,
    others: Sequence[str] = ("brightmart-loyalty-members", "corvid-app-users"),
    segments: Sequence[str] = ("ลูกค้าทอง", "Khách hàng bạc"),
    noise: bool = True,
) -> pb.OverlapReport:
    """A 3-way report of acme-crm, split by a tier segment, with two withheld cells."""
    base = dataset("acme-crm")
    names = [dataset(o) for o in others]
    report = pb.OverlapReport(
        name=f"{PARENT}/overlapReports/r-3f9a2c",
        base_dataset=base,
        other_datasets=names,
        segment_column="ระดับ tier" if segments else "",
        creator="partners/acme",
        minimum_threshold=50,
        deleted_inputs=[names[-1]],
    )
    report.create_time.FromDatetime(datetime(2026, 11, 30, 9, 15, tzinfo=UTC))
    cells = 0
    for s_index, segment in enumerate(segments or [""]):
        for mask in range(2 ** len(names)):
            matched = [o for i, o in enumerate(names) if mask >> i & 1]
            value: int | None = 4_000 + 1_250 * mask + 333 * s_index
            reason = BELOW
            if s_index == 0 and mask == 3:
                value = None  # below the threshold
            if s_index == 1 and mask == 1:
                value, reason = None, COMPLEMENTARY
            report.membership_cells.add(
                segment=segment, matched_datasets=matched, base_row_count=count(value, reason)
            )
            cells += 1
    report.dataset_sizes.add(dataset=base, row_count=count(29_871))
    for i, name in enumerate(names):
        report.dataset_sizes.add(dataset=name, row_count=count(18_000 + 1_111 * i))
    everyone = [base, *names]
    for x in everyone:
        for y in everyone:
            if x == y:
                continue
            withheld = (x, y) in ((names[0], names[-1]), (names[-1], names[0]))
            report.pairwise_overlaps.add(
                dataset=x,
                matched_dataset=y,
                matched_row_count=count(None, COMPLEMENTARY) if withheld else count(6_420),
                **({} if withheld else {"match_rate": 0.2}),
            )
    if noise:
        report.noise.CopyFrom(
            pb.ReportNoise(mechanism="discrete_laplace", epsilon=1.0, sensitivity=2, scale=2.0)
        )
    report.released_count = cells + len(everyone) + len(everyone) * (len(everyone) - 1) - 4
    report.suppressed_count = 4
    return report


OWNERS = {
    dataset("acme-crm"): "partners/acme",
    dataset("brightmart-loyalty-members"): "partners/brightmart",
}
EXACT_SIZES = {dataset("acme-crm"): 29_866}
