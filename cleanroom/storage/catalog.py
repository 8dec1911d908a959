"""The catalog of committed datasets and released reports, in the embedded database."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

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
class MaskingState:
    """How far a double-blind dataset is masked, and how its stored file is blinded.

    Attributes:
        mask_set: The brands whose scalars the stored elements carry, the owner first.
        sorted: Whether the file is the sorted layout of the elements as they are
            (`factor` is then None); else it holds rows in no meaningful order.
        factor: The server's blinding `f` of the stored elements (None: none).
        prepared_for: The brand whose hop the stored form was blinded for (its first
            attempt sends it as it is), if any.
        served: Whether that form was sent already: it is sent once at most.
        change_time: When the dataset was uploaded or last masked.
    """

    mask_set: tuple[str, ...]
    sorted: bool
    factor: bytes | None = None
    prepared_for: str | None = None
    served: bool = False
    change_time: datetime | None = None


@dataclass(frozen=True)
class MaskingAttempt:
    """The newest attempt at one masking hop, recorded before its first row is sent.

    Attributes:
        partner: The brand taking the hop.
        attempt_id: 32 lowercase hex characters.
        blinding: The scalar `r` that the rows sent carry on top of the stored masks.
        tag_key: The AES key of the rows' tags.
        file_name: The stored file the rows were blinded from: once it changes (another
            brand's hop was applied), the attempt can no longer be completed.
        start_time: When the attempt started.
    """

    partner: str
    attempt_id: str
    blinding: bytes
    tag_key: bytes
    file_name: str
    start_time: datetime


@dataclass(frozen=True)
class DatasetRecord:
    """A committed dataset as the catalog knows it (`masking` only in double-blind mode)."""

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
    masking: MaskingState | None = None


# One query text, of constants only.
_DATASET_COLUMNS = (
    "d.collaboration, d.dataset, d.owner, d.identifier_types, d.segment_columns, d.row_count,"
    " d.checksum, d.key_check_value, d.identifier_stats, d.file_name, d.create_time,"
    " m.mask_set, m.sorted, m.factor, m.prepared_for, m.served, m.change_time"
)
_DATASETS = (
    f"SELECT {_DATASET_COLUMNS} FROM datasets d LEFT JOIN dataset_masking m"  # noqa: S608 - constants
    " ON m.collaboration = d.collaboration AND m.dataset = d.dataset"
)


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
            if record.masking is not None:
                _write_masking(db, record.name, record.masking)

    def dataset(self, name: DatasetName) -> DatasetRecord | None:
        """The dataset of that name, if it exists."""
        with self.database.reading() as db:
            row = db.execute(
                f"{_DATASETS} WHERE d.collaboration = ? AND d.dataset = ?",
                (name.collaboration, name.dataset),
            ).fetchone()
        return _dataset(row) if row else None

    def datasets(
        self, collaboration: str, *, owner: str | None, after: str, limit: int
    ) -> list[DatasetRecord]:
        """Datasets of a collaboration (of one owner, if given) with ids after `after`."""
        query = f"{_DATASETS} WHERE d.collaboration = ? AND d.dataset > ?"
        args: list[object] = [collaboration, after]
        if owner is not None:
            query += " AND d.owner = ?"
            args.append(owner)
        with self.database.reading() as db:
            rows = db.execute(query + " ORDER BY d.dataset LIMIT ?", [*args, limit]).fetchall()
        return [_dataset(row) for row in rows]

    def remove_dataset(self, name: DatasetName) -> None:
        """Removes a dataset's catalog row."""
        with self.database.transaction() as db:
            db.execute(
                "DELETE FROM datasets WHERE collaboration = ? AND dataset = ?",
                (name.collaboration, name.dataset),
            )

    def start_attempt(self, name: DatasetName, attempt: MaskingAttempt, *, serves: bool) -> bool:
        """Records a hop's new attempt, which supersedes any earlier one of that hop.

        `serves`: the attempt sends the stored form as it is, which is then served: it
        can be so once only. Returns False, recording nothing, if the dataset's file is no
        longer the one the attempt blinded (a hop was applied meanwhile), the dataset is
        gone, or (with `serves`) another attempt served the stored form first.
        """
        with self.database.transaction() as db:
            row = db.execute(
                "SELECT d.file_name, m.served FROM datasets d JOIN dataset_masking m"
                " ON m.collaboration = d.collaboration AND m.dataset = d.dataset"
                " WHERE d.collaboration = ? AND d.dataset = ?",
                (name.collaboration, name.dataset),
            ).fetchone()
            if row is None or row[0] != attempt.file_name or (serves and row[1]):
                return False
            db.execute(
                "INSERT OR REPLACE INTO masking_attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name.collaboration,
                    name.dataset,
                    attempt.partner,
                    attempt.attempt_id,
                    attempt.blinding,
                    attempt.tag_key,
                    attempt.file_name,
                    attempt.start_time.isoformat(),
                ),
            )
            if serves:
                db.execute(
                    "UPDATE dataset_masking SET served = 1 WHERE collaboration = ? AND dataset = ?",
                    (name.collaboration, name.dataset),
                )
        return True

    def attempt(self, name: DatasetName, partner: str) -> MaskingAttempt | None:
        """The newest attempt at the hop of `partner` over a dataset, if any."""
        with self.database.reading() as db:
            row = db.execute(
                "SELECT partner, attempt, blinding, tag_key, file_name, start_time"
                " FROM masking_attempts WHERE collaboration = ? AND dataset = ? AND partner = ?",
                (name.collaboration, name.dataset, partner),
            ).fetchone()
        if row is None:
            return None
        partner, attempt_id, blinding, tag_key, file_name, start = row
        return MaskingAttempt(
            str(partner), str(attempt_id), bytes(blinding), bytes(tag_key), str(file_name),
            datetime.fromisoformat(str(start)),
        )  # fmt: skip

    def apply_hop(
        self, name: DatasetName, attempt: MaskingAttempt, file_name: str, masking: MaskingState
    ) -> bool:
        """Applies a completed hop: the dataset's new file and masking, in one transaction.

        Every attempt at the dataset's hops ends with it: they blinded the old file.
        Returns False, changing nothing, if the attempt is no longer the hop's newest or
        the dataset's file changed since it started.
        """
        with self.database.transaction() as db:
            current = db.execute(
                "SELECT a.attempt, d.file_name FROM masking_attempts a JOIN datasets d"
                " ON d.collaboration = a.collaboration AND d.dataset = a.dataset"
                " WHERE a.collaboration = ? AND a.dataset = ? AND a.partner = ?",
                (name.collaboration, name.dataset, attempt.partner),
            ).fetchone()
            if current is None or tuple(current) != (attempt.attempt_id, attempt.file_name):
                return False
            db.execute(
                "UPDATE datasets SET file_name = ? WHERE collaboration = ? AND dataset = ?",
                (file_name, name.collaboration, name.dataset),
            )
            _write_masking(db, name, masking)
            db.execute(
                "DELETE FROM masking_attempts WHERE collaboration = ? AND dataset = ?",
                (name.collaboration, name.dataset),
            )
        return True

    def replace_file(
        self, name: DatasetName, old_file_name: str, file_name: str, masking: MaskingState
    ) -> bool:
        """Replaces a dataset's file and masking by the server's own step, in one transaction.

        Returns False, changing nothing, if the file is no longer `old_file_name`.
        """
        with self.database.transaction() as db:
            changed = db.execute(
                "UPDATE datasets SET file_name = ?"
                " WHERE collaboration = ? AND dataset = ? AND file_name = ?",
                (file_name, name.collaboration, name.dataset, old_file_name),
            ).rowcount
            if not changed:
                return False
            _write_masking(db, name, masking)
            db.execute(
                "DELETE FROM masking_attempts WHERE collaboration = ? AND dataset = ?",
                (name.collaboration, name.dataset),
            )
        return True

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


def _write_masking(db: sqlite3.Connection, name: DatasetName, masking: MaskingState) -> None:
    change = masking.change_time or datetime.now(UTC)
    db.execute(
        "INSERT OR REPLACE INTO dataset_masking VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            name.collaboration,
            name.dataset,
            json.dumps(masking.mask_set),
            int(masking.sorted),
            masking.factor,
            masking.prepared_for,
            int(masking.served),
            change.isoformat(),
        ),
    )


def _masking(values: tuple[object, ...]) -> MaskingState | None:
    mask_set, is_sorted, factor, prepared_for, served, change_time = values
    if mask_set is None:
        return None
    return MaskingState(
        mask_set=tuple(json.loads(str(mask_set))),
        sorted=bool(is_sorted),
        factor=None if factor is None else bytes(cast("bytes", factor)),
        prepared_for=None if prepared_for is None else str(prepared_for),
        served=bool(served),
        change_time=datetime.fromisoformat(str(change_time)),
    )


def _dataset(row: tuple[object, ...]) -> DatasetRecord:
    (collaboration, dataset, owner, types, segments, rows, checksum, kcv, stats, file_name,
     create_time) = row[:11]  # fmt: skip
    return DatasetRecord(
        masking=_masking(row[11:]),
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
