"""The gRPC server: mutual TLS, the clean room's services, health and reflection, graceful stop.

Beside it, the operations listener (probes and metrics, plain HTTP) and SIGHUP reload.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cleanroom.config import Config, ServerConfig, TlsConfig
from cleanroom.errors import ConfigError, ConfigProblemsError
from cleanroom.ops.checks import check_files
from cleanroom.ops.listener import OpsListener
from cleanroom.ops.metrics import CallMetrics
from cleanroom.ops.probes import readiness
from cleanroom.service.audit_servicer import AuditServicer
from cleanroom.service.calls import CallInterceptor, CallLimits
from cleanroom.service.idle import UploadPace
from cleanroom.service.masking_servicer import MaskingServicer
from cleanroom.service.partner_servicer import PartnerServicer
from cleanroom.service.reload import Reloader
from cleanroom.service.report_servicer import ReportServicer
from cleanroom.service.server_info_servicer import ServerInfoServicer
from cleanroom.service.tls_files import ServedTls
from cleanroom.tls.files import read_tls
from cleanroom.usecases.clean_room import CleanRoom
from cleanroom.usecases.retention import RetentionSweeper, sweep
from cleanroom.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    masking_service_pb2,
    masking_service_pb2_grpc,
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
    masking_service_pb2.DESCRIPTOR.services_by_name["MaskingService"].full_name,
)
GRACE_SECONDS = 10.0
SPARE_THREADS = 4
# Probes and discovery: counted in the metrics, not appended to the signed logs (SPEC 6).
UNAUDITED_SERVICES = (f"/{health.SERVICE_NAME}/", f"/{reflection.SERVICE_NAME}/")


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """TLS that requires a client certificate signed by the configured CA."""
    material = read_tls(tls)
    return grpc.ssl_server_credentials(
        [(material.private_key, material.certificate)],
        root_certificates=material.client_ca,
        require_client_auth=True,
    )


def audit_interceptor(clean_room: CleanRoom, metrics: CallMetrics | None = None) -> CallInterceptor:
    """The interceptor that identifies, limits, counts and audits every call of a server."""
    config = clean_room.config.server
    return CallInterceptor(
        clean_room.access,
        clean_room.audit_log,
        max_calls=config.max_workers,
        metrics=metrics,
        unaudited=UNAUDITED_SERVICES,
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
    tls: ServedTls | None = None,
) -> tuple[grpc.Server, int]:
    """A started server for `clean_room` and the port it listens on.

    Args:
        clean_room: What to serve.
        listen: `host:port` to listen on instead of the configured one (`127.0.0.1:0`
            picks a free port, as tests do).
        interceptor: The interceptor that audits every call, if the caller wants to drain
            it at shutdown; one is made otherwise.
        tls: The TLS files to serve, if the caller wants to replace them while it runs;
            the configured ones otherwise.
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
    masking_service_pb2_grpc.add_MaskingServiceServicer_to_server(
        MaskingServicer(
            clean_room.masking,
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
        credentials = tls.credentials() if tls else server_credentials(config.tls)
        port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError("server.listen", f"cannot listen on {address!r}: in use, or not here")
    server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def serve(config: Config, *, config_path: Path | None = None) -> None:
    """Runs the server until SIGTERM or SIGINT, then stops gracefully; SIGHUP reloads.

    Args:
        config: The checked configuration.
        config_path: The file it came from, re-read on SIGHUP (no reload without it).
    """
    # Whatever the server creates (database, dataset files, scratch) is the operator's only.
    os.umask(0o077)
    files = check_files(config)
    if files.problems or files.tls is None:
        raise ConfigProblemsError(files.problems)
    for warning in files.warnings:
        log.warning("certificate expires soon", extra={"problem": warning})
    clean_room = CleanRoom(config)
    try:
        _serve(clean_room, ServedTls(files.tls), config_path)
    finally:
        clean_room.close()
    log.info("stopped")


def _serve(clean_room: CleanRoom, tls: ServedTls, config_path: Path | None) -> None:
    config = clean_room.config
    metrics = CallMetrics()
    metrics.watch(clean_room, lambda: tls.material)
    ops = OpsListener(
        config.server.ops_listen, metrics, lambda: readiness(clean_room, lambda: tls.material)
    )
    interceptor = audit_interceptor(clean_room, metrics)
    server, port = build_server(clean_room, interceptor=interceptor, tls=tls)
    ops.start()
    sweeper = RetentionSweeper(
        lambda: sweep(clean_room.config, clean_room.datasets, clean_room.audit_log),
        config.server.retention_sweep_seconds,
    )
    sweeper.start()
    log.info(
        "serving",
        extra={
            "listen": config.server.listen,
            "port": port,
            "ops_listen": config.server.ops_listen,
            "ops_port": ops.port,
            "data_dir": str(config.server.data_dir),
        },
    )
    reloader = Reloader(config_path, clean_room, tls, metrics) if config_path else None
    requests: list[signal.Signals] = []
    wake = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        requests.append(signal.Signals(signum))
        wake.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    while True:
        # The kernel may deliver a signal to any of gRPC's threads, which does not wake
        # a main thread blocked on a lock; Python runs the handler once the main thread
        # runs again, so it wakes up often.
        if not wake.wait(0.25):
            continue
        wake.clear()
        pending, requests[:] = list(requests), []
        if any(s != signal.SIGHUP for s in pending):
            stopping = next(s for s in pending if s != signal.SIGHUP)
            log.info("stopping", extra={"signal": stopping.name})
            break
        log.info("reloading", extra={"signal": "SIGHUP", "path": str(config_path or "")})
        if reloader is None:
            log.warning("no configuration file to reload: started without one")
        else:
            reloader.reload()
    sweeper.stop()
    server.stop(GRACE_SECONDS).wait()
    if not interceptor.drain(GRACE_SECONDS):
        log.warning(
            "calls still running after the grace period; their events may be lost",
            extra={"grace_seconds": GRACE_SECONDS},
        )
    ops.stop()
