"""Uploads over the real server: refused input leaves nothing behind, good input round-trips."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pyarrow import ipc

import partners.client
from cleanroom.audit.log import AuditFilter
from cleanroom.names import SERVER_LOG, DatasetName
from cleanroom.privacy.coarse import size_range
from cleanroom.v1 import partner_service_pb2, partner_service_pb2_grpc
from partners.errors import ServerError
from tests.support import (
    COLLABORATION,
    KCV,
    RunningServer,
    dataset_name,
    digest_array,
    files_under,
    random_digests,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
TYPES = ("email", "phone")
POLL_SECONDS = 10.0


# Builders of hand-made upload streams ------------------------------------------------------


def wire_schema(types: Sequence[str] = TYPES, segments: Sequence[str] = ()) -> pa.Schema:
    """The schema every chunk must have: digests as binary(32), then string segments."""
    return pa.schema(
        [pa.field(t, pa.binary(32)) for t in types] + [pa.field(s, pa.string()) for s in segments]
    )


def digest_batch(
    rng: np.random.Generator, rows: int, types: Sequence[str] = TYPES
) -> pa.RecordBatch:
    """A batch of `rows` random digests in every identifier column."""
    return pa.record_batch(
        [digest_array(random_digests(rng, rows)) for _ in types], schema=wire_schema(types)
    )


def ipc_chunk(*batches: pa.RecordBatch, schema: pa.Schema | None = None) -> bytes:
    """One chunk: a whole Arrow IPC stream (schema, then the batches)."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, schema or batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def checksum(chunks: Sequence[bytes]) -> str:
    """The header's checksum: SHA-256 hex of the concatenated chunk bytes."""
    return hashlib.sha256(b"".join(chunks)).hexdigest()


def header_message(
    dataset_id: str,
    *,
    row_count: int,
    checksum: str,
    types: Sequence[str] = TYPES,
    segments: Sequence[str] = (),
    kcv: str = KCV,
) -> partner_service_pb2.UploadDatasetRequest:
    return partner_service_pb2.UploadDatasetRequest(
        header=partner_service_pb2.DatasetUploadHeader(
            parent=PARENT,
            dataset_id=dataset_id,
            identifier_types=list(types),
            segment_columns=list(segments),
            key_check_value=kcv,
            row_count=row_count,
            checksum=checksum,
        )
    )


def chunk_message(payload: bytes) -> partner_service_pb2.UploadDatasetRequest:
    return partner_service_pb2.UploadDatasetRequest(record_batches=payload)


def upload_stream(
    dataset_id: str, chunks: Sequence[bytes], *, row_count: int | None = None, **header: Any
) -> list[partner_service_pb2.UploadDatasetRequest]:
    """A well-formed stream: a header that declares the chunks' rows and checksum, then them."""
    if row_count is None:
        row_count = sum(ipc.open_stream(pa.py_buffer(c)).read_all().num_rows for c in chunks)
    header.setdefault("checksum", checksum(chunks))
    return [
        header_message(dataset_id, row_count=row_count, **header),
        *(chunk_message(c) for c in chunks),
    ]


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The one ErrorInfo of a refused call's google.rpc.Status."""
    status = rpc_status.from_call(error)
    assert status is not None
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return info


# Helpers ---------------------------------------------------------------------------------


@pytest.fixture
def acme_stub(server: RunningServer) -> Iterator[partner_service_pb2_grpc.PartnerServiceStub]:
    """The raw PartnerService stub of acme, over its own mutual TLS channel."""
    channel = server.connection("acme").channel()
    yield partner_service_pb2_grpc.PartnerServiceStub(channel)
    channel.close()


def assert_nothing_stored(server: RunningServer) -> None:
    """No visible dataset (even for the administrator), no scratch file, no dataset file."""
    assert list(server.client("acme").list_datasets(PARENT)) == []
    assert list(server.client("operator").list_datasets(PARENT)) == []
    assert files_under(server.data_dir / "tmp") == []
    assert files_under(server.data_dir / "datasets") == []


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Polls `condition` until it holds, failing after POLL_SECONDS."""
    deadline = time.monotonic() + POLL_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def upload_events(server: RunningServer) -> list[Any]:
    return server.events(method="UploadDataset")


def all_upload_events(server: RunningServer) -> list[Any]:
    """UploadDataset events of the collaboration's log and of the server log (calls that
    named no collaboration)."""
    server_log = server.clean_room.audit_log.events(
        SERVER_LOG, AuditFilter(method="UploadDataset"), after=-1, limit=1000
    )
    return upload_events(server) + server_log


# Header checks ---------------------------------------------------------------------------


def test_key_check_mismatch_is_refused_naming_both_values(
    server: RunningServer, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    other_kcv = "0123456789abcdef"
    assert other_kcv != KCV
    path = write_digest_file(
        tmp_path / "d.parquet", {"email": digest_array(random_digests(rng, 20))}, kcv=other_kcv
    )
    with pytest.raises(ServerError) as refused:
        server.client("acme").upload(path, dataset_id="acme-wrong-key")
    assert (refused.value.code, refused.value.reason) == (
        "FAILED_PRECONDITION",
        "KEY_CHECK_MISMATCH",
    )
    assert other_kcv in refused.value.message
    assert KCV in refused.value.message
    assert refused.value.metadata["key_check_value"] == other_kcv
    assert refused.value.metadata["expected_key_check_value"] == KCV
    assert_nothing_stored(server)
    (event,) = upload_events(server)
    assert (event.outcome.status_code, event.outcome.reason) == (
        "FAILED_PRECONDITION",
        "KEY_CHECK_MISMATCH",
    )


# Values that are not digests -------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_value", "reason"),
    [
        (b"alice@example.com".ljust(32, b" "), "DIGEST_LOOKS_LIKE_TEXT"),
        (bytes(32), "CONSTANT_DIGEST"),
    ],
    ids=["plain-text", "all-zero"],
)
def test_values_that_are_not_digests_are_refused(
    server: RunningServer, tmp_path: Path, bad_value: bytes, reason: str
) -> None:
    rng = np.random.default_rng(2)
    values = [bytes(row) for row in random_digests(rng, 20)]
    values[7] = bad_value
    path = write_digest_file(tmp_path / "d.parquet", {"email": pa.array(values, pa.binary(32))})
    with pytest.raises(ServerError) as refused:
        server.client("acme").upload(path, dataset_id="acme-not-digests")
    assert (refused.value.code, refused.value.reason) == ("INVALID_ARGUMENT", reason)
    assert refused.value.metadata["identifier_type"] == "email"
    # The refusal never echoes the value back.
    assert bad_value.decode("latin-1").strip() not in refused.value.message
    assert_nothing_stored(server)


# Cancelled uploads -----------------------------------------------------------------------

# A cancel races with the server's reading of the stream, so each scenario runs several
# rounds: every round must hold, whichever way the race goes.
CANCEL_ROUNDS = 100


def stream_bytes(batches: Sequence[pa.RecordBatch]) -> int:
    """The size of the server's scratch files once it has written `batches`, at least.

    The server keeps each digest column's bytes as they came, in a file of its own.
    """
    return sum(
        batch.num_rows * 32
        for batch in batches
        for field in batch.schema
        if field.type == pa.binary(32)
    )


def scratch_bytes(server: RunningServer) -> int:
    total = 0
    for path in files_under(server.data_dir / "tmp"):
        with contextlib.suppress(FileNotFoundError):  # removed between listing and stat
            total += path.stat().st_size
    return total


def cancel_before_half_close(
    server: RunningServer,
    messages: Sequence[partner_service_pb2.UploadDatasetRequest],
    batches: Sequence[pa.RecordBatch],
) -> Any:
    """Sends `messages` on a new call and never half-closes it; once the server has written
    every batch to its scratch file, cancels the call. Returns the call's query log event."""
    release = threading.Event()

    def requests() -> Iterator[partner_service_pb2.UploadDatasetRequest]:
        yield from messages
        release.wait(timeout=POLL_SECONDS)  # the stream stays open until the cancel

    before = len(upload_events(server))
    expected = stream_bytes(batches)
    channel = server.connection("acme").channel()
    try:
        future = partner_service_pb2_grpc.PartnerServiceStub(channel).UploadDataset.future(
            requests(), timeout=30
        )
        wait_for(lambda: scratch_bytes(server) >= expected, "the server to write every batch")
        assert len(upload_events(server)) == before  # the call is still under way
        assert future.cancel()
        wait_for(lambda: len(upload_events(server)) > before, "the UploadDataset event")
        assert future.cancelled()
        with pytest.raises(grpc.FutureCancelledError):
            future.result()
    finally:
        release.set()
        channel.close()
    new = upload_events(server)[before:]
    assert len(new) == 1
    return new[0]


def test_cancelled_upload_leaves_nothing_and_is_logged_as_cancelled(
    server: RunningServer,
) -> None:
    rng = np.random.default_rng(3)
    outcomes = []
    for round_ in range(CANCEL_ROUNDS):
        batches = [digest_batch(rng, 100) for _ in range(3)]
        dataset_id = f"acme-cancelled-{round_}"
        # Declares more rows than it sends: the upload is mid-stream when cancelled.
        messages = [
            header_message(dataset_id, row_count=10_000, checksum="0" * 64),
            *(chunk_message(ipc_chunk(b)) for b in batches),
        ]
        event = cancel_before_half_close(server, messages, batches)
        assert event.caller == "partners/acme"
        assert event.resources == [dataset_name(dataset_id)]
        assert event.request_summary["chunks"] == 3
        outcomes.append((event.outcome.status_code, event.outcome.reason))
        assert_nothing_stored(server)
    not_cancelled = [(i, o) for i, o in enumerate(outcomes) if o != ("CANCELLED", "")]
    assert not_cancelled == []


def test_cancelled_upload_is_not_committed_even_with_every_row_sent(
    server: RunningServer,
) -> None:
    """All declared rows and the right checksum arrive, but the client cancels instead of
    half-closing: it never said the stream was complete, so nothing may be committed."""
    rng = np.random.default_rng(9)
    outcomes = []
    for round_ in range(CANCEL_ROUNDS):
        batches = [digest_batch(rng, 100) for _ in range(2)]
        messages = upload_stream(f"acme-unfinished-{round_}", [ipc_chunk(b) for b in batches])
        event = cancel_before_half_close(server, messages, batches)
        outcomes.append((event.outcome.status_code, event.outcome.reason))
    committed = [d.name for d in server.client("operator").list_datasets(PARENT)]
    assert committed == []
    assert files_under(server.data_dir / "datasets") == []
    assert files_under(server.data_dir / "tmp") == []
    not_cancelled = [(i, o) for i, o in enumerate(outcomes) if o != ("CANCELLED", "")]
    assert not_cancelled == []


# Broken streams --------------------------------------------------------------------------


def broken_streams(rng: np.random.Generator) -> dict[str, tuple[list[Any], str]]:
    """Each broken stream and the reason it must be refused with."""
    batch = digest_batch(rng, 20)
    good = ipc_chunk(batch)
    more = ipc_chunk(digest_batch(rng, 5))
    wrong_schema = ipc_chunk(
        pa.record_batch(
            [digest_array(random_digests(rng, 20)), pa.array(["x"] * 20)],
            names=["email", "tier"],
        )
    )
    header = header_message("acme-broken", row_count=20, checksum=checksum([good]))
    return {
        "wrong checksum": (
            upload_stream("acme-broken", [good], checksum=hashlib.sha256(b"other").hexdigest()),
            "CHECKSUM_MISMATCH",
        ),
        "fewer rows": (upload_stream("acme-broken", [good], row_count=25), "ROW_COUNT_MISMATCH"),
        "more rows": (
            upload_stream("acme-broken", [good, more], row_count=20),
            "ROW_COUNT_MISMATCH",
        ),
        "not arrow": (
            upload_stream("acme-broken", [b"this is not an arrow stream"], row_count=20),
            "MALFORMED_RECORD_BATCH",
        ),
        "wrong schema": (
            upload_stream("acme-broken", [wrong_schema], row_count=20),
            "SCHEMA_MISMATCH",
        ),
        "no header": ([chunk_message(good)], "HEADER_REQUIRED"),
        "empty stream": ([], "EMPTY_UPLOAD"),
        "second header": ([header, chunk_message(good), header], "UNEXPECTED_HEADER"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong checksum",
        "fewer rows",
        "more rows",
        "not arrow",
        "wrong schema",
        "no header",
        "empty stream",
        "second header",
    ],
)
def test_broken_upload_is_refused_and_leaves_nothing(
    server: RunningServer, acme_stub: partner_service_pb2_grpc.PartnerServiceStub, case: str
) -> None:
    messages, reason = broken_streams(np.random.default_rng(4))[case]
    with pytest.raises(grpc.RpcError) as refused:
        acme_stub.UploadDataset(iter(messages), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(refused.value)
    assert (info.reason, info.domain) == (reason, "cleanroom.v1")
    assert "field" in info.metadata
    assert_nothing_stored(server)
    (event,) = all_upload_events(server)
    assert (event.outcome.status_code, event.outcome.reason) == ("INVALID_ARGUMENT", reason)


# Names, deduplication, round trips --------------------------------------------------------


def test_reupload_of_an_existing_id_is_refused_until_deleted(
    server: RunningServer, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    first = write_digest_file(
        tmp_path / "1.parquet", {"email": digest_array(random_digests(rng, 30))}
    )
    second = write_digest_file(
        tmp_path / "2.parquet", {"phone": digest_array(random_digests(rng, 40))}
    )
    acme = server.client("acme")
    created = acme.upload(first, dataset_id="acme-list")
    with pytest.raises(ServerError) as refused:
        acme.upload(second, dataset_id="acme-list")
    assert (refused.value.code, refused.value.reason) == ("ALREADY_EXISTS", "DATASET_EXISTS")
    assert acme.get_dataset(dataset_name("acme-list")) == created
    assert len(files_under(server.data_dir / "datasets")) == 1

    acme.delete_dataset(dataset_name("acme-list"))
    assert files_under(server.data_dir / "datasets") == []
    again = acme.upload(second, dataset_id="acme-list")
    assert again.name == dataset_name("acme-list")
    assert (list(again.identifier_types), again.row_count) == (["phone"], 40)
    assert list(acme.list_datasets(PARENT)) == [again]
    assert len(files_under(server.data_dir / "datasets")) == 1


def test_repeated_digests_are_dropped_and_rows_kept(server: RunningServer, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    emails = random_digests(rng, 30)
    emails[20:25] = emails[0:5]  # five repeats of earlier rows
    emails[25] = emails[3]  # and one more repeat of the same digest
    phones = random_digests(rng, 30)
    phones[29] = phones[10]
    path = write_digest_file(
        tmp_path / "d.parquet",
        {"email": digest_array(emails), "phone": digest_array(phones)},
    )
    dataset = server.client("acme").upload(path, dataset_id="acme-repeats")
    assert dataset.row_count == 30
    stats = {
        s.identifier_type: (s.present_count, s.duplicate_count) for s in dataset.identifier_stats
    }
    assert stats == {"email": (24, 6), "phone": (29, 1)}

    # What the server stored: every row, with each repeated digest gone from its later rows
    # (in the order the matcher wants, sorted by digest: the order of rows means nothing).
    record = server.clean_room.catalog.dataset(DatasetName.parse(dataset.name))
    assert record is not None
    stored = server.clean_room.files.open(record.file_name)
    assert stored.num_rows == 30
    expected = [
        (
            None if row in range(20, 26) else bytes(emails[row]),
            None if row == 29 else bytes(phones[row]),
        )
        for row in range(30)
    ]
    stored_rows = list(
        zip(stored.column("email").to_pylist(), stored.column("phone").to_pylist(), strict=True)
    )
    assert sorted(stored_rows, key=repr) == sorted(expected, key=repr)


def test_multi_chunk_upload_round_trips(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    rows = 20_000
    path = write_digest_file(
        tmp_path / "d.parquet",
        {
            "email": digest_array(random_digests(rng, rows)),
            "maid": digest_array(random_digests(rng, rows)),
        },
        {"tier": [("gold", "silver", None)[i % 3] for i in range(rows)]},
    )
    monkeypatch.setattr(partners.client, "CHUNK_BYTES", 64 * 1024)
    passes: list[list[bytes]] = []
    real_chunks = partners.client._chunks

    def recording_chunks(table: pa.Table, limit: int) -> Iterator[tuple[int, bytes]]:
        passes.append([])
        for count, chunk in real_chunks(table, limit):
            passes[-1].append(chunk)
            yield count, chunk

    monkeypatch.setattr(partners.client, "_chunks", recording_chunks)
    progress: list[int] = []
    acme = server.client("acme")
    dataset = acme.upload(path, dataset_id="acme-big", progress=progress.append)

    checksummed, sent = passes  # the client reads the table twice: to hash, then to send
    assert checksummed == sent
    assert len(sent) > 5
    assert len(progress) == len(sent)
    assert sum(progress) == rows
    assert dataset.row_count == rows
    assert dataset.checksum == checksum(sent)
    assert dataset.name == dataset_name("acme-big")
    assert dataset.owner == "partners/acme"
    assert list(dataset.identifier_types) == ["email", "maid"]
    assert list(dataset.segment_columns) == ["tier"]
    assert dataset.key_check_value == KCV
    assert [
        (s.identifier_type, s.present_count, s.duplicate_count) for s in dataset.identifier_stats
    ] == [
        ("email", rows, 0),
        ("maid", rows, 0),
    ]
    assert acme.get_dataset(dataset.name) == dataset
    assert list(acme.list_datasets(PARENT)) == [dataset]
    assert files_under(server.data_dir / "tmp") == []
    record = server.clean_room.catalog.dataset(DatasetName.parse(dataset.name))
    assert record is not None
    stored = server.clean_room.files.open(record.file_name)
    # The same rows (the server may store them in another order, and index columns beside).
    uploaded = pq.read_table(path)
    kept = stored.select(uploaded.column_names)
    assert kept.sort_by("email").equals(uploaded.cast(kept.schema).sort_by("email"))
    (event,) = upload_events(server)
    assert event.outcome.status_code == "OK"
    assert event.request_summary["chunks"] == len(sent)
    assert event.request_summary["rows"] == size_range(rows)  # coarse: auditors read it


def test_hand_made_multi_chunk_stream_round_trips(
    server: RunningServer, acme_stub: partner_service_pb2_grpc.PartnerServiceStub
) -> None:
    rng = np.random.default_rng(8)
    schema = wire_schema(("email",), ("tier",))
    chunks = []
    for size in (100, 1, 250, 49):
        batch = pa.record_batch(
            [digest_array(random_digests(rng, size)), pa.array(["a"] * size)], schema=schema
        )
        # Some chunks carry several batches of one IPC stream.
        chunks.append(ipc_chunk(batch.slice(0, size // 2), batch.slice(size // 2), schema=schema))
    messages = upload_stream("acme-hand-made", chunks, types=("email",), segments=("tier",))
    response = acme_stub.UploadDataset(iter(messages), timeout=30)
    dataset = response.dataset
    assert dataset.row_count == 400
    assert dataset.checksum == checksum(chunks)
    assert server.client("acme").get_dataset(dataset.name) == dataset
