"""Creating and reading overlap reports: access, the question's checks, matching, release."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from cleanroom.access import AccessPolicy, Caller
from cleanroom.catalog import Catalog, DatasetRecord
from cleanroom.config import Collaboration, Role
from cleanroom.dataset_files import DatasetFiles
from cleanroom.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from cleanroom.matching import DatasetTable, Matcher
from cleanroom.names import CollaborationName, DatasetName, OverlapReportName, partner_name
from cleanroom.overlap import MAX_OTHER_DATASETS, OverlapQuestion, OverlapReport
from cleanroom.release import release

READERS = (Role.ANALYST, Role.ADMIN)


class Reports:
    """The overlap reports of every collaboration."""

    def __init__(
        self, access: AccessPolicy, catalog: Catalog, files: DatasetFiles, matcher: Matcher
    ) -> None:
        self.access = access
        self.catalog = catalog
        self.files = files
        self.matcher = matcher

    def create(
        self, caller: Caller, parent: CollaborationName, question: OverlapQuestion
    ) -> OverlapReport:
        """Computes, releases and stores the report that answers `question`."""
        collaboration = self.access.require(
            caller, parent, [Role.ANALYST], "create overlap reports"
        )
        _check_shape(parent, question)
        base = self.catalog.dataset(question.base)
        self.access.require_owner(
            caller, collaboration, question.base, base.owner if base else None
        )
        records = {question.base: base, **{o: self.catalog.dataset(o) for o in question.others}}
        checked = _check_inputs(collaboration, question, records)
        tables = {}
        for name, record in checked.items():
            try:
                table = self.files.open(record.file_name)
            except FileNotFoundError:
                raise _missing(str(name)) from None
            tables[name] = DatasetTable(
                name, table, record.identifier_types, record.segment_columns
            )
        exact = self.matcher.overlap(question, tables)
        report = release(
            exact,
            collaboration.policy,
            name=OverlapReportName(parent.collaboration, f"r-{secrets.token_hex(8)}"),
            creator=partner_name(caller.known_partner().id),
            create_time=datetime.now(UTC),
        )
        self.catalog.add_report(report)
        return report

    def get(self, caller: Caller, name: OverlapReportName) -> OverlapReport:
        """A report released to the caller's brand (any, for administrators)."""
        collaboration = self.access.require(caller, name.parent, READERS, "read overlap reports")
        report = self.catalog.report(name)
        partner = caller.known_partner()
        if Role.ADMIN in collaboration.roles_of(partner):
            if report is None:
                raise NotFoundError(
                    "REPORT_NOT_FOUND", f"{name} does not exist.", overlap_report=str(name)
                )
            return report
        if report is None or report.creator != partner_name(partner.id):
            raise PermissionDeniedError(
                "NOT_REPORT_CREATOR",
                f"Partner {partner.id!r} may not read {name}: it does not exist or was"
                " released to another partner.",
                partner=partner.id,
                overlap_report=str(name),
            )
        return report

    def list(
        self, caller: Caller, parent: CollaborationName, *, after: int, limit: int
    ) -> list[tuple[int, OverlapReport]]:
        """Reports released to the caller's brand (all, for administrators), oldest first."""
        collaboration = self.access.require(caller, parent, READERS, "list overlap reports")
        partner = caller.known_partner()
        creator = (
            None if Role.ADMIN in collaboration.roles_of(partner) else partner_name(partner.id)
        )
        return self.catalog.reports(parent.collaboration, creator=creator, after=after, limit=limit)


def _check_shape(parent: CollaborationName, question: OverlapQuestion) -> None:
    if not 1 <= len(question.others) <= MAX_OTHER_DATASETS:
        raise InvalidArgumentError(
            "INVALID_OTHER_DATASETS",
            f"A report compares its base dataset with 1 to {MAX_OTHER_DATASETS} other"
            f" datasets; `overlap_report.other_datasets` names {len(question.others)}.",
            field="overlap_report.other_datasets",
        )
    if len(set(question.datasets)) != len(question.datasets):
        raise InvalidArgumentError(
            "DUPLICATE_DATASET",
            "A dataset is named twice among `base_dataset` and `other_datasets`.",
            field="overlap_report.other_datasets",
        )
    for name in question.datasets:
        if name.parent != parent:
            raise InvalidArgumentError(
                "DATASET_OUTSIDE_COLLABORATION",
                f"{name} is not in {parent}: a report compares datasets of one collaboration.",
                field="overlap_report.other_datasets",
                dataset=str(name),
            )


def _check_inputs(
    collaboration: Collaboration,
    question: OverlapQuestion,
    records: dict[DatasetName, DatasetRecord | None],
) -> dict[DatasetName, DatasetRecord]:
    checked = {}
    for name, record in records.items():
        if record is None:
            raise _missing(str(name))
        minimum = collaboration.policy.minimum_dataset_size
        if record.row_count < minimum:
            raise FailedPreconditionError(
                "BELOW_MINIMUM_DATASET_SIZE",
                f"{name} has {record.row_count} rows; collaboration {collaboration.id!r} reports"
                f" only on datasets of at least {minimum} rows.",
                dataset=str(name),
                row_count=record.row_count,
                minimum_dataset_size=minimum,
            )
        checked[name] = record
    base = checked[question.base]
    for other in question.others:
        if not set(base.identifier_types) & set(checked[other].identifier_types):
            raise FailedPreconditionError(
                "NO_SHARED_IDENTIFIER_TYPE",
                f"{question.base} ({', '.join(base.identifier_types)}) and {other}"
                f" ({', '.join(checked[other].identifier_types)}) share no identifier type,"
                " so no row could match.",
                base_dataset=str(question.base),
                dataset=str(other),
            )
    column = question.segment_column
    if column is not None and column not in base.segment_columns:
        raise InvalidArgumentError(
            "UNKNOWN_SEGMENT_COLUMN",
            f"{question.base} has no segment column {column!r}; it has"
            f" {', '.join(base.segment_columns) or 'none'}.",
            field="overlap_report.segment_column",
            segment_column=column,
        )
    return checked


def _missing(name: str) -> NotFoundError:
    return NotFoundError(
        "DATASET_NOT_FOUND",
        f"{name} does not exist (or was deleted). List the collaboration's datasets and"
        " check the name.",
        dataset=name,
    )
