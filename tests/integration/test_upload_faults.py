"""Client faults: a stalled upload is dropped after the idle timeout, a deadline ends an
upload cleanly, a stream far larger than declared is refused early; nothing is left."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import partner_service_pb2_grpc
from tests.integration.test_uploads import (
    chunk_message,
    digest_batch,
    error_info,
    header_message,
    ipc_chunk,
    upload_stream,
)
from tests.support import COLLABORATION, files_under, running_server

PARENT = f"collaborations/{COLLABORATION}"
IDLE = 0.5


def nothing_left(data_dir: Path) -> bool:
    return files_under(data_dir / "tmp") == [] and files_under(data_dir / "datasets") == []


def test_a_stalled_upload_is_dropped_and_frees_everything(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    chunk = ipc_chunk(digest_batch(rng, 100))
    release = threading.Event()

    def stalls() -> Iterator[object]:
        yield header_message("acme-stalled", row_count=1000, checksum="0" * 64)
        yield chunk_message(chunk)
        release.wait(30)  # the client goes quiet, far longer than the idle timeout

    with running_server(
        pki, tmp_path / "data", server={"upload_idle_timeout_seconds": IDLE}
    ) as server:
        stub = partner_service_pb2_grpc.PartnerServiceStub(server.connection("acme").channel())
        try:
            with pytest.raises(grpc.RpcError) as dropped:
                stub.UploadDataset(stalls(), timeout=20)
        finally:
            release.set()
        assert dropped.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert error_info(dropped.value).reason == "UPLOAD_IDLE_TIMEOUT"  # the client is told
        assert server.interceptor.drain(10)
        (event,) = server.events("UploadDataset")
        assert event.outcome.reason == "UPLOAD_IDLE_TIMEOUT"
        assert nothing_left(server.data_dir)
        assert list(server.client("acme").list_datasets(PARENT)) == []


def test_a_client_deadline_ends_the_upload_and_leaves_nothing(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    chunk = ipc_chunk(digest_batch(rng, 100))
    release = threading.Event()

    def slow() -> Iterator[object]:
        yield header_message("acme-late", row_count=1000, checksum="0" * 64)
        yield chunk_message(chunk)
        release.wait(30)

    with running_server(pki, tmp_path / "data") as server:
        stub = partner_service_pb2_grpc.PartnerServiceStub(server.connection("acme").channel())
        try:
            with pytest.raises(grpc.RpcError) as late:
                stub.UploadDataset(slow(), timeout=0.5)
        finally:
            release.set()
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert server.interceptor.drain(10)
        (event,) = server.events("UploadDataset")
        assert event.outcome.status_code in {"CANCELLED", "DEADLINE_EXCEEDED"}
        assert nothing_left(server.data_dir)


def test_a_stream_far_larger_than_declared_is_refused_at_once(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    chunks = [ipc_chunk(digest_batch(rng, 5000)) for _ in range(3)]
    sent = []

    def counted() -> Iterator[object]:
        for message in upload_stream("acme-huge", chunks * 40, row_count=10):
            sent.append(message)
            yield message

    with running_server(pki, tmp_path / "data") as server:
        stub = partner_service_pb2_grpc.PartnerServiceStub(server.connection("acme").channel())
        with pytest.raises(grpc.RpcError) as refused:
            stub.UploadDataset(counted(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(refused.value).reason == "ROW_COUNT_MISMATCH"
        assert len(sent) < 40  # refused at the first chunk past the declared rows, not at the end
        assert server.interceptor.drain(10)
        assert nothing_left(server.data_dir)


def trickled(dataset_id: str, stop: threading.Event) -> Iterator[object]:
    """An upload that sends a small chunk every 0.05 s: never idle, but slow."""
    rng = np.random.default_rng(4)
    yield header_message(dataset_id, row_count=1_000_000, checksum="0" * 64)
    while not stop.wait(0.05):  # the client's pace
        yield chunk_message(ipc_chunk(digest_batch(rng, 1)))


@pytest.mark.parametrize(
    ("settings", "reason", "limit_key"),
    [
        (
            {"upload_idle_timeout_seconds": IDLE, "min_upload_bytes_per_second": 1 << 20},
            "UPLOAD_TOO_SLOW",
            "min_upload_bytes_per_second",
        ),
        (
            {
                "upload_idle_timeout_seconds": IDLE,
                "min_upload_bytes_per_second": 0,
                "max_upload_seconds": 1.0,
            },
            "UPLOAD_TOO_LONG",
            "max_upload_seconds",
        ),
    ],
    ids=["too-slow", "too-long"],
)
def test_a_trickling_upload_is_dropped_with_its_reason(
    pki: DemoPki, tmp_path: Path, settings: dict[str, float], reason: str, limit_key: str
) -> None:
    stop = threading.Event()
    with running_server(pki, tmp_path / "data", server=settings) as server:
        stub = partner_service_pb2_grpc.PartnerServiceStub(server.connection("acme").channel())
        try:
            with pytest.raises(grpc.RpcError) as dropped:
                stub.UploadDataset(trickled("acme-trickle", stop), timeout=30)
        finally:
            stop.set()
        assert dropped.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        info = error_info(dropped.value)
        assert info.reason == reason
        assert limit_key in info.metadata
        assert server.interceptor.drain(10)
        (event,) = server.events("UploadDataset")
        assert event.outcome.reason == reason
        assert nothing_left(server.data_dir)
