"""The gRPC server: mutual TLS, the three services, health and reflection, graceful stop."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cleanroom.config import Config, ServerConfig, TlsConfig
from cleanroom.errors import ConfigError
from cleanroom.service.audit_servicer import AuditServicer
from cleanroom.service.calls import CallInterceptor, CallLimits
from cleanroom.service.idle import UploadPace
from cleanroom.service.partner_servicer import PartnerServicer
from cleanroom.service.report_servicer import ReportServicer
from cleanroom.service.server_info_servicer import ServerInfoServicer
from cleanroom.tls.files import read_tls
from cleanroom.usecases.clean_room import CleanRoom
from cleanroom.usecases.retention import RetentionSweeper, sweep
from cleanroom.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    partner_service_pb2,
    partner_service_pb2_grpc,
    report_service_pb2,
    report_service_pb2_grpc,
    server_info_service_pb2,
    server_info_service_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    partner_service_pb2.DESCRIPTOR.services_by_name["PartnerService"].full_name,
    report_service_pb2.DESCRIPTOR.services_by_name["ReportService"].full_name,
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    server_info_service_pb2.DESCRIPTOR.services_by_name["ServerInfoService"].full_name,
)
GRACE_SECONDS = 10.0
SPARE_THREADS = 4


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """TLS that requires a client certificate signed by the configured CA."""
    material = read_tls(tls)
    return grpc.ssl_server_credentials(
        [(material.private_key, material.certificate)],
        root_certificates=material.client_ca,
        require_client_auth=True,
    )


def audit_interceptor(clean_room: CleanRoom) -> CallInterceptor:
    """The interceptor that identifies, limits and audits every call of a server."""
    config = clean_room.config.server
    return CallInterceptor(
        clean_room.access,
        clean_room.audit_log,
        max_calls=config.max_workers,
        limits=CallLimits(
            max_calls_per_partner=config.max_calls_per_partner,
            max_uploads_per_partner=config.max_uploads_per_partner,
            max_message_bytes=config.max_upload_message_bytes,
        ),
    )


def transport_message_bytes(limit: int) -> int:
    """The message size gRPC itself accepts: somewhat above the configured limit.

    So a message a little too large reaches the handler, which refuses it with a reason
    (MESSAGE_TOO_LARGE) instead of gRPC's bare RESOURCE_EXHAUSTED.
    """
    return limit + max(64 * 1024, limit // 4)


def upload_pace(config: ServerConfig) -> UploadPace:
    """The time limits of an upload, from the configuration."""
    return UploadPace(
        idle_timeout=config.upload_idle_timeout_seconds,
        max_duration=config.max_upload_seconds,
        min_bytes_per_second=config.min_upload_bytes_per_second,
    )


def build_server(
    clean_room: CleanRoom,
    *,
    listen: str | None = None,
    interceptor: CallInterceptor | None = None,
) -> tuple[grpc.Server, int]:
    """A started server for `clean_room` and the port it listens on.

    Args:
        clean_room: What to serve.
        listen: `host:port` to listen on instead of the configured one (`127.0.0.1:0`
            picks a free port, as tests do).
        interceptor: The interceptor that audits every call, if the caller wants to drain
            it at shutdown; one is made otherwise.
    """
    config = clean_room.config.server
    interceptor = interceptor or audit_interceptor(clean_room)
    # The interceptor refuses calls beyond `max_workers` at once (SERVER_BUSY, logged);
    # spare threads let it do so while the others work, and gRPC's own limit is a backstop.
    threads = config.max_workers + SPARE_THREADS
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc"),
        interceptors=[interceptor],
        maximum_concurrent_rpcs=threads * 8,
        options=[
            (
                "grpc.max_receive_message_length",
                transport_message_bytes(config.max_upload_message_bytes),
            ),
            ("grpc.so_reuseport", 0),
        ],
    )
    partner_service_pb2_grpc.add_PartnerServiceServicer_to_server(
        PartnerServicer(
            clean_room.datasets,
            pace=upload_pace(config),
            max_message_bytes=config.max_upload_message_bytes,
        ),
        server,
    )
    report_service_pb2_grpc.add_ReportServiceServicer_to_server(
        ReportServicer(clean_room.reports), server
    )
    audit_service_pb2_grpc.add_AuditServiceServicer_to_server(
        AuditServicer(clean_room.access, clean_room.audit_log), server
    )
    server_info_service_pb2_grpc.add_ServerInfoServiceServicer_to_server(
        ServerInfoServicer(config), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = listen or config.listen
    try:
        port = server.add_secure_port(address, server_credentials(config.tls))
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError("server.listen", f"cannot listen on {address!r}: in use, or not here")
    server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def serve(config: Config) -> None:
    """Runs the server until SIGTERM or SIGINT, then stops gracefully."""
    clean_room = CleanRoom(config)
    try:
        interceptor = audit_interceptor(clean_room)
        server, port = build_server(clean_room, interceptor=interceptor)
        sweeper = RetentionSweeper(
            lambda: sweep(config, clean_room.datasets, clean_room.audit_log),
            config.server.retention_sweep_seconds,
        )
        sweeper.start()
        log.info(
            "serving on %s (port %d), data in %s",
            config.server.listen,
            port,
            config.server.data_dir,
        )
        stopping = threading.Event()

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        stopping.wait()
        sweeper.stop()
        server.stop(GRACE_SECONDS).wait()
        if not interceptor.drain(GRACE_SECONDS):
            log.warning("calls still running after %s s; their events may be lost", GRACE_SECONDS)
    finally:
        clean_room.close()
    log.info("stopped")
