"""Double-blind matching over the real server: uploads, masking hops, matchability, reports.

The brands' side is written here with `cleanroom.group` and the generated stubs, so that
these tests hold the server to the wire contract on their own (the toolkit has its own).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pyarrow import ipc

from cleanroom.audit.log import AuditFilter
from cleanroom.config import parse_config
from cleanroom.group.ristretto255 import (
    mask_digests,
    multiply,
    multiply_scalars,
    new_scalar,
)
from cleanroom.matching.layout import LAYOUT_KEY, SORTED_LAYOUT
from cleanroom.names import SERVER_LOG, DatasetName
from cleanroom.storage.database import DATABASE_FILE
from cleanroom.tls.pki import DemoPki
from cleanroom.usecases.retention import sweep
from cleanroom.v1 import (
    dataset_pb2,
    masking_service_pb2,
    masking_service_pb2_grpc,
    overlap_report_pb2,
    partner_service_pb2,
    partner_service_pb2_grpc,
)
from partners.errors import ServerError
from tests.support import (
    BRANDS,
    COLLABORATION,
    KCV,
    RunningServer,
    config_data,
    dataset_name,
    files_under,
    random_digests,
    running_server,
)

PARENT = f"collaborations/{COLLABORATION}"
DOUBLE_BLIND = {"matching": "double_blind"}
TYPES = ("email", "phone")
TIERS = ("gold", "silver", None)
MASKING = dataset_pb2.MATCHING_STATE_MASKING
MATCHABLE = dataset_pb2.MATCHING_STATE_MATCHABLE
KEYS = {brand: new_scalar() for brand in BRANDS}


# The brands' side, by hand ---------------------------------------------------------------


@dataclass
class Data:
    """A brand's rows: per type a digest or None, and a segment label per row."""

    digests: dict[str, list[bytes | None]]
    tiers: list[str | None]


def make_data(
    rng: np.random.Generator, pool: Mapping[str, np.ndarray], rows: int, *, repeats: bool = True
) -> Data:
    """Rows drawing digests from a shared pool, so that datasets overlap; some may repeat.

    Which row keeps a repeated digest depends on the rows' order, which double-blind
    uploads shuffle: reports compared across modes are over data without repeats.
    """
    digests: dict[str, list[bytes | None]] = {}
    for t in TYPES:
        picks = rng.choice(len(pool[t]), size=rows, replace=repeats)
        present = rng.random(rows) < 0.85
        digests[t] = [bytes(pool[t][i]) if p else None for i, p in zip(picks, present, strict=True)]
    keep = [r for r in range(rows) if any(digests[t][r] is not None for t in TYPES)]
    digests = {t: [digests[t][r] for r in keep] for t in TYPES}
    tiers = [TIERS[i] for i in rng.integers(0, len(TIERS), size=len(keep))]
    return Data(digests, tiers)


def element_column(values: Sequence[bytes | None], key: bytes | None, t: str) -> pa.Array:
    """A column of digests, masked with `key` (`key · P(d)`) unless it is None."""
    present = [v for v in values if v is not None]
    if key is not None and present:
        matrix = np.frombuffer(b"".join(present), dtype=np.uint8).reshape(-1, 32)
        masked = iter(bytes(row) for row in mask_digests(key, matrix, t, workers=1))
        values = [None if v is None else next(masked) for v in values]
    return pa.array(list(values), type=pa.binary(32))


def ipc_chunk(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def read_chunks(chunks: Sequence[bytes]) -> pa.Table:
    return pa.concat_tables(ipc.open_stream(pa.py_buffer(c)).read_all() for c in chunks)


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return info


class Brand:
    """One partner's raw stubs over its own mutual TLS channel."""

    def __init__(self, server: RunningServer, partner: str) -> None:
        self.partner = partner
        self.channel = server.connection(partner).channel()
        self.datasets = partner_service_pb2_grpc.PartnerServiceStub(self.channel)
        self.hops = masking_service_pb2_grpc.MaskingServiceStub(self.channel)

    def upload(
        self,
        dataset_id: str,
        data: Data,
        *,
        key: bytes | None,
        matching: int = partner_service_pb2.UPLOAD_MATCHING_DOUBLE_BLIND,
        segments: bool = True,
    ) -> dataset_pb2.Dataset:
        """Uploads the rows, masked with `key` (None: digests), in a random order."""
        columns = {t: element_column(data.digests[t], key, t) for t in TYPES}
        if segments:
            columns["tier"] = pa.array(data.tiers, pa.string())
        table = pa.table(columns)
        order = np.random.default_rng().permutation(table.num_rows)
        chunk = ipc_chunk(table.take(order).combine_chunks().to_batches()[0])
        header = partner_service_pb2.DatasetUploadHeader(
            parent=PARENT,
            dataset_id=dataset_id,
            identifier_types=list(TYPES),
            segment_columns=["tier"] if segments else [],
            key_check_value=KCV,
            row_count=table.num_rows,
            checksum=hashlib.sha256(chunk).hexdigest(),
            matching=matching,
        )
        messages = [
            partner_service_pb2.UploadDatasetRequest(header=header),
            partner_service_pb2.UploadDatasetRequest(record_batches=chunk),
        ]
        return self.datasets.UploadDataset(iter(messages), timeout=60).dataset

    def get(self, dataset_id: str) -> dataset_pb2.Dataset:
        request = partner_service_pb2.GetDatasetRequest(name=dataset_name(dataset_id))
        return self.datasets.GetDataset(request, timeout=30).dataset

    def pending(self) -> list[str]:
        request = masking_service_pb2.ListMaskingHopsRequest(parent=PARENT)
        return [h.name for h in self.hops.ListMaskingHops(request, timeout=30).masking_hops]

    def start(self, name: str) -> tuple[masking_service_pb2.MaskingHopAttempt, pa.Table]:
        """One attempt: its header, and the rows it sent."""
        request = masking_service_pb2.StartMaskingHopRequest(name=name)
        first, *rest = self.hops.StartMaskingHop(request, timeout=60)
        chunks = [m.record_batches for m in rest]
        assert first.WhichOneof("payload") == "attempt"
        assert hashlib.sha256(b"".join(chunks)).hexdigest() == first.attempt.checksum
        return first.attempt, read_chunks(chunks)

    def complete(
        self,
        name: str,
        attempt_id: str,
        rows: pa.Table,
        *,
        row_count: int | None = None,
    ) -> masking_service_pb2.CompleteMaskingHopResponse:
        chunk = ipc_chunk(rows.combine_chunks().to_batches()[0])
        header = masking_service_pb2.MaskingHopResult(
            name=name,
            attempt_id=attempt_id,
            row_count=rows.num_rows if row_count is None else row_count,
            checksum=hashlib.sha256(chunk).hexdigest(),
        )
        messages = [
            masking_service_pb2.CompleteMaskingHopRequest(result=header),
            masking_service_pb2.CompleteMaskingHopRequest(record_batches=chunk),
        ]
        return self.hops.CompleteMaskingHop(iter(messages), timeout=60)

    def take(self, name: str, tamper: Callable[[pa.Table], pa.Table] | None = None) -> Any:
        """Takes a hop whole: every element times the brand's key, rows shuffled."""
        attempt, rows = self.start(name)
        return self.complete(
            name, attempt.attempt_id, (tamper or (lambda t: t))(mask(rows, KEYS[self.partner]))
        )

    def close(self) -> None:
        self.channel.close()


def mask(rows: pa.Table, key: bytes) -> pa.Table:
    """The rows with every present element times `key`, in a fresh random order."""
    columns = {}
    for name in rows.column_names:
        column = rows.column(name).combine_chunks()
        if name in TYPES:
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            values = [column[i].as_py() for i in range(len(column))]
            present = [v for v, p in zip(values, valid, strict=True) if p]
            if present:
                matrix = np.frombuffer(b"".join(present), dtype=np.uint8).reshape(-1, 32)
                products = iter(bytes(r) for r in multiply(key, matrix, workers=1))
                values = [next(products) if p else None for p in valid]
            column = pa.array(values, pa.binary(32))
        columns[name] = column
    table = pa.table(columns)
    return table.take(np.random.default_rng().permutation(table.num_rows))


@contextmanager
def brands(server: RunningServer, *partners: str) -> Iterator[dict[str, Brand]]:
    opened = {p: Brand(server, p) for p in partners}
    try:
        yield opened
    finally:
        for brand in opened.values():
            brand.close()


def take_all(opened: Mapping[str, Brand]) -> int:
    """Every brand takes every hop pending for it, until none is left; returns how many."""
    taken = 0
    while True:
        round_taken = 0
        for brand in opened.values():
            for name in brand.pending():
                brand.take(name)
                round_taken += 1
        taken += round_taken
        if not round_taken:
            return taken


def hop_name(dataset_id: str, partner: str) -> str:
    return f"{dataset_name(dataset_id)}/maskingHops/{partner}"


def stored_elements(server: RunningServer, dataset_id: str, t: str) -> set[bytes]:
    record = server.clean_room.catalog.dataset(DatasetName(COLLABORATION, dataset_id))
    assert record is not None
    column = server.clean_room.files.open(record.file_name).column(t)
    return {v for v in column.to_pylist() if v is not None}


def expected_elements(data: Data, t: str, key: bytes) -> set[bytes]:
    digests = sorted({d for d in data.digests[t] if d is not None})
    matrix = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 32)
    return {bytes(r) for r in mask_digests(key, matrix, t, workers=1)}


def product(*keys: bytes) -> bytes:
    total = keys[0]
    for key in keys[1:]:
        total = multiply_scalars(total, key)
    return total


@pytest.fixture
def pool() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(18)
    return {t: np.unique(random_digests(rng, 600), axis=0) for t in TYPES}


@pytest.fixture
def blind(pki: DemoPki, tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(pki, tmp_path / "data", collaboration=DOUBLE_BLIND) as running:
        yield running


# Uploads -------------------------------------------------------------------------------


def test_hops_fold_to_the_product_of_every_key_and_then_the_dataset_is_matchable(
    blind: RunningServer, pool: dict[str, np.ndarray]
) -> None:
    data = make_data(np.random.default_rng(1), pool, 300)
    with brands(blind, *BRANDS) as b:
        uploaded = b["acme"].upload("acme-crm", data, key=KEYS["acme"])
        assert uploaded.matching_state == MASKING
        assert list(uploaded.mask_set) == ["partners/acme"]
        assert list(uploaded.pending_maskers) == ["partners/brightmart", "partners/corvid"]
        assert b["acme"].pending() == []  # never a hop over a brand's own dataset
        assert b["brightmart"].pending() == [hop_name("acme-crm", "brightmart")]
        assert b["corvid"].pending() == [hop_name("acme-crm", "corvid")]
        sent = b["brightmart"].start(hop_name("acme-crm", "brightmart"))[1]
        assert sent.schema.names == [*TYPES, "_row_tag"]
        # The rows sent are blinded: none of them is the owner's masked value.
        assert not {v for v in sent.column("email").to_pylist() if v} & expected_elements(
            data, "email", KEYS["acme"]
        )

        first = b["brightmart"].take(hop_name("acme-crm", "brightmart"))
        assert not first.dataset_matchable
        middle = b["acme"].get("acme-crm")
        assert list(middle.mask_set) == ["partners/acme", "partners/brightmart"]
        assert list(middle.pending_maskers) == ["partners/corvid"]
        assert middle.matching_state == MASKING
        assert b["brightmart"].pending() == []

        last = b["corvid"].take(hop_name("acme-crm", "corvid"))
        assert last.dataset_matchable
        assert last.masking_hop.name == hop_name("acme-crm", "corvid")
        done = b["acme"].get("acme-crm")
        assert done.matching_state == MATCHABLE
        assert list(done.pending_maskers) == []
        assert len(done.mask_set) == 3
        assert done.identifier_stats == uploaded.identifier_stats  # repeats counted at upload
    key = product(*(KEYS[p] for p in BRANDS))
    for t in TYPES:
        assert stored_elements(blind, "acme-crm", t) == expected_elements(data, t, key)
    record = blind.clean_room.catalog.dataset(DatasetName(COLLABORATION, "acme-crm"))
    assert record is not None
    stored = blind.clean_room.files.open(record.file_name)
    assert stored.schema.metadata[LAYOUT_KEY] == SORTED_LAYOUT  # laid out like any dataset
    # Segments stayed with their rows through every shuffle (digests held by one row).
    emails = data.digests["email"]
    single = sorted(e for e in set(emails) if e is not None and emails.count(e) == 1)
    matrix = np.frombuffer(b"".join(single), dtype=np.uint8).reshape(-1, 32)
    masked = [bytes(r) for r in mask_digests(key, matrix, "email", workers=1)]
    tier_of = {m: data.tiers[emails.index(e)] for e, m in zip(single, masked, strict=True)}
    stored_tiers = dict(
        zip(stored.column("email").to_pylist(), stored.column("tier").to_pylist(), strict=True)
    )
    assert tier_of
    assert {m: stored_tiers[m] for m in tier_of} == tier_of


def test_the_only_uploader_s_dataset_is_matchable_at_once(
    pki: DemoPki, tmp_path: Path, pool: dict[str, np.ndarray]
) -> None:
    alone = {
        **DOUBLE_BLIND,
        "members": [
            {"partner": "acme", "roles": ["uploader", "analyst"]},
            {"partner": "brightmart", "roles": ["analyst"]},
        ],
    }
    with (
        running_server(pki, tmp_path / "data", collaboration=alone) as server,
        brands(server, "acme") as b,
    ):
        dataset = b["acme"].upload(
            "acme-crm", make_data(np.random.default_rng(2), pool, 50), key=KEYS["acme"]
        )
        assert dataset.matching_state == MATCHABLE
        assert list(dataset.mask_set) == ["partners/acme"]


@pytest.mark.parametrize("collaboration_mode", ["double_blind", "shared_secret"])
def test_an_upload_for_the_other_mode_is_refused(
    pki: DemoPki, tmp_path: Path, pool: dict[str, np.ndarray], collaboration_mode: str
) -> None:
    data = make_data(np.random.default_rng(3), pool, 40)
    blind_room = collaboration_mode == "double_blind"
    with (
        running_server(
            pki, tmp_path / "data", collaboration={"matching": collaboration_mode}
        ) as server,
        brands(server, "acme") as b,
    ):
        # Each mode's upload, sent to a collaboration of the other mode.
        key, matching = (
            (None, partner_service_pb2.UPLOAD_MATCHING_SHARED_SECRET)
            if blind_room
            else (KEYS["acme"], partner_service_pb2.UPLOAD_MATCHING_DOUBLE_BLIND)
        )
        with pytest.raises(grpc.RpcError) as refused:
            b["acme"].upload("acme-crm", data, key=key, matching=matching)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(refused.value)
        assert info.reason == "MATCHING_MODE_MISMATCH"
        assert info.metadata["matching"] == collaboration_mode
        assert ("blind-key" in refused.value.details()) == blind_room
        assert files_under(server.data_dir / "datasets") == []
        assert files_under(server.data_dir / "tmp") == []


def test_values_that_are_not_group_elements_are_refused(
    blind: RunningServer, pool: dict[str, np.ndarray]
) -> None:
    data = make_data(np.random.default_rng(4), pool, 40)  # digests, not elements
    with brands(blind, "acme") as b, pytest.raises(grpc.RpcError) as refused:
        b["acme"].upload("acme-crm", data, key=None)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(refused.value)
    assert info.reason == "INVALID_GROUP_ELEMENT"
    assert info.metadata["identifier_type"] == "email"
    assert info.metadata["chunk"] == "1"
    for value in data.digests["email"]:
        if value is not None:
            assert value.hex() not in refused.value.details()
    assert files_under(blind.data_dir / "datasets") == []


# Who may take a hop ----------------------------------------------------------------------


def test_only_the_addressed_uploader_may_list_start_or_complete_a_hop(
    pki: DemoPki, tmp_path: Path, pool: dict[str, np.ndarray]
) -> None:
    members = {
        **DOUBLE_BLIND,
        "members": [
            {"partner": "acme", "roles": ["uploader", "analyst"]},
            {"partner": "brightmart", "roles": ["uploader", "analyst"]},
            {"partner": "corvid", "roles": ["analyst"]},
            {"partner": "ledger", "roles": ["auditor"]},
        ],
    }
    with (
        running_server(pki, tmp_path / "data", collaboration=members) as server,
        brands(server, "acme", "brightmart", "corvid", "ledger", "outsider", "operator") as b,
    ):
        b["acme"].upload(
            "acme-crm", make_data(np.random.default_rng(5), pool, 40), key=KEYS["acme"]
        )
        real = hop_name("acme-crm", "brightmart")
        absent = hop_name("acme-gone", "brightmart")
        attempt, rows = b["brightmart"].start(real)
        masked = mask(rows, KEYS["brightmart"])
        calls: dict[str, Callable[[Brand, str], object]] = {
            "start": lambda brand, name: brand.start(name),
            "complete": lambda brand, name: brand.complete(name, attempt.attempt_id, masked),
        }
        for partner in ("acme", "corvid", "ledger", "outsider", "operator"):
            for call in calls.values():
                seen = []
                for name in (real, absent):
                    with pytest.raises(grpc.RpcError) as refused:
                        call(b[partner], name)
                    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, partner
                    seen.append(error_info(refused.value).reason)
                assert seen[0] == seen[1]  # the same whether the hop exists
        for partner in ("corvid", "ledger", "outsider", "operator"):
            with pytest.raises(grpc.RpcError) as refused:
                b[partner].pending()
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # The addressed brand, meanwhile, still completes its attempt.
        assert b["brightmart"].complete(real, attempt.attempt_id, masked).dataset_matchable
        with pytest.raises(grpc.RpcError) as absent_hop:
            b["brightmart"].start(absent)
        assert absent_hop.value.code() == grpc.StatusCode.NOT_FOUND


# Attempts --------------------------------------------------------------------------------


def test_only_the_newest_attempt_completes_and_a_hop_is_applied_once(
    blind: RunningServer, pool: dict[str, np.ndarray]
) -> None:
    with brands(blind, *BRANDS) as b:
        b["acme"].upload(
            "acme-crm", make_data(np.random.default_rng(6), pool, 60), key=KEYS["acme"]
        )
        name = hop_name("acme-crm", "brightmart")
        old, old_rows = b["brightmart"].start(name)
        new, new_rows = b["brightmart"].start(name)
        assert old.attempt_id != new.attempt_id
        # Blinded afresh: no two sets a brand receives share an element.
        seen_old = {v for v in old_rows.column("email").to_pylist() if v}
        assert seen_old
        assert not seen_old & {v for v in new_rows.column("email").to_pylist() if v}
        with pytest.raises(grpc.RpcError) as superseded:
            b["brightmart"].complete(name, old.attempt_id, mask(old_rows, KEYS["brightmart"]))
        assert error_info(superseded.value).reason == "MASKING_HOP_ATTEMPT_SUPERSEDED"
        assert superseded.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        # corvid's attempt started before brightmart's hop is applied: it blinded the old
        # stored form, so it cannot complete after it.
        corvid_name = hop_name("acme-crm", "corvid")
        early, early_rows = b["corvid"].start(corvid_name)
        masked = mask(new_rows, KEYS["brightmart"])
        b["brightmart"].complete(name, new.attempt_id, masked)
        with pytest.raises(grpc.RpcError) as again:
            b["brightmart"].complete(name, new.attempt_id, masked)
        assert error_info(again.value).reason == "MASKING_HOP_ALREADY_APPLIED"
        with pytest.raises(grpc.RpcError) as stale:
            b["corvid"].complete(corvid_name, early.attempt_id, mask(early_rows, KEYS["corvid"]))
        assert error_info(stale.value).reason == "MASKING_HOP_ATTEMPT_SUPERSEDED"
        with pytest.raises(grpc.RpcError) as own:
            b["acme"].start(hop_name("acme-crm", "acme"))
        assert error_info(own.value).reason == "MASKING_HOP_ALREADY_APPLIED"
        # The form stored for corvid's hop goes out once as it is, then blinded afresh.
        sets = []
        for _ in range(3):
            sets.append(
                {v for v in b["corvid"].start(corvid_name)[1].column("phone").to_pylist() if v}
            )
        assert all(sets)
        assert not (sets[0] & sets[1])
        assert not (sets[1] & sets[2])
        assert not (sets[0] & sets[2])
        assert not sets[0] & {v for v in early_rows.column("phone").to_pylist() if v}
        assert b["corvid"].take(corvid_name).dataset_matchable


def _duplicate_a_row(rows: pa.Table) -> pa.Table:
    return rows.take([0, *range(rows.num_rows - 1)])


def _flip_a_tag(rows: pa.Table) -> pa.Table:
    tags = rows.column("_row_tag").to_pylist()
    tags[0] = bytes([tags[0][0] ^ 1]) + tags[0][1:]
    return rows.set_column(
        rows.schema.get_field_index("_row_tag"), "_row_tag", pa.array(tags, pa.binary(16))
    )


def _drop_an_element(rows: pa.Table) -> pa.Table:
    emails = rows.column("email").to_pylist()
    first = next(i for i, v in enumerate(emails) if v is not None)
    emails[first] = None
    return rows.set_column(0, "email", pa.array(emails, pa.binary(32)))


def _break_an_element(rows: pa.Table) -> pa.Table:
    emails = rows.column("email").to_pylist()
    first = next(i for i, v in enumerate(emails) if v is not None)
    emails[first] = b"\xff" * 32
    return rows.set_column(0, "email", pa.array(emails, pa.binary(32)))


def _repeat_an_element(rows: pa.Table) -> pa.Table:
    emails = rows.column("email").to_pylist()
    present = [i for i, v in enumerate(emails) if v is not None]
    emails[present[1]] = emails[present[0]]
    return rows.set_column(0, "email", pa.array(emails, pa.binary(32)))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_duplicate_a_row, "MASKING_HOP_ROWS_CHANGED"),
        (_flip_a_tag, "INVALID_ROW_TAG"),
        (_drop_an_element, "MASKING_HOP_ROWS_CHANGED"),
        (_break_an_element, "INVALID_GROUP_ELEMENT"),
        (_repeat_an_element, "MASKING_HOP_ROWS_CHANGED"),
        (lambda rows: rows.slice(1), "ROW_COUNT_MISMATCH"),
        (lambda rows: rows.drop_columns(["_row_tag"]), "SCHEMA_MISMATCH"),
    ],
)  # fmt: skip
def test_a_result_that_is_not_the_rows_sent_is_refused_and_the_hop_stays_pending(
    blind: RunningServer,
    pool: dict[str, np.ndarray],
    tamper: Callable[[pa.Table], pa.Table],
    reason: str,
) -> None:
    with brands(blind, "acme", "brightmart") as b:
        b["acme"].upload(
            "acme-crm", make_data(np.random.default_rng(7), pool, 80), key=KEYS["acme"]
        )
        name = hop_name("acme-crm", "brightmart")
        attempt, rows = b["brightmart"].start(name)
        masked = mask(rows, KEYS["brightmart"])
        with pytest.raises(grpc.RpcError) as refused:
            b["brightmart"].complete(
                name, attempt.attempt_id, tamper(masked), row_count=masked.num_rows
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(refused.value).reason == reason
        assert b["brightmart"].pending() == [name]
        assert len(files_under(blind.data_dir / "datasets")) == 1
        assert files_under(blind.data_dir / "tmp") == []
        # The attempt is still the newest: its honest result completes it.
        b["brightmart"].complete(name, attempt.attempt_id, masked)
        assert b["brightmart"].pending() == []


# Reports ---------------------------------------------------------------------------------


def _report_figures(report: overlap_report_pb2.OverlapReport) -> tuple[Any, ...]:
    return (
        [(s.dataset, s.row_count.SerializeToString()) for s in report.dataset_sizes],
        sorted(
            (c.segment, tuple(c.matched_datasets), c.base_row_count.SerializeToString())
            for c in report.membership_cells
        ),
        sorted(
            (p.dataset, p.matched_dataset, p.matched_row_count.SerializeToString(), p.match_rate)
            for p in report.pairwise_overlaps
        ),
        list(report.withheld_segments),
        (report.released_count, report.suppressed_count),
    )


@pytest.mark.parametrize("engine", ["memory", pytest.param("spark", marks=pytest.mark.slow)])
def test_a_double_blind_report_equals_the_shared_secret_one_on_the_same_data(
    pki: DemoPki,
    tmp_path: Path,
    pool: dict[str, np.ndarray],
    request: pytest.FixtureRequest,
    engine: str,
) -> None:
    rng = np.random.default_rng(8)
    data = {
        "acme": make_data(rng, pool, 400, repeats=False),
        "brightmart": make_data(rng, pool, 300, repeats=False),
    }
    reports = {}
    for mode in ("shared_secret", "double_blind"):
        copies = tmp_path / mode / "copies"
        server_options: dict[str, Any] = {}
        if engine == "spark":
            spark = request.getfixturevalue("spark_engine")
            options = {"location": str(copies), "ranges": 8, "driver_rows": 0}
            server_options = {"engine": {**spark, **options}}  # every question on Spark
        with (
            running_server(
                pki,
                tmp_path / mode / "data",
                server=server_options,
                collaboration={"matching": mode},
            ) as server,
            brands(server, *BRANDS) as b,
        ):
            for brand, rows in data.items():
                if mode == "double_blind":
                    b[brand].upload(f"{brand}-crm", rows, key=KEYS[brand])
                else:
                    b[brand].upload(
                        f"{brand}-crm", rows, key=None,
                        matching=partner_service_pb2.UPLOAD_MATCHING_SHARED_SECRET,
                    )  # fmt: skip
            if engine == "spark":
                # Only what engines match gets a range copy: none while masking.
                assert len(list(copies.iterdir())) == (0 if mode == "double_blind" else 2)
            assert take_all(b) == (4 if mode == "double_blind" else 0)
            assert b["acme"].get("acme-crm").matching_state == MATCHABLE
            if engine == "spark":
                assert len(list(copies.iterdir())) == 2
            reports[mode] = server.client("acme").create_report(
                PARENT,
                base=dataset_name("acme-crm"),
                others=[dataset_name("brightmart-crm")],
                segment_column="tier",
            )
    assert reports["double_blind"].released_count > 0
    assert _report_figures(reports["double_blind"]) == _report_figures(reports["shared_secret"])


def test_a_report_over_a_dataset_still_masking_is_refused_naming_the_pending_maskers(
    blind: RunningServer, pool: dict[str, np.ndarray]
) -> None:
    rng = np.random.default_rng(9)
    with brands(blind, *BRANDS) as b:
        b["acme"].upload("acme-crm", make_data(rng, pool, 100), key=KEYS["acme"])
        b["brightmart"].upload("brightmart-crm", make_data(rng, pool, 100), key=KEYS["brightmart"])
        for brand in ("acme", "brightmart"):
            for name in b[brand].pending():
                b[brand].take(name)  # corvid's hops are left pending
        client = blind.client("acme")
        question = {
            "base": dataset_name("acme-crm"),
            "others": [dataset_name("brightmart-crm")],
        }
        with pytest.raises(ServerError) as refused:
            client.create_report(PARENT, **question)
        assert refused.value.code == "FAILED_PRECONDITION"
        assert refused.value.reason == "DATASET_NOT_MATCHABLE"
        metadata = refused.value.metadata
        assert metadata["pending_maskers"] == "partners/corvid"
        assert {metadata["dataset_1"], metadata["dataset_2"]} == {
            dataset_name("acme-crm"), dataset_name("brightmart-crm"),
        }  # fmt: skip
        assert "corvid" in refused.value.message
        estimate = client.create_report_response(PARENT, **question, validate_only=True).estimate
        assert not estimate.allowed
        assert estimate.refusal_reason == "DATASET_NOT_MATCHABLE"
        assert take_all(b) == 2
        assert client.create_report(PARENT, **question).released_count > 0
    refusals = [e for e in blind.events("CreateOverlapReport") if e.outcome.reason]
    assert [e.outcome.reason for e in refusals] == ["DATASET_NOT_MATCHABLE"]


def test_a_brand_that_joins_later_makes_datasets_wait_for_its_hops(
    pki: DemoPki, tmp_path: Path, pool: dict[str, np.ndarray]
) -> None:
    two = {
        **DOUBLE_BLIND,
        "members": [
            {"partner": "acme", "roles": ["uploader", "analyst"]},
            {"partner": "brightmart", "roles": ["uploader", "analyst"]},
        ],
    }
    rng = np.random.default_rng(10)
    data = {"acme": make_data(rng, pool, 150), "brightmart": make_data(rng, pool, 150)}
    with (
        running_server(pki, tmp_path / "data", collaboration=two) as server,
        brands(server, *BRANDS) as b,
    ):
        for brand, rows in data.items():
            b[brand].upload(f"{brand}-crm", rows, key=KEYS[brand])
        assert take_all({p: b[p] for p in data}) == 2  # corvid is no member yet
        question = {"base": dataset_name("acme-crm"), "others": [dataset_name("brightmart-crm")]}
        before = server.client("acme").create_report(PARENT, **question)

        joined = config_data(pki, server.data_dir, collaboration=DOUBLE_BLIND)  # corvid uploads
        server.clean_room.reconfigure(parse_config(joined, base_dir=server.data_dir))
        assert b["acme"].get("acme-crm").matching_state == MASKING
        assert list(b["acme"].get("acme-crm").pending_maskers) == ["partners/corvid"]
        assert sorted(b["corvid"].pending()) == [
            hop_name("acme-crm", "corvid"), hop_name("brightmart-crm", "corvid"),
        ]  # fmt: skip
        assert b["acme"].pending() == []
        pages, token = [], ""
        while True:  # a page at a time, in the order of their names
            request = masking_service_pb2.ListMaskingHopsRequest(
                parent=PARENT, page_size=1, page_token=token
            )
            page = b["corvid"].hops.ListMaskingHops(request, timeout=30)
            pages.append([h.name for h in page.masking_hops])
            token = page.next_page_token
            if not token:
                break
        assert pages == [[hop_name("acme-crm", "corvid")], [hop_name("brightmart-crm", "corvid")]]
        hop = (
            b["corvid"]
            .hops.ListMaskingHops(
                masking_service_pb2.ListMaskingHopsRequest(parent=PARENT), timeout=30
            )
            .masking_hops[0]
        )
        assert (hop.dataset, hop.partner) == (dataset_name("acme-crm"), "partners/corvid")
        assert list(hop.identifier_types) == list(TYPES)
        assert hop.row_count == len(data["acme"].tiers)
        with pytest.raises(ServerError) as refused:
            server.client("brightmart").create_report(
                PARENT, base=dataset_name("brightmart-crm"), others=[dataset_name("acme-crm")]
            )
        assert refused.value.reason == "DATASET_NOT_MATCHABLE"
        assert refused.value.metadata["pending_maskers"] == "partners/corvid"

        assert take_all(b) == 2
        assert b["brightmart"].get("brightmart-crm").matching_state == MATCHABLE
        key = product(*(KEYS[p] for p in BRANDS))
        for brand, rows in data.items():
            for t in TYPES:
                assert stored_elements(server, f"{brand}-crm", t) == expected_elements(rows, t, key)
        fresh = server.client("brightmart").create_report(
            PARENT, base=dataset_name("brightmart-crm"), others=[dataset_name("acme-crm")]
        )
        assert fresh.released_count > 0
        assert (
            server.client("acme").create_report(PARENT, **question) == before
        )  # the same question


def test_when_an_uploader_leaves_datasets_it_masked_are_stranded_and_others_finish(
    blind: RunningServer, pool: dict[str, np.ndarray], pki: DemoPki
) -> None:
    rng = np.random.default_rng(11)
    data = {"acme-crm": make_data(rng, pool, 60), "brightmart-crm": make_data(rng, pool, 60)}
    with brands(blind, *BRANDS) as b:
        b["acme"].upload("acme-crm", data["acme-crm"], key=KEYS["acme"])
        b["brightmart"].upload("brightmart-crm", data["brightmart-crm"], key=KEYS["brightmart"])
        b["corvid"].take(hop_name("acme-crm", "corvid"))
        b["acme"].take(hop_name("brightmart-crm", "acme"))  # corvid's hop is left pending
        left = config_data(pki, blind.data_dir, collaboration=DOUBLE_BLIND)
        left["collaborations"][0]["members"][2]["roles"] = ["analyst"]  # corvid uploads no more
        blind.clean_room.reconfigure(parse_config(left, base_dir=blind.data_dir))
        assert blind.clean_room.wait_settled()
        # brightmart-crm needed corvid's hop only: the server's last step finished it.
        finished = b["brightmart"].get("brightmart-crm")
        assert finished.matching_state == MATCHABLE
        key = product(KEYS["acme"], KEYS["brightmart"])
        for t in TYPES:
            assert stored_elements(blind, "brightmart-crm", t) == expected_elements(
                data["brightmart-crm"], t, key
            )
        # acme-crm carries corvid's mask: no hop is offered for it any more.
        assert b["brightmart"].pending() == []
        assert list(b["acme"].get("acme-crm").mask_set) == ["partners/acme", "partners/corvid"]
        with pytest.raises(ServerError) as refused:
            blind.client("brightmart").create_report(
                PARENT, base=dataset_name("brightmart-crm"), others=[dataset_name("acme-crm")]
            )
        assert refused.value.reason == "DATASET_NOT_MATCHABLE"
        assert refused.value.metadata["dataset_1"] == dataset_name("acme-crm")
        assert "upload them again" in refused.value.message
        b["acme"].upload("acme-web", data["acme-crm"], key=KEYS["acme"])
        assert take_all({p: b[p] for p in ("acme", "brightmart")}) == 1
        report = blind.client("brightmart").create_report(
            PARENT, base=dataset_name("brightmart-crm"), others=[dataset_name("acme-web")]
        )
        assert report.released_count > 0


# Deletion and the log --------------------------------------------------------------------


def test_deleting_a_dataset_being_masked_removes_every_file_and_attempt(
    blind: RunningServer, pool: dict[str, np.ndarray]
) -> None:
    with brands(blind, *BRANDS) as b:
        b["acme"].upload(
            "acme-crm", make_data(np.random.default_rng(13), pool, 60), key=KEYS["acme"]
        )
        b["brightmart"].take(hop_name("acme-crm", "brightmart"))
        b["corvid"].start(hop_name("acme-crm", "corvid"))  # an attempt under way
        b["acme"].datasets.DeleteDataset(
            partner_service_pb2.DeleteDatasetRequest(name=dataset_name("acme-crm")), timeout=30
        )
        assert b["corvid"].pending() == []
        # The retention sweep removes a masked dataset the same way.
        b["brightmart"].upload(
            "brightmart-crm", make_data(np.random.default_rng(15), pool, 60), key=KEYS["brightmart"]
        )
        b["acme"].take(hop_name("brightmart-crm", "acme"))
        room = blind.clean_room
        expired = replace(room.config.collaborations[COLLABORATION], retention_days=1)
        config = replace(room.config, collaborations={COLLABORATION: expired})
        later = datetime.now(UTC) + timedelta(days=2)
        assert len(sweep(config, room.datasets, room.audit_log, now=later)) == 1
    assert files_under(blind.data_dir / "datasets") == []
    assert files_under(blind.data_dir / "tmp") == []
    with sqlite3.connect(blind.data_dir / DATABASE_FILE) as db:
        for table in ("dataset_masking", "masking_attempts"):
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,)


def test_every_masking_call_is_in_the_query_log_without_an_element(
    blind: RunningServer, pool: dict[str, np.ndarray]
) -> None:
    data = make_data(np.random.default_rng(14), pool, 60)
    with brands(blind, *BRANDS) as b:
        b["acme"].upload("acme-crm", data, key=KEYS["acme"])
        name = hop_name("acme-crm", "brightmart")
        b["brightmart"].pending()
        attempt, rows = b["brightmart"].start(name)
        masked = mask(rows, KEYS["brightmart"])
        b["brightmart"].complete(name, attempt.attempt_id, masked)
        with pytest.raises(grpc.RpcError):
            b["corvid"].start(name)  # another brand's hop
    methods = "/cleanroom.v1.MaskingService/"
    events = [e for e in blind.events() if e.method.startswith(methods)]
    assert [(e.method.removeprefix(methods), e.caller, e.outcome.status_code) for e in events] == [
        ("ListMaskingHops", "partners/brightmart", "OK"),
        ("StartMaskingHop", "partners/brightmart", "OK"),
        ("CompleteMaskingHop", "partners/brightmart", "OK"),
        ("StartMaskingHop", "partners/corvid", "PERMISSION_DENIED"),
    ]
    start, complete = events[1], events[2]
    assert start.resources == [name]
    assert start.request_summary["attempt_id"] == attempt.attempt_id
    assert start.request_summary["rows"] == "10-99"
    assert complete.request_summary["attempt_id"] == attempt.attempt_id
    assert complete.request_summary["dataset_matchable"] is False
    upload = blind.events("UploadDataset")[0]
    assert upload.request_summary["matching"] == "double_blind"
    log = b"".join(e.entry() for e in blind.events())
    values = [
        v for t in TYPES for v in rows.column(t).to_pylist() + masked.column(t).to_pylist() if v
    ]
    values += [d for t in TYPES for d in data.digests[t] if d]
    for value in values:
        assert value.hex().encode() not in log
        assert value not in log


# Hostile requests ------------------------------------------------------------------------

HOSTILE = (
    "", "collaborations/spring-launch/datasets/acme-crm/maskingHops/", "../../etc/passwd",
    "collaborations/spring-launch/datasets/acme-crm/maskingHops/brightmart/x",
    "collaborations/spring-launch/datasets/' OR 1=1 --/maskingHops/brightmart",
    "collaborations/spring-launch/datasets/acme-crm/maskingHops/BRIGHTMART",
    "collaborations/spring-launch/datasets/acme-crm\x00/maskingHops/brightmart",
    "collaborations/spring-launch/datasets/acme-crm/maskingHops/" + "b" * 5000,
)  # fmt: skip


def test_hostile_masking_requests_are_refused_with_a_reason_and_logged(
    blind: RunningServer, pool: dict[str, np.ndarray]
) -> None:
    with brands(blind, "acme", "brightmart") as b:
        b["acme"].upload(
            "acme-crm", make_data(np.random.default_rng(16), pool, 40), key=KEYS["acme"]
        )
        before = event_count(blind)
        refusals = []
        for name in HOSTILE:
            for call in (
                b["brightmart"].start,
                lambda n: b["brightmart"].complete(
                    n, "0" * 32, pa.table({"email": pa.array([None], pa.binary(32))})
                ),
                lambda n: b["brightmart"].hops.ListMaskingHops(
                    masking_service_pb2.ListMaskingHopsRequest(parent=n[:60]), timeout=30
                ),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call(name)
                refusals.append((refused.value.code(), error_info(refused.value).reason))
        name = hop_name("acme-crm", "brightmart")
        attempt, _ = b["brightmart"].start(name)
        header = masking_service_pb2.MaskingHopResult(
            name=name, attempt_id=attempt.attempt_id, row_count=40, checksum="0" * 64
        )
        for payload in (b"not arrow", b"\xff" * 64):
            messages = [
                masking_service_pb2.CompleteMaskingHopRequest(result=header),
                masking_service_pb2.CompleteMaskingHopRequest(record_batches=payload),
            ]
            with pytest.raises(grpc.RpcError) as refused:
                b["brightmart"].hops.CompleteMaskingHop(iter(messages), timeout=30)
            refusals.append((refused.value.code(), error_info(refused.value).reason))
        garbage = b"\x0a\x02\xc3\x28"  # field 1: a string that is not UTF-8
        listing = b["brightmart"].channel.unary_unary(
            "/cleanroom.v1.MaskingService/ListMaskingHops"
        )
        starting = b["brightmart"].channel.unary_stream(
            "/cleanroom.v1.MaskingService/StartMaskingHop"
        )
        for send in (
            lambda: listing(garbage, timeout=30),
            lambda: list(starting(garbage, timeout=30)),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                send()
            refusals.append((refused.value.code(), error_info(refused.value).reason))
    codes = {code for code, _ in refusals}
    assert codes <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED}
    assert all(REASON.fullmatch(reason) for _, reason in refusals)
    assert event_count(blind) - before == len(refusals) + 1  # one each, and the good start


REASON = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")


def event_count(server: RunningServer) -> int:
    """Events in the collaboration's log and in the server log (calls naming no room)."""
    server_log = server.clean_room.audit_log.events(
        SERVER_LOG, AuditFilter(), after=-1, limit=1_000_000
    )
    return len(server.events()) + len(server_log)


def test_a_cancelled_completion_applies_nothing_and_leaves_nothing(
    blind: RunningServer, pool: dict[str, np.ndarray]
) -> None:
    """Every row and the right checksum sent, but the stream is cancelled, never half-closed."""
    with brands(blind, "acme", "brightmart") as b:
        b["acme"].upload(
            "acme-crm", make_data(np.random.default_rng(17), pool, 60), key=KEYS["acme"]
        )
        name = hop_name("acme-crm", "brightmart")
        attempt, rows = b["brightmart"].start(name)
        masked = mask(rows, KEYS["brightmart"])
        chunk = ipc_chunk(masked.combine_chunks().to_batches()[0])
        header = masking_service_pb2.MaskingHopResult(
            name=name,
            attempt_id=attempt.attempt_id,
            row_count=masked.num_rows,
            checksum=hashlib.sha256(chunk).hexdigest(),
        )
        files = files_under(blind.data_dir / "datasets")
        for _ in range(3):
            release = threading.Event()

            def requests() -> Iterator[masking_service_pb2.CompleteMaskingHopRequest]:
                yield masking_service_pb2.CompleteMaskingHopRequest(result=header)
                yield masking_service_pb2.CompleteMaskingHopRequest(record_batches=chunk)
                release.wait(30)  # noqa: B023 - the stream stays open until the cancel

            before = completions(blind)
            future = b["brightmart"].hops.CompleteMaskingHop.future(requests(), timeout=30)
            try:
                future.initial_metadata()  # the server's handler runs: it sent its limit
                assert future.cancel()
                deadline = time.monotonic() + 30
                while len(completions(blind)) == len(before):
                    assert time.monotonic() < deadline, "no CompleteMaskingHop event"
                    time.sleep(0.01)
            finally:
                release.set()
            # In the collaboration's log, or the server's if it came before the header.
            seen = {(e.log, e.index) for e in before}
            (event,) = [e for e in completions(blind) if (e.log, e.index) not in seen]
            assert event.outcome.status_code == "CANCELLED"
            assert b["brightmart"].pending() == [name]
            assert files_under(blind.data_dir / "datasets") == files
            assert files_under(blind.data_dir / "tmp") == []
        # The attempt is untouched: its result, sent whole, completes it.
        assert b["brightmart"].complete(name, attempt.attempt_id, masked).dataset_matchable is False


def completions(server: RunningServer) -> list[Any]:
    """The CompleteMaskingHop events of the collaboration's log and of the server log."""
    method = AuditFilter(method="CompleteMaskingHop")
    server_log = server.clean_room.audit_log.events(SERVER_LOG, method, after=-1, limit=10_000)
    return server.events("CompleteMaskingHop") + server_log
