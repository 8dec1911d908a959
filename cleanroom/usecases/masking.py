"""The masking hops of double-blind collaborations (SPEC section 8), with access checked first.

A dataset uploaded in double-blind mode carries its owner's mask only. Every other
uploader of the collaboration then takes one hop over it: the server sends the rows
blinded afresh, the brand multiplies every element by its scalar and shuffles the rows,
and the server folds its blinding into the stored form. The blinding is folded: the
stored elements carry a factor `f` of the server's (in the catalog), so that each hop
costs one multiplication per element on the way out (none when the stored form was made
for exactly that hop) and one on the way back, which also makes the stored form of the
next hop. After the last hop the server removes its factor and lays the elements out
like any shared-secret dataset: the dataset is matchable.

Which hops are pending follows from the configuration at each call: a brand that joins
as an uploader has a hop over every dataset at once, and the datasets wait for it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from cleanroom.config import Collaboration, Matching, Role
from cleanroom.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from cleanroom.group.ristretto255 import invert_scalar, multiply_scalars, new_scalar
from cleanroom.matching.layout import sorted_layout
from cleanroom.names import CollaborationName, DatasetName, MaskingHopName
from cleanroom.storage.catalog import Catalog, DatasetRecord, MaskingAttempt, MaskingState
from cleanroom.storage.dataset_files import DatasetFiles
from cleanroom.usecases.access import AccessPolicy, Caller
from cleanroom.usecases.hop_rows import (
    TAG_KEY_BYTES,
    HopResult,
    HopRows,
    blinded_chunks,
    expected,
    hop_schema,
    multiplied,
    read_rows,
)
from cleanroom.usecases.upload import check_stream_totals

ATTEMPT_ID = re.compile(r"[0-9a-f]{32}")
_SCAN = 500  # catalog rows read at a time when listing hops


@dataclass(frozen=True)
class MatchingStatus:
    """Whether reports can match a dataset yet, and what it waits for.

    Attributes:
        matchable: Reports can match it.
        mask_set: The brands that have masked it, the owner first (double-blind only).
        pending: The uploaders that have still to mask it.
        stranded: Brands of its mask set that are no longer uploaders: it can never be
            matchable, and must be uploaded again.
        made_for: The matching mode its columns were made for; a dataset of the other
            mode than its collaboration's (after the operator changed it) is not matchable.
    """

    matchable: bool
    mask_set: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    stranded: tuple[str, ...] = ()
    made_for: Matching = Matching.SHARED_SECRET


def matching_status(record: DatasetRecord, collaboration: Collaboration) -> MatchingStatus:
    """The matching status of a dataset under a collaboration's current configuration."""
    masking = record.masking
    if masking is None:
        return MatchingStatus(matchable=collaboration.matching is Matching.SHARED_SECRET)
    uploaders = collaboration.uploaders
    pending = tuple(sorted(uploaders - set(masking.mask_set)))
    stranded = tuple(m for m in masking.mask_set if m not in uploaders)
    return MatchingStatus(
        matchable=collaboration.matching is Matching.DOUBLE_BLIND
        and masking.sorted
        and not pending
        and not stranded,
        mask_set=masking.mask_set,
        pending=pending,
        stranded=stranded,
        made_for=Matching.DOUBLE_BLIND,
    )


def initial_masking(owner: str, collaboration: Collaboration) -> MaskingState:
    """The masking of a dataset just uploaded: its owner's mask; sorted if that is all."""
    return MaskingState(
        mask_set=(owner,),
        sorted=collaboration.uploaders <= {owner},
        change_time=datetime.now(UTC),
    )


@dataclass(frozen=True)
class MaskingHop:
    """One dataset that one brand has still to mask."""

    name: MaskingHopName
    identifier_types: tuple[str, ...]
    row_count: int
    create_time: datetime


@dataclass(frozen=True)
class HopAttempt:
    """A started attempt: its id and the blinded rows to send, with their checksum."""

    hop: MaskingHop
    attempt_id: str
    checksum: str
    chunks: list[bytes]

    @property
    def bytes(self) -> int:
        """The size of the rows sent."""
        return sum(len(chunk) for chunk in self.chunks)


@dataclass(frozen=True)
class HopCompletion:
    """The header of a hop's completion: the attempt and what the stream holds."""

    name: MaskingHopName
    attempt_id: str
    row_count: int
    checksum: str

    def check_form(self) -> None:
        """Checks the fields on their own, before any of them is logged.

        Raises:
            InvalidArgumentError: A field is malformed; the error names it.
        """
        if not ATTEMPT_ID.fullmatch(self.attempt_id):
            raise InvalidArgumentError(
                "INVALID_ATTEMPT_ID",
                "`result.attempt_id` must be the 32 lowercase hex characters that"
                " StartMaskingHop gave.",
                field="result.attempt_id",
            )
        check_stream_totals("result", self.row_count, self.checksum)


@dataclass(frozen=True)
class AppliedHop:
    """A hop applied: the dataset's new state."""

    hop: MaskingHop
    matchable: bool
    mask_set: tuple[str, ...]


class Masking:
    """The masking hops of every double-blind collaboration."""

    def __init__(self, access: AccessPolicy, catalog: Catalog, files: DatasetFiles) -> None:
        self.access = access
        self.catalog = catalog
        self.files = files

    def settle(self) -> list[DatasetName]:
        """Finishes the datasets that every uploader has masked but that are not laid out.

        That happens when a brand whose hop was pending stops being an uploader: the
        hops done are then all there is to do but the server's last step (its factor
        removed, the sorted layout). Returns the datasets it finished.
        """
        finished = []
        for collaboration in self.access.config.collaborations.values():
            if collaboration.matching is not Matching.DOUBLE_BLIND:
                continue
            records = self.catalog.datasets(collaboration.id, owner=None, after="", limit=1 << 30)
            for record in records:
                status = matching_status(record, collaboration)
                masking = record.masking
                if masking is None or masking.sorted or status.pending or status.stranded:
                    continue
                if self._lay_out(record, masking):
                    finished.append(record.name)
        return finished

    def _lay_out(self, record: DatasetRecord, masking: MaskingState) -> bool:
        rows = self._rows(record)
        if masking.factor is not None:
            rows = multiplied(rows, invert_scalar(masking.factor))
        table, _ = sorted_layout(rows.table(), rows.identifier_types, rows.segment_columns)
        file_name = self._write(record, table, matched=True)
        state = MaskingState(masking.mask_set, sorted=True, change_time=datetime.now(UTC))
        try:
            replaced = self.catalog.replace_file(record.name, record.file_name, file_name, state)
        except BaseException:
            self.files.delete(file_name)
            raise
        self.files.delete(record.file_name if replaced else file_name)
        return replaced

    def hops(
        self, caller: Caller, parent: CollaborationName, *, after: str, limit: int
    ) -> list[MaskingHop]:
        """The hops pending for the caller's brand, by dataset id after `after`."""
        collaboration = self.access.require(caller, parent, [Role.UPLOADER], "take masking hops")
        partner = caller.known_partner().id
        found: list[MaskingHop] = []
        if collaboration.matching is not Matching.DOUBLE_BLIND:
            return found
        while len(found) < limit:
            records = self.catalog.datasets(
                parent.collaboration, owner=None, after=after, limit=_SCAN
            )
            for record in records:
                status = matching_status(record, collaboration)
                if partner in status.pending and not status.stranded:
                    found.append(_hop(record, partner))
            if len(records) < _SCAN:
                break
            after = records[-1].name.dataset
        return found[:limit]

    def start(self, caller: Caller, name: MaskingHopName, *, max_chunk_bytes: int) -> HopAttempt:
        """Starts a new attempt at a hop: records it, then returns the rows to send.

        Raises:
            PermissionDeniedError: The caller may not take this hop (whether or not it exists).
            NotFoundError: MASKING_HOP_NOT_FOUND, no such hop is pending.
            FailedPreconditionError: MASKING_HOP_ALREADY_APPLIED, the brand masked it.
        """
        collaboration = self._authorize(caller, name, "take")
        record, masking = self._pending(collaboration, name)
        rows = self._rows(record)
        reuse = masking.prepared_for == name.partner and not masking.served
        for _ in range(2):  # a second time, blinded afresh, if another attempt served it
            attempt, multiplier = _new_attempt(name.partner, record.file_name, masking, reuse)
            chunks, checksum = blinded_chunks(
                rows, multiplier, attempt.tag_key, max_chunk_bytes=max_chunk_bytes
            )
            if self.catalog.start_attempt(record.name, attempt, serves=multiplier is None):
                return HopAttempt(_hop(record, name.partner), attempt.attempt_id, checksum, chunks)
            reuse = False
        raise _superseded(name, "the dataset changed while the attempt started")

    @contextmanager
    def complete(self, caller: Caller, completion: HopCompletion) -> Iterator[HopResult]:
        """Opens a hop's completion, to be fed the result and then passed to `apply`.

        The attempt is checked before any row is read: a superseded or applied one is
        refused at once.
        """
        collaboration = self._authorize(caller, completion.name, "complete")
        record, _ = self._current(collaboration, completion)
        yield HopResult(
            hop_schema(record.identifier_types, record.segment_columns),
            completion.row_count,
            completion.checksum,
        )

    def apply(
        self,
        caller: Caller,
        completion: HopCompletion,
        result: HopResult,
        abandoned: Callable[[], bool] = lambda: False,
    ) -> AppliedHop | None:
        """Checks a whole result and applies the hop: the new file, then one transaction.

        `abandoned` is asked last, before the hop is applied: if the client has gone,
        nothing changes and None is returned.

        Raises:
            InvalidArgumentError: The result is not the attempt's rows, masked.
            FailedPreconditionError: MASKING_HOP_ATTEMPT_SUPERSEDED or
                MASKING_HOP_ALREADY_APPLIED, if another call got there first.
        """
        collaboration = self._authorize(caller, completion.name, "complete")
        record, attempt = self._current(collaboration, completion)
        masking = record.masking
        assert masking is not None  # _current found a double-blind dataset
        stored = self._rows(record)
        mask_set = (*masking.mask_set, completion.name.partner)
        uploaders = collaboration.uploaders
        remaining = sorted(uploaders - set(mask_set))
        last = not remaining and set(mask_set) <= uploaders
        inverse = invert_scalar(attempt.blinding)
        factor = None if last else new_scalar()
        multiplier = inverse if factor is None else multiply_scalars(factor, inverse)
        rows = result.finish(expected(stored), multiplier, attempt.tag_key)
        table = rows.table()
        if last:
            table, _ = sorted_layout(table, rows.identifier_types, rows.segment_columns)
        file_name = self._write(record, table, matched=last)
        state = MaskingState(
            mask_set=mask_set,
            sorted=last,
            factor=factor,
            prepared_for=remaining[0] if remaining and factor is not None else None,
            change_time=datetime.now(UTC),
        )
        try:
            if abandoned():
                self.files.delete(file_name)
                return None
            applied = self.catalog.apply_hop(record.name, attempt, file_name, state)
        except BaseException:
            self.files.delete(file_name)
            raise
        if not applied:
            self.files.delete(file_name)
            self._current(collaboration, completion)  # says why: applied, or superseded
            raise _superseded(completion.name, "another attempt got there first")
        self.files.delete(record.file_name)
        hop = _hop(record, completion.name.partner)
        return AppliedHop(hop, last, mask_set)

    def _authorize(self, caller: Caller, name: MaskingHopName, action: str) -> Collaboration:
        """The hop's collaboration, if the caller is the uploader the hop is addressed to.

        Every other caller is refused the same way whether or not the hop exists.
        """
        collaboration = self.access.require(
            caller, name.parent, [Role.UPLOADER], f"{action} masking hops"
        )
        partner = caller.known_partner()
        if partner.id != name.partner:
            raise PermissionDeniedError(
                "MASKING_HOP_NOT_ACCESSIBLE",
                f"Partner {partner.id!r} may not {action} {name}: a brand takes only the"
                f" hops addressed to it (names ending in `maskingHops/{partner.id}`); list"
                " them with ListMaskingHops.",
                partner=partner.id,
                masking_hop=str(name),
            )
        return collaboration

    def _pending(
        self, collaboration: Collaboration, name: MaskingHopName
    ) -> tuple[DatasetRecord, MaskingState]:
        """The hop's dataset and its masking, if the hop is pending."""
        record = self.catalog.dataset(name.dataset_name)
        if record is None or record.masking is None:
            raise _not_found(name)
        if name.partner in record.masking.mask_set:
            raise FailedPreconditionError(
                "MASKING_HOP_ALREADY_APPLIED",
                f"{name} is done: partner {name.partner!r} has masked the dataset already."
                " Nothing is left to do for it.",
                masking_hop=str(name),
            )
        status = matching_status(record, collaboration)
        if name.partner not in status.pending or status.stranded:
            raise _not_found(name)
        return record, record.masking

    def _current(
        self, collaboration: Collaboration, completion: HopCompletion
    ) -> tuple[DatasetRecord, MaskingAttempt]:
        """The hop's dataset and newest attempt, if the completion names that attempt."""
        record, _ = self._pending(collaboration, completion.name)
        attempt = self.catalog.attempt(record.name, completion.name.partner)
        if attempt is None or attempt.attempt_id != completion.attempt_id:
            raise _superseded(completion.name, "it is not the newest attempt at this hop")
        if attempt.file_name != record.file_name:
            raise _superseded(
                completion.name, "another brand's hop over the dataset was applied since it began"
            )
        return record, attempt

    def _write(self, record: DatasetRecord, table: pa.Table, *, matched: bool) -> str:
        """Writes a dataset's next file, with its range copy if it can be matched."""
        return self.files.commit(
            table,
            collaboration=record.name.collaboration,
            dataset=record.name.dataset,
            identifier_types=record.identifier_types,
            segment_columns=record.segment_columns,
            matched=matched,
        )

    def _rows(self, record: DatasetRecord) -> HopRows:
        try:
            table = self.files.open(record.file_name)
        except FileNotFoundError:
            raise _not_found_dataset(record.name) from None
        return read_rows(table, record.identifier_types, record.segment_columns)


def _new_attempt(
    partner: str, file_name: str, masking: MaskingState, reuse: bool
) -> tuple[MaskingAttempt, bytes | None]:
    """A new attempt over the stored form, and what multiplies its elements on the way out.

    The stored elements carry the server's factor `f`. An attempt that may `reuse` the
    form made for it sends it as it is (None: its blinding is `f`); any other picks a
    fresh `r` and sends `r · f⁻¹ ·` each element.
    """
    multiplier: bytes | None
    if reuse and masking.factor is not None:
        blinding, multiplier = masking.factor, None
    else:
        blinding = new_scalar()
        multiplier = (
            blinding
            if masking.factor is None
            else multiply_scalars(blinding, invert_scalar(masking.factor))
        )
    attempt = MaskingAttempt(
        partner=partner,
        attempt_id=secrets.token_hex(16),
        blinding=blinding,
        tag_key=secrets.token_bytes(TAG_KEY_BYTES),
        file_name=file_name,
        start_time=datetime.now(UTC),
    )
    return attempt, multiplier


def _hop(record: DatasetRecord, partner: str) -> MaskingHop:
    masking = record.masking
    changed = masking.change_time if masking and masking.change_time else record.create_time
    return MaskingHop(
        name=MaskingHopName(record.name.collaboration, record.name.dataset, partner),
        identifier_types=record.identifier_types,
        row_count=record.row_count,
        create_time=max(changed, record.create_time),
    )


def _not_found(name: MaskingHopName) -> NotFoundError:
    return NotFoundError(
        "MASKING_HOP_NOT_FOUND",
        f"{name} is not pending: the dataset does not exist, is not masked in double-blind"
        " mode, or waits for no hop of this brand. List the pending hops with ListMaskingHops.",
        masking_hop=str(name),
    )


def _not_found_dataset(name: DatasetName) -> NotFoundError:
    return NotFoundError("DATASET_NOT_FOUND", f"{name} does not exist.", dataset=str(name))


def _superseded(name: MaskingHopName, why: str) -> FailedPreconditionError:
    return FailedPreconditionError(
        "MASKING_HOP_ATTEMPT_SUPERSEDED",
        f"The attempt cannot complete {name}: {why}. The hop is still pending: start a new"
        " attempt (`cleanroom-partner blind work` does).",
        masking_hop=str(name),
    )
