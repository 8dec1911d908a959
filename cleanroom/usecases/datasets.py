"""Uploading, reading, listing and deleting datasets, with access checked first."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from cleanroom.config import Collaboration, Matching, Role
from cleanroom.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, shown
from cleanroom.names import CollaborationName, DatasetName, dataset_id_owner
from cleanroom.storage.catalog import Catalog, DatasetRecord
from cleanroom.storage.dataset_files import DatasetFiles
from cleanroom.usecases.access import AccessPolicy, Caller
from cleanroom.usecases.hop_rows import masking_form
from cleanroom.usecases.masking import MatchingStatus, initial_masking, matching_status
from cleanroom.usecases.upload import DatasetUpload, UploadHeader

READERS = (Role.UPLOADER, Role.ANALYST, Role.ADMIN)


class Datasets:
    """The datasets of every collaboration: their files and their catalog rows."""

    def __init__(self, access: AccessPolicy, catalog: Catalog, files: DatasetFiles) -> None:
        self.access = access
        self.catalog = catalog
        self.files = files

    @contextmanager
    def upload(self, caller: Caller, header: UploadHeader) -> Iterator[DatasetUpload]:
        """Opens an upload for the caller's brand, to be fed and then passed to `commit`.

        Whatever happens in the block, the upload's scratch file is gone after it: an upload
        that was not committed leaves nothing behind.
        """
        collaboration = self.access.require(
            caller, header.parent, [Role.UPLOADER], "upload datasets"
        )
        header.check(collaboration)
        self._check_owned(caller, header.dataset_id)
        self._check_free(header.dataset_name)
        upload = DatasetUpload(header, self.files.scratch_file(".arrows"))
        try:
            yield upload
        finally:
            upload.discard()

    def commit(
        self,
        caller: Caller,
        upload: DatasetUpload,
        abandoned: Callable[[], bool] = lambda: False,
    ) -> DatasetRecord | None:
        """Checks the whole upload and makes it a visible dataset: its file, then its row.

        `abandoned` is asked last, just before the dataset becomes visible: if the client
        has gone (a cancelled stream can end like a whole one), nothing is stored and
        None is returned.
        """
        table, stats, checksum = upload.finish()
        header = upload.header
        name = header.dataset_name
        owner = caller.known_partner().id
        masking = None
        if header.matching is Matching.DOUBLE_BLIND:
            # Masked by its owner only: stored as rows for the hops, unless that is all.
            collaboration = self.access.require(
                caller, header.parent, [Role.UPLOADER], "upload datasets"
            )
            masking = initial_masking(owner, collaboration)
            if not masking.sorted:
                table = masking_form(table, header.identifier_types, header.segment_columns)
        file_name = self.files.commit(
            table,
            collaboration=name.collaboration,
            dataset=name.dataset,
            identifier_types=header.identifier_types,
            segment_columns=header.segment_columns,
            matched=masking is None or masking.sorted,
        )
        record = DatasetRecord(
            name=name,
            owner=owner,
            identifier_types=header.identifier_types,
            segment_columns=header.segment_columns,
            row_count=header.row_count,
            checksum=checksum,
            key_check_value=header.key_check_value,
            identifier_stats=stats,
            file_name=file_name,
            create_time=datetime.now(UTC),
            masking=masking,
        )
        try:
            if abandoned():
                self.files.delete(file_name)
                return None
            self.catalog.add_dataset(record)
        except BaseException:
            self.files.delete(file_name)
            raise
        return record

    def status(self, record: DatasetRecord) -> MatchingStatus:
        """Whether reports can match a dataset yet, under the call's configuration."""
        collaboration = self.access.config.collaborations.get(record.name.collaboration)
        if collaboration is None:
            return MatchingStatus(matchable=False)
        return matching_status(record, collaboration)

    def _check_owned(self, caller: Caller, dataset_id: str) -> None:
        """Refuses an id named under another partner (or none), before any lookup.

        The refusal reads the same whether or not a dataset of that id exists.
        """
        partner = caller.known_partner()
        if dataset_id_owner(dataset_id, self.access.config.partners) != partner.id:
            raise InvalidArgumentError(
                "DATASET_ID_NOT_OWNED",
                f"The dataset id {shown(dataset_id)} is not named under partner"
                f" {partner.id!r}: the ids of its datasets start with {partner.id + '-'!r},"
                f" for example {partner.id + '-customers'!r}.",
                field="header.dataset_id",
                partner=partner.id,
                prefix=f"{partner.id}-",
            )

    def _check_free(self, name: DatasetName) -> None:
        """Fails early, before any data is sent, if the name is taken."""
        if self.catalog.dataset(name) is not None:
            raise AlreadyExistsError(
                "DATASET_EXISTS",
                f"{name} exists already. Choose another dataset id, or delete it first.",
                dataset=str(name),
            )

    def get(self, caller: Caller, name: DatasetName) -> DatasetRecord:
        """A dataset the caller's brand owns (any, for administrators)."""
        collaboration = self.access.require(caller, name.parent, READERS, "read datasets")
        record = self.catalog.dataset(name)
        self.access.require_owner(caller, collaboration, name, record.owner if record else None)
        if record is None:  # only administrators get here for a missing dataset
            raise _not_found(name)
        return record

    def list_shared(
        self, caller: Caller, parent: CollaborationName, *, after: str, limit: int
    ) -> list[DatasetRecord]:
        """Every dataset of a collaboration, for a member to find what to ask about.

        The records hold sizes; the service shows members their names, owners, types,
        segments and upload times only.
        """
        self.access.require(caller, parent, READERS, "list the datasets shared in it")
        return self.catalog.datasets(parent.collaboration, owner=None, after=after, limit=limit)

    def list(
        self, caller: Caller, parent: CollaborationName, *, after: str, limit: int
    ) -> list[DatasetRecord]:
        """The datasets of the caller's brand in a collaboration (all, for administrators)."""
        collaboration = self.access.require(caller, parent, READERS, "list datasets")
        partner = caller.known_partner()
        owner = None if Role.ADMIN in collaboration.roles_of(partner) else partner.id
        return self.catalog.datasets(parent.collaboration, owner=owner, after=after, limit=limit)

    def delete(self, caller: Caller, name: DatasetName) -> DatasetRecord:
        """Deletes a dataset of the caller's brand: its catalog row, then its file."""
        collaboration = self.access.require(
            caller, name.parent, [Role.UPLOADER, Role.ADMIN], "delete datasets"
        )
        record = self.catalog.dataset(name)
        self.access.require_owner(caller, collaboration, name, record.owner if record else None)
        if record is None:
            raise _not_found(name)
        self.remove(record)
        return record

    def remove(self, record: DatasetRecord) -> None:
        """Removes a dataset for good: its catalog row (it is gone at once), then its file."""
        self.catalog.remove_dataset(record.name)
        self.files.delete(record.file_name)

    def expired(self, collaboration: Collaboration, now: datetime) -> tuple[DatasetRecord, ...]:
        """The datasets of a collaboration older than its retention period."""
        if collaboration.retention_days is None:
            return ()
        cutoff = now - timedelta(days=collaboration.retention_days)
        records = self.catalog.datasets(collaboration.id, owner=None, after="", limit=1 << 30)
        return tuple(r for r in records if r.create_time < cutoff)


def _not_found(name: DatasetName) -> NotFoundError:
    return NotFoundError("DATASET_NOT_FOUND", f"{name} does not exist.", dataset=str(name))
