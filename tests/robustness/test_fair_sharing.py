"""One partner cannot deny service to the others, and every limit tells the client its reason.

Against the real server in its own process (`python -m cleanroom serve`, mutual TLS on
loopback) with three workers: a partner that trickles eight uploads gets two of them, and
another partner's calls and the health check are still answered; a stalled upload and an
oversized message reach the client as statuses with an ErrorInfo that names the limit.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from pyarrow import ipc

from cleanroom.audit.log import AuditFilter
from cleanroom.names import SERVER_LOG
from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import partner_service_pb2, partner_service_pb2_grpc
from partners.client import _map_rpc_error
from partners.errors import LimitError
from tests.server_process import (
    ServerProcess,
    serve_command,
    server_process,
    write_server_config,
)
from tests.support import (
    COLLABORATION,
    KCV,
    RunningServer,
    digest_array,
    random_digests,
    running_server,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
WORKERS = 3
IDLE_SECONDS = 2.0
TRICKLE_SECONDS = 0.2  # far more often than the idle timeout: never idle
MESSAGE_LIMIT = 1024 * 1024  # below the toolkit's usual 2 MiB chunks
SCHEMA = pa.schema([pa.field("email", pa.binary(32))])
WAIT = 60.0


@pytest.fixture(scope="module")
def server(pki: DemoPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    settings = {
        "max_workers": WORKERS,
        "upload_idle_timeout_seconds": IDLE_SECONDS,
        "max_upload_message_bytes": MESSAGE_LIMIT,
        # The trickles send far below the default minimum rate: these tests are about the
        # call slots, so a loaded machine must not end them for their rate first.
        "min_upload_bytes_per_second": 0,
    }
    with server_process(pki, tmp_path_factory.mktemp("fair"), settings) as running:
        yield running


def one_row() -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, SCHEMA) as writer:
        writer.write_batch(pa.record_batch([pa.array([os.urandom(32)], pa.binary(32))], SCHEMA))
    return sink.getvalue().to_pybytes()


def header(dataset_id: str, rows: int = 1_000_000) -> partner_service_pb2.UploadDatasetRequest:
    return partner_service_pb2.UploadDatasetRequest(
        header=partner_service_pb2.DatasetUploadHeader(
            parent=PARENT,
            dataset_id=dataset_id,
            identifier_types=["email"],
            key_check_value=KCV,
            row_count=rows,
            checksum="0" * 64,
        )
    )


def error_info(error: Any) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code().name} without ErrorInfo: {error.details()}"
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert info.domain == "cleanroom.v1"
    return info


class Trickle:
    """Uploads that each send one row every TRICKLE_SECONDS until stopped."""

    def __init__(self, server: ServerProcess | RunningServer, partner: str, count: int) -> None:
        self.stop = threading.Event()
        self.ended = threading.Condition()
        self.channel = server.connection(partner).channel()
        stub = partner_service_pb2_grpc.PartnerServiceStub(self.channel)
        self.calls = []
        for i in range(count):
            call = stub.UploadDataset.future(self.messages(f"{partner}-trickle-{i}"), timeout=WAIT)
            call.add_done_callback(self.notify)
            self.calls.append(call)

    def messages(self, dataset_id: str) -> Iterator[partner_service_pb2.UploadDatasetRequest]:
        yield header(dataset_id)
        while not self.stop.wait(TRICKLE_SECONDS):  # the client's pace, not a wait for state
            yield partner_service_pb2.UploadDatasetRequest(record_batches=one_row())

    def notify(self, _call: Any) -> None:
        with self.ended:
            self.ended.notify_all()

    def refused(self) -> list[Any]:
        return [call.exception() for call in self.calls if call.done()]

    def wait_refused(self, count: int) -> list[Any]:
        """The refusals, once `count` of the uploads have ended (or WAIT seconds passed)."""
        with self.ended:
            self.ended.wait_for(lambda: len(self.refused()) >= count, WAIT)
        return self.refused()

    def close(self) -> None:
        self.stop.set()
        for call in self.calls:
            call.exception()  # each ends: short of its declared rows, or refused before
        self.channel.close()


def test_a_trickling_partner_does_not_stop_other_partners_or_the_health_check(
    server: ServerProcess,
) -> None:
    trickle = Trickle(server, "acme", 8)
    try:
        refused = trickle.wait_refused(6)  # the two allowed keep trickling
        with server.client("brightmart", timeout=30) as brightmart:
            for _ in range(3):
                assert list(brightmart.list_datasets(PARENT)) == []
        with server.connection("corvid").channel() as channel:
            assert server.health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert len(refused) == 6, [e.details() for e in refused]
        assert sum(not call.done() for call in trickle.calls) == 2  # still trickling
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
            info = error_info(error)
            assert info.reason == "TOO_MANY_UPLOADS"
            assert info.metadata["max_uploads_per_partner"] == "2"
            assert isinstance(_map_rpc_error(error), LimitError)
    finally:
        trickle.close()


def test_the_health_check_is_answered_when_every_worker_is_busy(server: ServerProcess) -> None:
    acme = Trickle(server, "acme", 2)
    brightmart = Trickle(server, "brightmart", 3)
    try:
        # Of brightmart's three, the second and third find the server's workers taken.
        (first, second) = brightmart.wait_refused(2)
        assert {error_info(first).reason, error_info(second).reason} == {"SERVER_BUSY"}
        assert acme.refused() == []
        with server.connection("corvid").channel() as channel:
            for _ in range(3):
                assert server.health(channel) == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            (answer,) = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=WAIT
            )
            services = {s.name for s in answer.list_services_response.service}
            assert "cleanroom.v1.ServerInfoService" in services
            # The clean room's own services are full.
            with server.client("corvid", timeout=WAIT) as corvid, pytest.raises(LimitError) as busy:
                list(corvid.list_datasets(PARENT))
            assert busy.value.reason == "SERVER_BUSY"
    finally:
        acme.close()
        brightmart.close()


def test_a_stalled_upload_reaches_the_client_with_its_reason(server: ServerProcess) -> None:
    release = threading.Event()

    def stalls() -> Iterator[partner_service_pb2.UploadDatasetRequest]:
        yield header("acme-stalls")
        yield partner_service_pb2.UploadDatasetRequest(record_batches=one_row())
        release.wait(WAIT)  # the client goes quiet, far longer than the idle timeout

    with server.connection("acme").channel() as channel:
        stub = partner_service_pb2_grpc.PartnerServiceStub(channel)
        try:
            with pytest.raises(grpc.RpcError) as dropped:
                stub.UploadDataset(stalls(), timeout=WAIT)
        finally:
            release.set()
    error: Any = dropped.value
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
    info = error_info(error)
    assert info.reason == "UPLOAD_IDLE_TIMEOUT"
    assert info.metadata["upload_idle_timeout_seconds"] == f"{IDLE_SECONDS:g}"
    assert isinstance(_map_rpc_error(error), LimitError)
    assert list((server.data_dir / "tmp").iterdir()) == []


def test_a_message_over_the_limit_is_refused_naming_the_limit(server: ServerProcess) -> None:
    oversized = b"\0" * (MESSAGE_LIMIT + 1000)
    messages = [
        header("acme-oversized", rows=10),
        partner_service_pb2.UploadDatasetRequest(record_batches=oversized),
    ]
    with server.connection("acme").channel() as channel:
        stub = partner_service_pb2_grpc.PartnerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.UploadDataset(iter(messages), timeout=WAIT)
    error: Any = refused.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    info = error_info(error)
    assert info.reason == "MESSAGE_TOO_LARGE"
    assert info.metadata["max_upload_message_bytes"] == str(MESSAGE_LIMIT)
    assert str(MESSAGE_LIMIT) in error.details()
    assert isinstance(_map_rpc_error(error), LimitError)


def test_the_toolkit_sizes_its_chunks_to_the_servers_limit(
    server: ServerProcess, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    rows = 30_000  # 1.9 MB of digests: more than one message of the server's limit
    path = write_digest_file(
        tmp_path / "digests.parquet",
        {t: digest_array(random_digests(rng, rows)) for t in ("email", "phone")},
        {"tier": [("gold", "silver", "bronze")[i % 3] for i in range(rows)]},
    )
    sent: list[int] = []
    with server.client("corvid", timeout=WAIT) as client:
        limits = client.server_limits()
        assert limits is not None
        assert limits.max_message_bytes == MESSAGE_LIMIT
        dataset = client.upload(path, dataset_id="corvid-small-messages", progress=sent.append)
    assert dataset.row_count == rows
    assert len(sent) > 1  # it took several chunks, each under the limit


def test_a_second_server_on_the_same_data_directory_says_which_directory(
    server: ServerProcess, tmp_path: Path
) -> None:
    other = write_server_config(server.pki, tmp_path, 0)
    text = other.read_text().replace(str(tmp_path / "data"), str(server.data_dir))
    other.write_text(text)
    result = subprocess.run(
        serve_command(other),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
        env={**os.environ, "COLUMNS": "1000"},  # one line: the path unbroken
    )
    assert result.returncode != 0
    message = result.stderr + result.stdout
    assert f"{server.data_dir}" in message, message
    assert "LOCK" not in message, message
    assert "Traceback" not in message, message


def test_a_partner_past_its_call_limit_is_refused_and_the_others_are_not(
    pki: DemoPki, tmp_path: Path
) -> None:
    settings = {"max_workers": 8, "max_calls_per_partner": 2, "max_uploads_per_partner": 2}
    with running_server(pki, tmp_path / "data", server=settings) as server:
        trickle = Trickle(server, "acme", 3)
        try:
            (third,) = trickle.wait_refused(1)  # the first two hold acme's two call slots
            assert error_info(third).reason == "TOO_MANY_UPLOADS"
            with pytest.raises(LimitError) as refused:
                list(server.client("acme").list_datasets(PARENT))
            assert refused.value.reason == "TOO_MANY_CALLS"
            assert refused.value.metadata["max_calls_per_partner"] == "2"
            assert list(server.client("brightmart").list_datasets(PARENT)) == []
        finally:
            trickle.close()
        assert server.interceptor.drain(10)
        # Refused before the call named its collaboration: in the server's log.
        events = server.clean_room.audit_log.events(SERVER_LOG, AuditFilter(), after=-1, limit=99)
        assert [e.outcome.reason for e in events].count("TOO_MANY_CALLS") == 1
