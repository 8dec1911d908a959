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
    CleanRoomError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from cleanroom.matching.engine import DatasetTable, Matcher
from cleanroom.matching.question import MAX_OTHER_DATASETS, OverlapQuestion
from cleanroom.names import CollaborationName, DatasetName, OverlapReportName, partner_name
from cleanroom.privacy.budget import MICRO, PrivacyBudget, to_micro
from cleanroom.privacy.noise import calibrate, interval_half_width, sensitivity
from cleanroom.privacy.release import ReportIdentity, release
from cleanroom.privacy.report import OverlapReport
from cleanroom.storage.catalog import Catalog, DatasetRecord, ReleaseCharge, budget_exhausted
from cleanroom.storage.dataset_files import DatasetFiles
from cleanroom.usecases.access import AccessPolicy, Caller
from cleanroom.usecases.masking import matching_status

READERS = (Role.ANALYST, Role.ADMIN)


@dataclass(frozen=True)
class Estimate:
    """A dry run's answer: what a report would cost and how accurate it would be."""

    reused: bool
    noise: bool
    epsilon_cost: float
    noise_scale: float
    member_remaining_epsilon: float
    allowed: bool
    refusal_reason: str

    @property
    def interval_half_width(self) -> int:
        """Half the width of one measured count's 95% interval (0 when exact)."""
        return interval_half_width(self.noise_scale) if self.noise_scale else 0


@dataclass(frozen=True)
class MemberBudget:
    """One member brand's part of the collaboration's epsilon."""

    member: str
    share: float
    spent: float
    remaining: float


@dataclass(frozen=True)
class _Asked:
    """A question that passed the checks before matching."""

    collaboration: Collaboration
    creator: str
    records: dict[DatasetName, DatasetRecord]
    fingerprint: str
    stored: OverlapReport | None
    charge: ReleaseCharge


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
        asked = self._ask(caller, parent, question)
        if asked.stored is not None:
            return Release(asked.stored, reused=True, epsilon_spent=0.0)
        self._check_daily_limit(asked.collaboration, asked.creator)
        refusal = self._refusal(asked)
        if refusal is not None:
            raise refusal
        tables = {name: self._table(name, record) for name, record in asked.records.items()}
        identity = ReportIdentity(
            name=OverlapReportName(parent.collaboration, f"r-{secrets.token_hex(8)}"),
            creator=asked.creator,
            create_time=datetime.now(UTC),
            fingerprint=asked.fingerprint,
            inputs=tuple((name, record.create_time) for name, record in asked.records.items()),
        )
        types = {name: record.identifier_types for name, record in asked.records.items()}
        policy = asked.collaboration.policy
        report = release(self.matcher.overlap(question, tables), policy, identity, types)
        self.catalog.add_report(report, asked.charge)
        return Release(report, reused=False, epsilon_spent=asked.charge.spend_micro / MICRO)

    def estimate(
        self, caller: Caller, parent: CollaborationName, question: OverlapQuestion
    ) -> Estimate:
        """What `create` would cost and how accurate it would be, without computing it.

        Every check `create` makes before matching runs here too, so a question that
        would be refused for its shape or its inputs is refused the same way.
        """
        asked = self._ask(caller, parent, question)
        policy = asked.collaboration.policy
        member = self._member_budget(asked.collaboration, asked.creator)
        scale = 0.0
        if policy.noise:
            types = {name: record.identifier_types for name, record in asked.records.items()}
            scale = calibrate(sensitivity(question, types), policy.epsilon_per_report).scale
        if asked.stored is not None:
            return Estimate(True, policy.noise, 0.0, scale, member.remaining, True, "")
        refusal: CleanRoomError | None
        try:
            self._check_daily_limit(asked.collaboration, asked.creator)
            refusal = self._refusal(asked)
        except ResourceExhaustedError as limited:
            refusal = limited
        return Estimate(
            reused=False,
            noise=policy.noise,
            epsilon_cost=asked.charge.spend_micro / MICRO,
            noise_scale=scale,
            member_remaining_epsilon=member.remaining,
            allowed=refusal is None,
            refusal_reason=refusal.reason if refusal else "",
        )

    def _ask(self, caller: Caller, parent: CollaborationName, question: OverlapQuestion) -> _Asked:
        """The checks of a question that come before any matching, and what it would charge."""
        collaboration = self.access.require(
            caller, parent, [Role.ANALYST], "create overlap reports"
        )
        _check_shape(parent, question)
        base = self.catalog.dataset(question.base)
        self.access.require_owner(
            caller, collaboration, question.base, base.owner if base else None
        )
        partner = caller.known_partner()
        records = {question.base: base, **{o: self.catalog.dataset(o) for o in question.others}}
        checked = _check_inputs(collaboration, question, records, partner.id)
        _check_key_check_values(collaboration, checked)
        policy = collaboration.policy
        if not policy.noise:
            _check_exact_shape(question, checked, partner.id)
        creator = partner_name(partner.id)
        fingerprint = _fingerprint(question, checked, policy)
        stored = self.catalog.report_for(parent.collaboration, creator, fingerprint)
        total = to_micro(policy.epsilon_budget)
        charge = ReleaseCharge(
            spend_micro=to_micro(policy.epsilon_per_report) if policy.noise else 0,
            total_micro=total,
            member_share_micro=to_micro(collaboration.epsilon_share(partner.id)),
            exact_versions=()
            if policy.noise
            else tuple(
                (name.dataset, record.checksum)
                for name, record in checked.items()
                if record.owner != partner.id
            ),
            per_member=policy.exact_releases_per_dataset_version,
            per_collaboration=policy.exact_releases_per_dataset_version_in_collaboration,
        )
        return _Asked(collaboration, creator, checked, fingerprint, stored, charge)

    def _refusal(self, asked: _Asked) -> CleanRoomError | None:
        """Why the inputs' masking, the budget or the quotas refuse a new report, if they do."""
        collaboration = asked.collaboration
        unmatchable = not_matchable(collaboration, asked.records)
        if unmatchable is not None:
            return unmatchable
        member = self._member_budget(collaboration, asked.creator)
        if not member.allows(asked.charge.spend_micro):
            return budget_exhausted(collaboration.id, member, asked.charge.spend_micro)
        return self.catalog.exact_quota_left(collaboration.id, asked.creator, asked.charge)

    def _member_budget(self, collaboration: Collaboration, creator: str) -> PrivacyBudget:
        policy = collaboration.policy
        partner_id = creator.removeprefix("partners/")
        return self.catalog.member_budget(
            collaboration.id,
            creator,
            to_micro(policy.epsilon_budget),
            to_micro(collaboration.epsilon_share(partner_id)),
        )

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
    ) -> tuple[PrivacyBudget, PrivacyPolicy, MemberBudget | None]:
        """The collaboration's privacy budget and policy, and an analyst caller's own part."""
        collaboration = self.access.require(
            caller, parent, [Role.ANALYST, Role.AUDITOR, Role.ADMIN], "read the privacy budget"
        )
        policy = collaboration.policy
        total = self.catalog.budget(parent.collaboration, to_micro(policy.epsilon_budget))
        partner = caller.known_partner()
        if Role.ANALYST not in collaboration.roles_of(partner):
            return total, policy, None  # auditors and operators spend nothing
        creator = partner_name(partner.id)
        share = collaboration.epsilon_share(partner.id)
        member = self._member_budget(collaboration, creator)
        return total, policy, MemberBudget(creator, share, member.spent, member.remaining)

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
    caller_id: str,
) -> dict[DatasetName, DatasetRecord]:
    """The inputs' records, checked.

    Refusals about other brands' datasets read the same whether the dataset is missing
    or too small, and carry no figure of it.
    """
    checked = {}
    minimum = collaboration.policy.minimum_dataset_size
    for name, record in records.items():
        if record is None or record.owner != caller_id:
            if record is None or record.row_count < minimum:
                raise _unavailable(name, minimum)
        elif record.row_count < minimum:
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


def _check_exact_shape(
    question: OverlapQuestion, records: Mapping[DatasetName, DatasetRecord], caller_id: str
) -> None:
    """Without noise, the other datasets are other brands'.

    Two datasets of the analyst's own in one report (the base and another, each crafted
    at will) could be differenced figure by figure, and no suppression pattern can stop
    that without noise.
    """
    for other in question.others:
        if records[other].owner == caller_id:
            raise FailedPreconditionError(
                "EXACT_REPORT_SHAPE",
                f"{other} is your own dataset: without noise, a report compares your base"
                " dataset with other brands' datasets only. Ask with other brands' datasets,"
                " or ask the operator to turn on noise for this collaboration.",
                dataset=str(other),
            )


def _unavailable(name: DatasetName, minimum: int) -> FailedPreconditionError:
    """The one refusal for another brand's dataset that cannot be used.

    Whether it is missing, deleted or too small is not told (SPEC section 5).
    """
    return FailedPreconditionError(
        "DATASET_UNAVAILABLE",
        f"{name} cannot be used in a report: it does not exist, was deleted, or has fewer"
        f" than the {minimum} rows a report needs. List the collaboration's datasets and"
        " check the name.",
        dataset=str(name),
        minimum_dataset_size=minimum,
    )


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


def not_matchable(
    collaboration: Collaboration, records: Mapping[DatasetName, DatasetRecord]
) -> FailedPreconditionError | None:
    """The refusal of inputs that cannot be matched yet (SPEC section 8), if any.

    It depends on the inputs' masking only, which the hops' brands see anyway: never on
    their rows.
    """
    waiting = {name: matching_status(r, collaboration) for name, r in sorted(records.items())}
    waiting = {name: status for name, status in waiting.items() if not status.matchable}
    if not waiting:
        return None
    pending = sorted({p for status in waiting.values() for p in status.pending})
    stranded = sorted(str(n) for n, s in waiting.items() if s.stranded)
    mode = collaboration.matching
    mismatched = sorted(str(n) for n, s in waiting.items() if s.made_for is not mode)
    parts = []
    if pending and len(stranded) + len(mismatched) < len(waiting):
        parts.append(
            f"they wait for the masking hops of {', '.join(map(repr, pending))}, which each"
            " of those brands takes with `cleanroom-partner blind work`; ask again when they have"
        )
    if stranded:
        parts.append(
            f"{', '.join(stranded)} carry the mask of a brand that is no longer an uploader,"
            " so they can never be matched: their owners must upload them again"
        )
    if mismatched:
        parts.append(
            f"{', '.join(mismatched)} were uploaded for another matching mode than the"
            f" collaboration's ({collaboration.matching.value.replace('_', '-')}): their owners"
            " must upload them again"
        )
    if not parts:
        parts.append("their last masking step has not been applied yet; ask again later")
    names = ", ".join(str(n) for n in waiting)
    # One key per dataset: metadata values are short (MAX_VALUE_CHARS).
    named = {f"dataset_{i}": str(n) for i, n in enumerate(waiting, start=1)}
    return FailedPreconditionError(
        "DATASET_NOT_MATCHABLE",
        f"{names} cannot be matched yet: {'; '.join(parts)}.",
        **named,
        pending_maskers=",".join(f"partners/{p}" for p in pending),
    )


def _missing(name: str) -> NotFoundError:
    return NotFoundError(
        "DATASET_NOT_FOUND",
        f"{name} does not exist (or was deleted). List the collaboration's datasets and"
        " check the name.",
        dataset=name,
    )
