"""Creating and reading overlap reports: access, the question's checks, matching, release."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cleanroom.config import Collaboration, PrivacyPolicy, Role
from cleanroom.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from cleanroom.matching.engine import DatasetTable, Matcher
from cleanroom.matching.question import MAX_OTHER_DATASETS, OverlapQuestion
from cleanroom.names import CollaborationName, DatasetName, OverlapReportName, partner_name
from cleanroom.paging import MAX_PAGE_SIZE
from cleanroom.privacy.budget import MICRO, PrivacyBudget, to_micro
from cleanroom.privacy.release import ReportIdentity, release
from cleanroom.privacy.report import OverlapReport
from cleanroom.storage.catalog import Catalog, DatasetRecord, budget_exhausted
from cleanroom.storage.dataset_files import DatasetFiles
from cleanroom.usecases.access import AccessPolicy, Caller

READERS = (Role.ANALYST, Role.ADMIN)


@dataclass(frozen=True)
class Release:
    """The answer to a question: the report, whether it was stored already, and the spend."""

    report: OverlapReport
    reused: bool
    epsilon_spent: float


def _fingerprint(
    question: OverlapQuestion,
    records: Mapping[DatasetName, DatasetRecord],
    policy: PrivacyPolicy,
) -> str:
    """What makes two questions the same: the datasets (as uploaded), segment and policy."""
    data = {
        "base": str(question.base),
        "others": sorted(str(o) for o in question.others),
        "segment": question.segment_column,
        "inputs": sorted(
            [str(n), r.checksum, r.create_time.isoformat()] for n, r in records.items()
        ),
        "policy": repr(policy),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


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
    ) -> Release:
        """Answers `question`: the stored report if it was asked before, else a new one."""
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
        _check_key_check_values(collaboration, checked)
        policy = collaboration.policy
        creator = partner_name(caller.known_partner().id)
        fingerprint = _fingerprint(question, checked, policy)
        stored = self.catalog.report_for(parent.collaboration, creator, fingerprint)
        if stored is not None:
            return Release(stored, reused=True, epsilon_spent=0.0)
        self._check_daily_limit(collaboration, creator)
        spend = to_micro(policy.epsilon_per_report) if policy.noise else 0
        total = to_micro(policy.epsilon_budget)
        budget = self.catalog.budget(parent.collaboration, total)
        if not budget.allows(spend):
            raise budget_exhausted(parent.collaboration, budget, spend)
        tables = {name: self._table(name, record) for name, record in checked.items()}
        if not policy.noise:
            self._check_differences(collaboration, checked, tables)
        identity = ReportIdentity(
            name=OverlapReportName(parent.collaboration, f"r-{secrets.token_hex(8)}"),
            creator=creator,
            create_time=datetime.now(UTC),
            fingerprint=fingerprint,
            inputs=tuple((name, record.create_time) for name, record in checked.items()),
        )
        types = {name: record.identifier_types for name, record in checked.items()}
        report = release(self.matcher.overlap(question, tables), policy, identity, types)
        self.catalog.add_report(report, spend_micro=spend, total_micro=total)
        return Release(report, reused=False, epsilon_spent=spend / MICRO)

    def deleted_inputs(self, report: OverlapReport) -> list[DatasetName]:
        """The report's input datasets deleted (or replaced) since it was released."""
        deleted = []
        for name, created in report.inputs:
            record = self.catalog.dataset(name)
            if record is None or record.create_time != created:
                deleted.append(name)
        return deleted

    def budget(
        self, caller: Caller, parent: CollaborationName
    ) -> tuple[PrivacyBudget, PrivacyPolicy]:
        """The collaboration's privacy budget and policy, for its members."""
        collaboration = self.access.require(
            caller, parent, [Role.ANALYST, Role.AUDITOR, Role.ADMIN], "read the privacy budget"
        )
        policy = collaboration.policy
        return self.catalog.budget(parent.collaboration, to_micro(policy.epsilon_budget)), policy

    def _table(self, name: DatasetName, record: DatasetRecord) -> DatasetTable:
        try:
            table = self.files.open(record.file_name)
        except FileNotFoundError:
            raise _missing(str(name)) from None
        return DatasetTable(
            name, table, record.identifier_types, record.segment_columns, record.file_name
        )

    def _check_daily_limit(self, collaboration: Collaboration, creator: str) -> None:
        limit = collaboration.policy.max_reports_per_partner_per_day
        if not limit:
            return
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if self.catalog.reports_since(collaboration.id, creator, today) >= limit:
            raise ResourceExhaustedError(
                "DAILY_REPORT_LIMIT",
                f"{creator} has had its {limit} reports of today (UTC) in collaboration"
                f" {collaboration.id!r}. Ask again tomorrow; reports released earlier stay"
                " readable.",
                partner=creator,
                limit=limit,
            )

    def _check_differences(
        self,
        collaboration: Collaboration,
        records: Mapping[DatasetName, DatasetRecord],
        tables: Mapping[DatasetName, DatasetTable],
    ) -> None:
        """Refuses inputs within k rows of another dataset of the same owner.

        Without noise, two reports over datasets that differ by one person tell whether
        that person is in the other datasets: a differencing attack.
        """
        k = collaboration.policy.minimum_threshold
        for name, record in records.items():
            siblings = self.catalog.datasets(
                collaboration.id, owner=record.owner, after="", limit=MAX_PAGE_SIZE
            )
            for sibling in siblings:
                if sibling.name == name or not set(sibling.identifier_types) & set(
                    record.identifier_types
                ):
                    continue
                other = tables.get(sibling.name) or self._table(sibling.name, sibling)
                mine = tables[name]
                difference = int((~self.matcher.matches(mine, other)).sum()) + int(
                    (~self.matcher.matches(other, mine)).sum()
                )
                if difference < k:
                    raise FailedPreconditionError(
                        "DATASET_TOO_SIMILAR",
                        f"{name} differs from another dataset of its owner by fewer than"
                        f" {k} rows. Without noise, reports over near-duplicate datasets"
                        " would reveal single people, so it cannot be used in a report.",
                        dataset=str(name),
                        minimum_threshold=k,
                    )

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


def _check_key_check_values(
    collaboration: Collaboration, records: Mapping[DatasetName, DatasetRecord]
) -> None:
    """Refuses datasets digested with different secrets, before any epsilon is spent.

    After the collaboration secret is rotated, datasets of the old and the new secret
    share no digest: a report over both would spend budget to show about 0% overlap.
    """
    accepted = collaboration.accepted_key_check_values
    kcvs = {record.key_check_value for record in records.values()}
    retired = sorted(kcvs - set(accepted))
    if len(kcvs) == 1 and not retired:
        return
    by_kcv = ", ".join(
        f"{name} ({record.key_check_value})" for name, record in sorted(records.items(), key=str)
    )
    problem = (
        f"was made with a secret that collaboration {collaboration.id!r} no longer accepts"
        f" ({', '.join(retired)}; it accepts {', '.join(accepted)})"
        if retired
        else "mixes datasets digested with different collaboration secrets"
    )
    raise FailedPreconditionError(
        "KEY_CHECK_MISMATCH",
        f"The report {problem}: {by_kcv}. Digests of different secrets never match; upload"
        " every dataset again with the current secret, then ask again.",
        key_check_values=",".join(sorted(kcvs)),
        accepted_key_check_values=",".join(accepted),
        datasets=",".join(sorted(str(name) for name in records)),
    )


def _missing(name: str) -> NotFoundError:
    return NotFoundError(
        "DATASET_NOT_FOUND",
        f"{name} does not exist (or was deleted). List the collaboration's datasets and"
        " check the name.",
        dataset=name,
    )
