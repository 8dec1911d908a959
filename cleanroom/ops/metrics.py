"""The server's metrics in Prometheus form (prometheus-client), one registry per server.

Counters and histograms move as calls end (`CallMetrics.observe`); the state of the
clean room (remaining epsilon, log sizes, certificate expiry) is read when scraped, so it
is never stale and costs nothing between scrapes. No label holds a value a caller chose
freely: methods are the server's own, partners and collaborations the configured ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cleanroom.privacy.budget import to_micro
from cleanroom.tls.files import TlsMaterial
from cleanroom.usecases.clean_room import CleanRoom

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass(frozen=True)
class CallOutcome:
    """What the metrics record of one finished call."""

    method: str
    status: str
    reason: str
    seconds: float
    partner: str
    collaboration: str
    upload_bytes: int = 0
    upload_rows: int = 0


class CallMetrics:
    """The counters of one server, and what it exposes on `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "cleanroom_calls",
            "Calls handled, by method and status code (health and reflection included).",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cleanroom_call_duration_seconds",
            "How long calls took, by method.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.busy = Counter(
            "cleanroom_busy_refusals",
            "Calls refused as SERVER_BUSY, by the calling partner.",
            ["partner"],
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "cleanroom_upload_bytes",
            "Bytes of record batches received by uploads, by collaboration.",
            ["collaboration"],
            registry=self.registry,
        )
        self.upload_rows = Counter(
            "cleanroom_upload_rows",
            "Rows received by uploads, by collaboration.",
            ["collaboration"],
            registry=self.registry,
        )
        self.report_seconds = Histogram(
            "cleanroom_report_duration_seconds",
            "How long CreateOverlapReport took, by collaboration.",
            ["collaboration"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter(
            "cleanroom_config_reloads",
            "Configuration reloads (SIGHUP), by result: applied or rejected.",
            ["result"],
            registry=self.registry,
        )

    def observe(self, call: CallOutcome) -> None:
        """Records one finished call."""
        method = call.method.rsplit("/", 1)[-1] if call.method.startswith("/") else call.method
        self.calls.labels(call.method, call.status).inc()
        self.latency.labels(call.method).observe(call.seconds)
        if call.reason == "SERVER_BUSY":
            self.busy.labels(call.partner).inc()
        if method == "UploadDataset" and call.collaboration:
            self.upload_bytes.labels(call.collaboration).inc(call.upload_bytes)
            self.upload_rows.labels(call.collaboration).inc(call.upload_rows)
        if method == "CreateOverlapReport" and call.collaboration:
            self.report_seconds.labels(call.collaboration).observe(call.seconds)

    def watch(self, clean_room: CleanRoom, certificates: Callable[[], TlsMaterial]) -> None:
        """Adds the state read at each scrape: budgets, log sizes, certificate expiry."""
        self.registry.register(_StateCollector(clean_room, certificates))

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return bytes(generate_latest(self.registry))


class _StateCollector(Collector):
    def __init__(self, clean_room: CleanRoom, certificates: Callable[[], TlsMaterial]) -> None:
        self.clean_room = clean_room
        self.certificates = certificates

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # read at scrape time: nothing to describe up front

    def collect(self) -> Iterator[GaugeMetricFamily]:
        clean_room = self.clean_room
        remaining = GaugeMetricFamily(
            "cleanroom_epsilon_remaining",
            "Privacy budget (epsilon) left, by collaboration.",
            labels=["collaboration"],
        )
        for collaboration in clean_room.config.collaborations.values():
            total = to_micro(collaboration.policy.epsilon_budget)
            budget = clean_room.catalog.budget(collaboration.id, total)
            remaining.add_metric([collaboration.id], budget.remaining)
        yield remaining
        events = GaugeMetricFamily(
            "cleanroom_query_log_events", "Events in each query log.", labels=["log"]
        )
        for log, size in sorted(clean_room.audit_log.sizes().items()):
            events.add_metric([log], size)
        yield events
        database = GaugeMetricFamily(
            "cleanroom_database_bytes", "Size of the database file and its write-ahead log."
        )
        path = clean_room.database.path
        wal = path.with_name(path.name + "-wal")
        database.add_metric([], sum(p.stat().st_size for p in (path, wal) if p.exists()))
        yield database
        expiry = GaugeMetricFamily(
            "cleanroom_certificate_expiry_timestamp_seconds",
            "When each certificate the server uses expires (Unix time).",
            labels=["certificate"],
        )
        material = self.certificates()
        served = x509.load_pem_x509_certificate(material.certificate)
        expiry.add_metric(["server"], served.not_valid_after_utc.timestamp())
        for index, ca in enumerate(x509.load_pem_x509_certificates(material.client_ca)):
            expiry.add_metric([f"client_ca[{index}]"], ca.not_valid_after_utc.timestamp())
        yield expiry
