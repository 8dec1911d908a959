"""Taking masking hops: the brand multiplies another brand's blinded rows by its key.

For each hop that waits for the brand, `work` starts an attempt, receives the rows the
server blinded for it, multiplies every element by the brand's blind key, shuffles the
rows (a `_row_tag` column, opaque to the brand, moves with its row) and sends them back.
Each result is written to the journal (`partners.masking.journal`) before it is sent and
removed once the server has applied it, so that a crash or a Ctrl-C costs no work and no
hop is ever applied twice or lost: the server applies only its newest attempt of a hop,
once. The client is handed in (`MaskingClient`), so that this module needs no gRPC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from cleanroom.group.ristretto255 import ELEMENT_BYTES, InvalidElementError
from cleanroom.v1 import masking_service_pb2
from partners.errors import InvalidRequestError, NotFoundError, ServerBugError, ServerError
from partners.masking import rows as masking_rows
from partners.masking.journal import HopJournal, JournalEntry

ROW_TAG = "_row_tag"
"""The column that carries a row's segments, encrypted by the server, through a hop."""

ROW_TAG_BYTES = 16
SUPERSEDED = "MASKING_HOP_ATTEMPT_SUPERSEDED"
ALREADY_APPLIED = "MASKING_HOP_ALREADY_APPLIED"


class MaskingClient(Protocol):
    """What `work` needs of `partners.client.CleanRoomClient`."""

    def list_masking_hops(
        self, parent: str | None = None
    ) -> Iterable[masking_service_pb2.MaskingHop]:
        """The hops that wait for the caller's brand in a collaboration."""
        ...

    def start_masking_hop(
        self, name: str, *, progress: Callable[[int], None] | None = None
    ) -> tuple[masking_service_pb2.MaskingHopAttempt, pa.Table]:
        """A new attempt at a hop and its rows, their checksum checked."""
        ...

    def complete_masking_hop(
        self,
        name: str,
        *,
        attempt_id: str,
        rows: pa.Table,
        progress: Callable[[int], None] | None = None,
    ) -> masking_service_pb2.CompleteMaskingHopResponse:
        """Sends an attempt's result; the server applies the hop if it is the newest."""
        ...


@dataclass(frozen=True)
class HopSummary:
    """What one pass over the pending hops did.

    Attributes:
        applied: The hops the server applied, in order.
        resent: How many of those were sent again from the journal, not recomputed.
        superseded: Journal entries dropped because a newer attempt had begun.
        already_applied: Journal entries dropped because the server had applied the hop.
        gone: Hops that vanished meanwhile (their dataset deleted, say).
        rows: The rows masked and sent.
        matchable: The datasets that became matchable with the hops applied.
    """

    applied: tuple[str, ...] = ()
    resent: int = 0
    superseded: int = 0
    already_applied: int = 0
    gone: int = 0
    rows: int = 0
    matchable: tuple[str, ...] = ()


@dataclass
class _Tally:
    applied: list[str] = field(default_factory=list)
    resent: int = 0
    superseded: int = 0
    already_applied: int = 0
    gone: int = 0
    rows: int = 0
    matchable: list[str] = field(default_factory=list)

    def summary(self) -> HopSummary:
        return HopSummary(
            tuple(self.applied), self.resent, self.superseded, self.already_applied,
            self.gone, self.rows, tuple(self.matchable),
        )  # fmt: skip


def work(
    client: MaskingClient,
    collaboration: str,
    blind_key: bytes,
    *,
    journal: Path,
    progress: Callable[[int], None] | None = None,
) -> HopSummary:
    """Takes every masking hop that waits for the brand in a collaboration, once.

    First the journal's entries of the collaboration are sent again (an entry whose attempt
    is no longer the hop's newest is dropped, and the hop taken afresh below); then every
    pending hop is taken: start an attempt, multiply, shuffle, journal, complete.

    Args:
        client: The brand's client (a `CleanRoomClient`).
        collaboration: The collaboration's id or name.
        blind_key: The brand's blind key for that collaboration.
        journal: The folder of the journal; one worker at a time may use it.
        progress: Called with the number of values multiplied, as the work goes.

    Returns:
        What was done.

    Raises:
        ServerError: The server refused a call; entries it may still take are kept.
        InputError: The journal cannot be used, or another worker holds it.
    """
    parent = collaboration if "/" in collaboration else f"collaborations/{collaboration}"
    hops = HopJournal(journal)
    tally = _Tally()
    with hops.locked():
        for name in hops.hops(parent):
            entry = hops.read(name)
            if entry is not None and _complete(client, hops, entry, tally):
                tally.resent += 1
        for hop in list(client.list_masking_hops(parent)):
            if hop.name not in tally.applied:
                _take(client, hops, hop, blind_key, tally, progress=progress)
    return tally.summary()


def _take(
    client: MaskingClient,
    hops: HopJournal,
    hop: masking_service_pb2.MaskingHop,
    blind_key: bytes,
    tally: _Tally,
    *,
    progress: Callable[[int], None] | None,
) -> None:
    """Takes one hop: a new attempt, its rows masked and shuffled, journaled, sent."""
    try:
        attempt, received = client.start_masking_hop(hop.name)
    except NotFoundError:
        tally.gone += 1
        return
    except ServerError as error:
        if error.reason == ALREADY_APPLIED:
            return  # applied since it was listed, by this brand's other worker
        raise
    types = list(attempt.masking_hop.identifier_types)
    _check_rows(hop.name, received, types, attempt.masking_hop.row_count)
    try:
        masked = masking_rows.multiply_elements(received, blind_key, types, progress=progress)
    except InvalidElementError:
        raise ServerBugError(
            "DATA_LOSS",
            "INVALID_GROUP_ELEMENT",
            f"The server sent hop {hop.name} a value that is not a ristretto255 element;"
            " nothing was sent back. Tell the operator.",
            {"masking_hop": hop.name},
        ) from None
    entry = JournalEntry(
        hop.name, attempt.attempt_id, attempt.checksum, masking_rows.shuffled(masked)
    )
    hops.write(entry)
    _complete(client, hops, entry, tally)


def _complete(client: MaskingClient, hops: HopJournal, entry: JournalEntry, tally: _Tally) -> bool:
    """Sends a journaled result; True if the server applied it.

    The entry is removed once the server applied the hop, or said it cannot take this
    result: applied already, superseded by a newer attempt, the hop gone, or the result
    refused as invalid (then the error goes on: sending it again would not help). On any
    other error (the server unreachable, busy) it is kept, to be sent again.
    """
    try:
        response = client.complete_masking_hop(
            entry.hop, attempt_id=entry.attempt_id, rows=entry.rows
        )
    except NotFoundError:
        hops.remove(entry.hop)
        tally.gone += 1
        return False
    except InvalidRequestError:
        hops.remove(entry.hop)
        raise
    except ServerError as error:
        if error.reason not in (SUPERSEDED, ALREADY_APPLIED):
            raise
        hops.remove(entry.hop)
        if error.reason == SUPERSEDED:
            tally.superseded += 1
        else:
            tally.already_applied += 1
        return False
    hops.remove(entry.hop)
    tally.applied.append(entry.hop)
    tally.rows += entry.rows.num_rows
    if response.dataset_matchable:
        tally.matchable.append(response.masking_hop.dataset or entry.hop.rsplit("/", 2)[0])
    return True


def _check_rows(hop: str, table: pa.Table, types: list[str], row_count: int) -> None:
    """Refuses rows that are not what a hop carries: its element columns, maybe a row tag."""
    expected = {t: pa.binary(ELEMENT_BYTES) for t in types} | {ROW_TAG: pa.binary(ROW_TAG_BYTES)}
    odd = [f.name for f in table.schema if f.name not in expected or f.type != expected[f.name]]
    missing = [t for t in types if t not in table.schema.names]
    if odd or missing or table.num_rows != row_count:
        raise ServerBugError(
            "DATA_LOSS",
            "MALFORMED_MASKING_HOP_ROWS",
            f"The server's rows for hop {hop} are not what the hop announced (columns"
            f" {', '.join(table.schema.names) or 'none'}, {table.num_rows:,} rows for"
            f" {row_count:,}); nothing was sent back. Tell the operator.",
            {"masking_hop": hop},
        )
