"""Bounded work per byte: a small upload cannot make the server inflate, allocate or write
much more than it received. Measured from outside, on a server in its own process: its
peak resident memory (VmHWM) and the bytes it wrote (wchar), before and after each call."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pyarrow import ipc

from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import partner_service_pb2, partner_service_pb2_grpc
from tests.server_process import ServerProcess, server_process
from tests.support import COLLABORATION, KCV

PARENT = f"collaborations/{COLLABORATION}"
BOMB_ROWS = 4_000_000  # 128 MiB of digests once inflated
SCHEMA = pa.schema([pa.field("email", pa.binary(32))])
# What the server may grow by for one refused chunk: far below what the bomb inflates to.
MEMORY_GROWTH_ALLOWED = 24 * 1024 * 1024
WRITES_ALLOWED = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def server(pki: DemoPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(pki, tmp_path_factory.mktemp("bombs")) as running:
        yield running


def one_digest_many_times(rows: int) -> pa.RecordBatch:
    digest = hashlib.sha256(b"the same customer").digest()
    column = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), rows, [None, pa.py_buffer(digest * rows)]
    )
    return pa.record_batch([column], schema=SCHEMA)


def stream(batch: pa.RecordBatch, compression: str | None) -> bytes:
    sink = pa.BufferOutputStream()
    options = ipc.IpcWriteOptions(compression=compression)
    with ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def upload(server: ServerProcess, dataset_id: str, payload: bytes, rows: int) -> Any:
    messages = [
        partner_service_pb2.UploadDatasetRequest(
            header=partner_service_pb2.DatasetUploadHeader(
                parent=PARENT,
                dataset_id=dataset_id,
                identifier_types=["email"],
                key_check_value=KCV,
                row_count=rows,
                checksum=hashlib.sha256(payload).hexdigest(),
            )
        ),
        partner_service_pb2.UploadDatasetRequest(record_batches=payload),
    ]
    with server.connection("acme").channel() as channel:
        stub = partner_service_pb2_grpc.PartnerServiceStub(channel)
        try:
            stub.UploadDataset(iter(messages), timeout=120)
        except grpc.RpcError as error:
            return error
    return None


def reason(error: Any) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code().name} without ErrorInfo: {error.details()}"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info.reason


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_a_compressed_bomb_is_refused_before_it_inflates(
    server: ServerProcess, compression: str
) -> None:
    payload = stream(one_digest_many_times(BOMB_ROWS), compression)
    inflated = BOMB_ROWS * 32
    assert len(payload) * 100 < inflated  # a bomb: over a hundred times smaller on the wire
    memory, written = server.status("VmHWM"), server.io("wchar")
    error = upload(server, f"acme-bomb-{compression}", payload, BOMB_ROWS)
    memory_growth = server.status("VmHWM") - memory
    writes = server.io("wchar") - written
    assert memory_growth < MEMORY_GROWTH_ALLOWED, (
        f"peak memory grew by {memory_growth / 2**20:.0f} MiB for a {len(payload):,}-byte chunk"
    )
    assert writes < WRITES_ALLOWED, f"the server wrote {writes / 2**20:.0f} MiB"
    assert error is not None, "the bomb was stored"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert reason(error) == "COMPRESSED_RECORD_BATCH"
    assert list((server.data_dir / "tmp").iterdir()) == []


def test_a_batch_declaring_more_rows_than_its_body_holds_is_refused(
    server: ServerProcess,
) -> None:
    good = stream(one_digest_many_times(8), None)
    # The record batch message's `length` (int64) follows its vtable; find it by value.
    length_at = good.index((8).to_bytes(8, "little"))
    lying = good[:length_at] + (10**12).to_bytes(8, "little") + good[length_at + 8 :]
    error = upload(server, "acme-lying-length", lying, 8)
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert reason(error) == "RECORD_BATCH_LENGTH_MISMATCH"


def test_a_dictionary_batch_after_a_plain_schema_is_refused(server: ServerProcess) -> None:
    labels = pa.schema([pa.field("tier", pa.dictionary(pa.int8(), pa.string()))])
    other = stream(pa.record_batch([pa.array(["a", "b"]).dictionary_encode()], labels), None)
    dictionary = list(ipc.MessageReader.open_stream(pa.py_buffer(other)))[1]
    first, *rest = list(ipc.MessageReader.open_stream(pa.py_buffer(stream(one_row(), None))))
    spliced = b"".join(m.serialize().to_pybytes() for m in [first, dictionary, *rest])
    error = upload(server, "acme-dictionary-spliced", spliced + b"\xff\xff\xff\xff\0\0\0\0", 1)
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert reason(error) == "UNEXPECTED_IPC_MESSAGE"


def one_row() -> pa.RecordBatch:
    return pa.record_batch([pa.array([os.urandom(32)], pa.binary(32))], schema=SCHEMA)


def test_an_uncompressed_chunk_of_the_same_rows_is_still_accepted(
    server: ServerProcess, tmp_path: Path
) -> None:
    rows = 1000
    batch = pa.record_batch(
        [pa.array([os.urandom(32) for _ in range(rows)], pa.binary(32))], schema=SCHEMA
    )
    payload = stream(batch, None)
    with server.connection("acme").channel() as channel:
        stub = partner_service_pb2_grpc.PartnerServiceStub(channel)
        response = stub.UploadDataset(
            iter(
                [
                    partner_service_pb2.UploadDatasetRequest(
                        header=partner_service_pb2.DatasetUploadHeader(
                            parent=PARENT,
                            dataset_id="acme-plain",
                            identifier_types=["email"],
                            key_check_value=KCV,
                            row_count=rows,
                            checksum=hashlib.sha256(payload).hexdigest(),
                        )
                    ),
                    partner_service_pb2.UploadDatasetRequest(record_batches=payload),
                ]
            ),
            timeout=60,
        )
    assert response.dataset.row_count == rows
