"""The catalog of committed datasets and released reports, in the embedded database."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from cleanroom.errors import AlreadyExistsError, ResourceExhaustedError
from cleanroom.names import DatasetName, OverlapReportName
from cleanroom.privacy.budget import MICRO, PrivacyBudget
from cleanroom.privacy.report import OverlapReport
from cleanroom.storage.database import Database


@dataclass(frozen=True)
class IdentifierStats:
    """How many rows of a dataset carry a digest of one type, and how many repeats went."""

    identifier_type: str
    present_count: int
    duplicate_count: int


@dataclass(frozen=True)
class ReleaseCharge:
    """What storing one report charges: epsilon (collaboration and member) and quotas.

    Attributes:
        spend_micro: The epsilon the report spends, in millionths.
        total_micro: The collaboration's budget.
        member_share_micro: The creator's share of it.
        exact_versions: Without noise, the (dataset id, checksum) of each other brand's
            dataset version the report covers.
        per_member: How many exact reports one creator may have over a version.
        per_collaboration: How many all creators may have together (0: no limit).
    """

    spend_micro: int
    total_micro: int
    member_share_micro: int
    exact_versions: tuple[tuple[str, str], ...] = ()
    per_member: int = 1
    per_collaboration: int = 0


@dataclass(frozen=True)
class DatasetRecord:
    """A committed dataset as the catalog knows it."""

    name: DatasetName
    owner: str
    identifier_types: tuple[str, ...]
    segment_columns: tuple[str, ...]
    row_count: int
    checksum: str
    key_check_value: str
    identifier_stats: tuple[IdentifierStats, ...]
    file_name: str
    create_time: datetime


class Catalog:
    """Datasets and reports, each change in one transaction."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def add_dataset(self, record: DatasetRecord) -> None:
        """Makes a committed dataset visible.

        Raises:
            AlreadyExistsError: A dataset of that name was committed first.
        """
        with self.database.transaction() as db:
            if db.execute(
                "SELECT 1 FROM datasets WHERE collaboration = ? AND dataset = ?",
                (record.name.collaboration, record.name.dataset),
            ).fetchone():
                raise AlreadyExistsError(
                    "DATASET_EXISTS",
                    f"{record.name} exists already. Choose another dataset id, or delete it first.",
                    dataset=str(record.name),
                )
            db.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.name.collaboration,
                    record.name.dataset,
                    record.owner,
                    json.dumps(record.identifier_types),
                    json.dumps(record.segment_columns),
                    record.row_count,
                    record.checksum,
                    record.key_check_value,
                    json.dumps([list(vars(s).values()) for s in record.identifier_stats]),
                    record.file_name,
                    record.create_time.isoformat(),
                ),
            )

    def dataset(self, name: DatasetName) -> DatasetRecord | None:
        """The dataset of that name, if it exists."""
        with self.database.reading() as db:
            row = db.execute(
                "SELECT * FROM datasets WHERE collaboration = ? AND dataset = ?",
                (name.collaboration, name.dataset),
            ).fetchone()
        return _dataset(row) if row else None

    def datasets(
        self, collaboration: str, *, owner: str | None, after: str, limit: int
    ) -> list[DatasetRecord]:
        """Datasets of a collaboration (of one owner, if given) with ids after `after`."""
        query = "SELECT * FROM datasets WHERE collaboration = ? AND dataset > ?"
        args: list[object] = [collaboration, after]
        if owner is not None:
            query += " AND owner = ?"
            args.append(owner)
        with self.database.reading() as db:
            rows = db.execute(query + " ORDER BY dataset LIMIT ?", [*args, limit]).fetchall()
        return [_dataset(row) for row in rows]

    def remove_dataset(self, name: DatasetName) -> None:
        """Removes a dataset's catalog row."""
        with self.database.transaction() as db:
            db.execute(
                "DELETE FROM datasets WHERE collaboration = ? AND dataset = ?",
                (name.collaboration, name.dataset),
            )

    def dataset_file_names(self) -> set[str]:
        """The file names of every committed dataset."""
        with self.database.reading() as db:
            return {row[0] for row in db.execute("SELECT file_name FROM datasets")}

    def add_report(self, report: OverlapReport, charge: ReleaseCharge) -> None:
        """Stores a released report, spends its epsilon and counts its exact releases.

        All in one transaction.

        Raises:
            ResourceExhaustedError: PRIVACY_BUDGET_EXHAUSTED, the spend does not fit the
                collaboration's budget or the creator's share; EXACT_RELEASE_QUOTA_USED,
                a dataset version has had its exact reports.
        """
        collaboration = report.name.collaboration
        with self.database.transaction() as db:
            budget = _budget(db, collaboration, charge.total_micro)
            member = _member_budget(
                db, collaboration, report.creator, charge.member_share_micro, budget
            )
            if not budget.allows(charge.spend_micro) or not member.allows(charge.spend_micro):
                raise budget_exhausted(collaboration, member, charge.spend_micro)
            _check_quotas(db, collaboration, report.creator, charge)
            db.execute(
                "INSERT INTO overlap_reports"
                " (collaboration, report, creator, create_time, body, fingerprint)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    collaboration,
                    report.name.overlap_report,
                    report.creator,
                    report.create_time.isoformat(),
                    report.to_json(),
                    report.fingerprint,
                ),
            )
            db.execute(
                "INSERT INTO privacy_budgets VALUES (?, ?, 1) ON CONFLICT (collaboration)"
                " DO UPDATE SET spent_micro = spent_micro + ?, reports = reports + 1",
                (collaboration, charge.spend_micro, charge.spend_micro),
            )
            db.execute(
                "INSERT INTO member_budgets VALUES (?, ?, ?) ON CONFLICT (collaboration, member)"
                " DO UPDATE SET spent_micro = spent_micro + ?",
                (collaboration, report.creator, charge.spend_micro, charge.spend_micro),
            )
            db.executemany(
                "INSERT INTO exact_releases VALUES (?, ?, ?, ?, ?)",
                [
                    (collaboration, dataset, checksum, report.creator, report.name.overlap_report)
                    for dataset, checksum in charge.exact_versions
                ],
            )

    def member_budget(
        self, collaboration: str, member: str, total_micro: int, share_micro: int
    ) -> PrivacyBudget:
        """What one member brand may still spend: its share, capped by the total left."""
        with self.database.reading() as db:
            budget = _budget(db, collaboration, total_micro)
            return _member_budget(db, collaboration, member, share_micro, budget)

    def exact_quota_left(
        self, collaboration: str, creator: str, charge: ReleaseCharge
    ) -> ResourceExhaustedError | None:
        """The refusal that storing a report with `charge` would meet, if any."""
        with self.database.reading() as db:
            try:
                _check_quotas(db, collaboration, creator, charge)
            except ResourceExhaustedError as refused:
                return refused
        return None

    def budget(self, collaboration: str, total_micro: int) -> PrivacyBudget:
        """The collaboration's budget: the configured total and what the ledger spent."""
        with self.database.reading() as db:
            return _budget(db, collaboration, total_micro)

    def report_for(
        self, collaboration: str, creator: str, fingerprint: str
    ) -> OverlapReport | None:
        """The report released earlier to `creator` for the same question, if any."""
        with self.database.reading() as db:
            row = db.execute(
                "SELECT body FROM overlap_reports WHERE collaboration = ? AND creator = ?"
                " AND fingerprint = ? ORDER BY sequence LIMIT 1",
                (collaboration, creator, fingerprint),
            ).fetchone()
        return OverlapReport.from_json(row[0]) if row else None

    def reports_since(self, collaboration: str, creator: str, since: datetime) -> int:
        """How many reports were released to `creator` at or after `since`."""
        with self.database.reading() as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM overlap_reports WHERE collaboration = ? AND creator = ?"
                " AND create_time >= ?",
                (collaboration, creator, since.isoformat()),
            ).fetchone()
        return int(count)

    def report(self, name: OverlapReportName) -> OverlapReport | None:
        """The released report of that name, if it exists."""
        with self.database.reading() as db:
            row = db.execute(
                "SELECT body FROM overlap_reports WHERE collaboration = ? AND report = ?",
                (name.collaboration, name.overlap_report),
            ).fetchone()
        return OverlapReport.from_json(row[0]) if row else None

    def reports(
        self, collaboration: str, *, creator: str | None, after: int, limit: int
    ) -> list[tuple[int, OverlapReport]]:
        """Reports of a collaboration (of one creator, if given), oldest first, after a position."""
        query = (
            "SELECT sequence, body FROM overlap_reports WHERE collaboration = ? AND sequence > ?"
        )
        args: list[object] = [collaboration, after]
        if creator is not None:
            query += " AND creator = ?"
            args.append(creator)
        with self.database.reading() as db:
            rows = db.execute(query + " ORDER BY sequence LIMIT ?", [*args, limit]).fetchall()
        return [(sequence, OverlapReport.from_json(body)) for sequence, body in rows]


def _budget(db: sqlite3.Connection, collaboration: str, total_micro: int) -> PrivacyBudget:
    row = db.execute(
        "SELECT spent_micro, reports FROM privacy_budgets WHERE collaboration = ?",
        (collaboration,),
    ).fetchone()
    spent, reports = row if row else (0, 0)
    return PrivacyBudget(total_micro, int(spent), int(reports))


def _member_budget(
    db: sqlite3.Connection, collaboration: str, member: str, share_micro: int, total: PrivacyBudget
) -> PrivacyBudget:
    """A member's budget: its share, never more than it spent plus what the total has left."""
    row = db.execute(
        "SELECT spent_micro FROM member_budgets WHERE collaboration = ? AND member = ?",
        (collaboration, member),
    ).fetchone()
    spent = int(row[0]) if row else 0
    ceiling = min(max(share_micro, 1), spent + max(total.total_micro - total.spent_micro, 0))
    return PrivacyBudget(max(ceiling, 1), spent, 0)


def _check_quotas(
    db: sqlite3.Connection, collaboration: str, creator: str, charge: ReleaseCharge
) -> None:
    for dataset, checksum in charge.exact_versions:
        mine, everyone = db.execute(
            "SELECT COALESCE(SUM(creator = ?), 0), COUNT(*) FROM exact_releases"
            " WHERE collaboration = ? AND dataset = ? AND checksum = ?",
            (creator, collaboration, dataset, checksum),
        ).fetchone()
        whole = charge.per_collaboration
        if mine >= charge.per_member or (whole and everyone >= whole):
            name = f"collaborations/{collaboration}/datasets/{dataset}"
            limit = charge.per_member if mine >= charge.per_member else whole
            scope = "your brand" if mine >= charge.per_member else "this collaboration"
            raise ResourceExhaustedError(
                "EXACT_RELEASE_QUOTA_USED",
                f"{name} has had its {limit} exact report(s) for {scope} in this version."
                " Without noise, a second report over the same data could be differenced"
                " with the first; reports released before stay readable, and a new"
                " version of that dataset (a new upload by its owner) can be reported on.",
                dataset=name,
                limit=limit,
                scope="member" if mine >= charge.per_member else "collaboration",
            )


def budget_exhausted(
    collaboration: str, budget: PrivacyBudget, spend_micro: int
) -> ResourceExhaustedError:
    """The refusal of a report that would overspend, saying what is left."""
    return ResourceExhaustedError(
        "PRIVACY_BUDGET_EXHAUSTED",
        f"This report would spend epsilon {spend_micro / MICRO:g}, but your brand has"
        f" {budget.remaining:g} of its {budget.total:g} left in collaboration"
        f" {collaboration!r}. Reports"
        " released earlier stay readable, and asking one of their questions again spends"
        " nothing.",
        collaboration=f"collaborations/{collaboration}",
        epsilon_remaining=f"{budget.remaining:g}",
        epsilon_total=f"{budget.total:g}",
        epsilon_requested=f"{spend_micro / MICRO:g}",
    )


def _dataset(row: tuple[object, ...]) -> DatasetRecord:
    (collaboration, dataset, owner, types, segments, rows, checksum, kcv, stats, file_name,
     create_time) = row  # fmt: skip
    return DatasetRecord(
        name=DatasetName(str(collaboration), str(dataset)),
        owner=str(owner),
        identifier_types=tuple(json.loads(str(types))),
        segment_columns=tuple(json.loads(str(segments))),
        row_count=int(str(rows)),
        checksum=str(checksum),
        key_check_value=str(kcv),
        identifier_stats=tuple(IdentifierStats(*s) for s in json.loads(str(stats))),
        file_name=str(file_name),
        create_time=datetime.fromisoformat(str(create_time)),
    )
