"""GetServerInfo tells partners the server's limits; it is authorized and logged like any call."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from cleanroom.audit.log import AuditFilter
from cleanroom.names import SERVER_LOG
from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import server_info_service_pb2, server_info_service_pb2_grpc
from tests.support import running_server

SETTINGS = {
    "max_workers": 6,
    "max_calls_per_partner": 3,
    "max_uploads_per_partner": 1,
    "max_upload_message_bytes": 1024 * 1024,
    "upload_idle_timeout_seconds": 30,
    "max_upload_seconds": 900,
    "min_upload_bytes_per_second": 4096,
}


def test_a_partner_reads_the_configured_limits_and_the_call_is_logged(
    pki: DemoPki, tmp_path: Path
) -> None:
    with running_server(pki, tmp_path / "data", server=SETTINGS) as server:
        limits = server.client("ledger").server_limits()
        assert limits is not None
        assert limits.max_message_bytes == 1024 * 1024
        assert limits.upload_idle_timeout.seconds == 30
        assert limits.max_upload_duration.seconds == 900
        assert limits.min_upload_bytes_per_second == 4096
        assert (limits.max_calls, limits.max_calls_per_partner) == (6, 3)
        assert limits.max_uploads_per_partner == 1
        assert server.interceptor.drain(10)
        events = server.clean_room.audit_log.events(SERVER_LOG, AuditFilter(), after=-1, limit=100)
        assert [(e.method, e.caller, e.outcome.status_code) for e in events] == [
            ("/cleanroom.v1.ServerInfoService/GetServerInfo", "partners/ledger", "OK")
        ]


def test_a_certificate_of_no_partner_is_refused(pki: DemoPki, tmp_path: Path) -> None:
    with running_server(pki, tmp_path / "data") as server:
        with server.connection("stranger").channel() as channel:
            stub = server_info_service_pb2_grpc.ServerInfoServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetServerInfo(server_info_service_pb2.GetServerInfoRequest(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
