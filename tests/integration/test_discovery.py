"""The standard gRPC health and reflection services, over mutual TLS like every other call."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from cleanroom.audit.log import AuditFilter
from cleanroom.names import SERVER_LOG
from tests.support import RunningServer

SERVICES = (
    "cleanroom.v1.PartnerService",
    "cleanroom.v1.ReportService",
    "cleanroom.v1.AuditService",
)
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    """A mutual TLS channel of a partner that is a member of no collaboration."""
    channel = server.connection("outsider").channel()
    yield channel
    channel.close()


def server_log(server: RunningServer, method: str) -> list[Any]:
    """The server log's events of one method: calls that named no collaboration."""
    return server.clean_room.audit_log.events(
        SERVER_LOG, AuditFilter(method=method), after=-1, limit=1000
    )


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


# Health ----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", *SERVICES])
def test_health_service_answers_serving(
    server: RunningServer, channel: grpc.Channel, service: str
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    # Probes are counted in the metrics, not appended to the signed logs (SPEC section 6).
    assert server_log(server, HEALTH_CHECK) == []


def test_health_check_of_an_unknown_service_is_not_found_and_not_in_the_log(
    server: RunningServer, channel: grpc.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as unknown:
        health.Check(health_pb2.HealthCheckRequest(service="cleanroom.v1.NoService"), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert server_log(server, HEALTH_CHECK) == []


# Reflection ------------------------------------------------------------------------------


def reflect(
    channel: grpc.Channel, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    return list(stub.ServerReflectionInfo(iter(requests), timeout=10))


def test_reflection_lists_the_services(server: RunningServer, channel: grpc.Channel) -> None:
    (response,) = reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in response.list_services_response.service}
    assert set(SERVICES) <= names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert server_log(server, REFLECTION) == []


def test_reflection_returns_a_service_file_descriptor(channel: grpc.Channel) -> None:
    (response,) = reflect(
        channel,
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="cleanroom.v1.PartnerService"
        ),
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    by_name = {f.name: f for f in files}
    partner_service = by_name["cleanroom/v1/partner_service.proto"]
    assert partner_service.package == "cleanroom.v1"
    assert "cleanroom/v1/dataset.proto" in partner_service.dependency
    (service,) = partner_service.service
    assert service.name == "PartnerService"
    assert {m.name: (m.client_streaming, m.server_streaming) for m in service.method} == {
        "UploadDataset": (True, False),
        "GetDataset": (False, False),
        "ListDatasets": (False, False),
        "DeleteDataset": (False, False),
        "ListSharedDatasets": (False, False),
    }


class CountingInterceptor(grpc.StreamStreamClientInterceptor):
    """Counts the stream-stream calls made through a channel."""

    def __init__(self) -> None:
        self.calls = 0

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        self.calls += 1
        return continuation(client_call_details, request_iterator)


def test_reflection_descriptor_database_resolves_every_service(
    server: RunningServer, channel: grpc.Channel
) -> None:
    counter = CountingInterceptor()
    database = ProtoReflectionDescriptorDatabase(grpc.intercept_channel(channel, counter))
    assert set(SERVICES) <= set(database.get_services())
    for service in SERVICES:
        described = database.FindFileContainingSymbol(service)
        assert described.package == "cleanroom.v1"
        assert service.rsplit(".", 1)[1] in {s.name for s in described.service}
    # The database reads one response per call and leaves the call to end on its own:
    # each ends, and each is counted once (in the metrics, not the signed logs).
    assert counter.calls >= 1 + len(SERVICES)

    def counted() -> float:
        return sum(
            sample.value
            for family in server.metrics.registry.collect()
            for sample in family.samples
            if sample.name == "cleanroom_calls_total" and sample.labels["method"] == REFLECTION
        )

    wait_for(lambda: counted() >= counter.calls, "every reflection call")
    assert counted() == counter.calls
    assert server_log(server, REFLECTION) == []
