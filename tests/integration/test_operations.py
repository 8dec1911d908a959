"""Operating a real `cleanroom serve` process: its log, metrics, probes and reload (SIGHUP)."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import threading
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from cleanroom.audit.log import AuditFilter, AuditLog
from cleanroom.config import load_config
from cleanroom.storage.database import DATABASE_FILE, Database
from cleanroom.tls.pki import DemoPki, issue_certificate
from partners.errors import AccessDeniedError, PrivacyRuleError
from tests.served import ServedProcess, served, write_served_config
from tests.support import (
    COLLABORATION,
    LOG_SIGNER,
    config_data,
    dataset_name,
    digest_array,
    random_digests,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
CALL_FIELDS = {"method", "caller", "status", "reason", "duration_ms", "request_id"}

pytestmark = pytest.mark.slow


def upload(server: ServedProcess, brand: str, dataset_id: str, folder: Path, *, rows: int) -> None:
    rng = np.random.default_rng(zlib.crc32(dataset_id.encode()))
    path = write_digest_file(
        folder / f"{dataset_id}.parquet", {"email": digest_array(random_digests(rng, rows))}
    )
    server.client(brand).upload(path, dataset_id=dataset_id)


def metric_samples(server: ServedProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = server.ops("/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def calls_of(samples: dict[Any, float], method: str, code: str = "OK") -> float:
    return samples.get(("cleanroom_calls_total", (("code", code), ("method", method))), 0.0)


def test_log_lines_are_json_with_the_fields_of_every_call(pki: DemoPki, tmp_path: Path) -> None:
    config = write_served_config(tmp_path / "c.toml", pki, tmp_path / "data")
    # DEBUG turns gRPC's own C-core output on: it must come out as events too.
    with served(pki, config, "--log-level", "DEBUG") as server:
        upload(server, "acme", "acme-a", tmp_path, rows=40)
        list(server.client("acme").list_datasets(PARENT))
        with pytest.raises(PrivacyRuleError):  # a missing input: one answer, missing or small
            server.client("acme").create_report(
                PARENT, base=dataset_name("acme-a"), others=[dataset_name("acme-a-missing")]
            )
        server.wait_for(
            lambda e: e.get("event") == "call" and e["method"].endswith("CreateOverlapReport"),
            "the report's call event",
        )
    lines = [line for line in server.lines if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    for event in events:
        assert {"timestamp", "level", "event", "logger"} <= set(event)
        moment = datetime.fromisoformat(event["timestamp"])
        assert moment.utcoffset() == timedelta(0)
        assert event["timestamp"].endswith("Z")
    calls = [e for e in events if e["event"] == "call"]
    methods = {e["method"].rsplit("/", 1)[1]: e for e in calls}
    assert {"UploadDataset", "ListDatasets", "CreateOverlapReport"} <= set(methods)
    for call in calls:
        assert set(call) >= CALL_FIELDS, call
        assert call["caller"] == "partners/acme"
    report = methods["CreateOverlapReport"]
    assert (report["status"], report["level"]) == ("FAILED_PRECONDITION", "info")
    assert report["reason"] == "DATASET_UNAVAILABLE"
    assert methods["UploadDataset"]["status"] == "OK"
    assert any(e["logger"] == "grpc.core" for e in events), "no C-core line captured"
    # The request id of each line is the one its query log event carries.
    database = Database(load_config(config).server.data_dir / "cleanroom.sqlite3", read_only=True)
    try:
        logged = AuditLog(database, LOG_SIGNER).events(
            COLLABORATION, AuditFilter(), after=-1, limit=100
        )
    finally:
        database.close()
    ids = {e.request_summary["request_id"]: e.method for e in logged}
    for call in calls:
        if not call["method"].startswith("/grpc."):
            assert ids.get(call["request_id"]) == call["method"]


def test_metrics_scrape_and_their_counters_move_with_calls(pki: DemoPki, tmp_path: Path) -> None:
    config = write_served_config(tmp_path / "c.toml", pki, tmp_path / "data", noise=True)
    with served(pki, config) as server:
        assert server.ops("/healthz") == (200, "ok\n")
        before = metric_samples(server)
        list_method = "/cleanroom.v1.PartnerService/ListDatasets"
        list(server.client("acme").list_datasets(PARENT))
        upload(server, "acme", "acme-m", tmp_path, rows=30)
        upload(server, "brightmart", "brightmart-m", tmp_path, rows=30)
        server.client("acme").create_report(
            PARENT, base=dataset_name("acme-m"), others=[dataset_name("brightmart-m")]
        )
        server.wait_for(
            lambda e: e.get("event") == "call" and e["method"].endswith("CreateOverlapReport"),
            "the report's call",
        )
        after = metric_samples(server)
    assert calls_of(after, list_method) == calls_of(before, list_method) + 1
    upload_method = "/cleanroom.v1.PartnerService/UploadDataset"
    assert calls_of(after, upload_method) == calls_of(before, upload_method) + 2
    rows = ("cleanroom_upload_rows_total", (("collaboration", COLLABORATION),))
    assert after[rows] - before.get(rows, 0) == 60
    assert after[("cleanroom_upload_bytes_total", (("collaboration", COLLABORATION),))] > 60 * 32
    reports = ("cleanroom_report_duration_seconds_count", (("collaboration", COLLABORATION),))
    assert after[reports] == 1
    latency = ("cleanroom_call_duration_seconds_count", (("method", list_method),))
    assert after[latency] == before.get(latency, 0) + 1
    remaining = ("cleanroom_epsilon_remaining", (("collaboration", COLLABORATION),))
    assert after[remaining] == before[remaining] - 1.0  # epsilon_per_report's default
    log_size = ("cleanroom_query_log_events", (("log", COLLABORATION),))
    assert after[log_size] == before.get(log_size, 0) + 4
    expiry = after[("cleanroom_certificate_expiry_timestamp_seconds", (("certificate", "server"),))]
    assert expiry > datetime.now(UTC).timestamp()


def test_health_calls_are_counted_not_appended_to_the_signed_logs(
    pki: DemoPki, tmp_path: Path
) -> None:
    config = write_served_config(tmp_path / "c.toml", pki, tmp_path / "data")
    with served(pki, config) as server:
        channel = server.client("outsider").connection.channel()
        for _ in range(3):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        channel.close()
        method = "/grpc.health.v1.Health/Check"
        # Counted as the handler ends, before the answer leaves: no wait needed.
        assert calls_of(metric_samples(server), method) == 3
    database = Database(load_config(config).server.data_dir / DATABASE_FILE, read_only=True)
    try:
        sizes = AuditLog(database, LOG_SIGNER).sizes()
    finally:
        database.close()
    assert sizes == {}


def test_readyz_fails_once_the_server_certificate_has_expired(pki: DemoPki, tmp_path: Path) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=15)  # a start under load fits well within
    short = issue_certificate(
        pki.ca, tmp_path, "short-lived", dns_names=["localhost"], ip_addresses=["127.0.0.1"],
        server=True, not_after=expires,
    )  # fmt: skip
    config = write_served_config(
        tmp_path / "c.toml", pki, tmp_path / "data",
        server={"tls": {"certificate": str(short.certificate), "private_key": str(short.private_key),
                        "client_ca": str(pki.ca.certificate)}},
    )  # fmt: skip
    with served(pki, config) as server:
        status, body = server.ops("/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"] == {
            "database": "ok", "data_dir": "ok", "signing_key": "ok", "certificates": "ok"
        }  # fmt: skip
        # The certificate's end is the event waited for: no fixed sleep.
        remaining = (expires - datetime.now(UTC)).total_seconds()
        threading.Event().wait(max(0.0, remaining) + 0.5)
        status, body = server.ops("/readyz")
        assert server.ops("/healthz")[0] == 200  # alive, but not ready
    assert status == 503
    checks = json.loads(body)["checks"]
    assert "expired" in checks["certificates"]
    assert checks["database"] == "ok"


def test_sighup_applies_a_changed_policy_to_the_next_report_while_an_upload_finishes(
    pki: DemoPki, tmp_path: Path
) -> None:
    config = write_served_config(tmp_path / "c.toml", pki, tmp_path / "data")
    with served(pki, config) as server:
        upload(server, "acme", "acme-r", tmp_path, rows=40)
        upload(server, "brightmart", "brightmart-r", tmp_path, rows=40)
        server.client("acme").create_report(
            PARENT, base=dataset_name("acme-r"), others=[dataset_name("brightmart-r")]
        )
        # An upload in flight: its stream pauses after its first chunk until released.
        sent, release, finished = threading.Event(), threading.Event(), []
        path = write_digest_file(
            tmp_path / "corvid.parquet",
            {"email": digest_array(random_digests(np.random.default_rng(9), 40))},
        )

        def paused(_rows: int) -> None:
            sent.set()
            release.wait(60)

        def run() -> None:
            finished.append(
                server.client("corvid").upload(path, dataset_id="corvid-r", progress=paused)
            )

        uploading = threading.Thread(target=run)
        uploading.start()
        assert sent.wait(60)
        write_served_config(config, pki, tmp_path / "data", minimum_dataset_size=1000)
        server.signal(signal.SIGHUP)
        server.wait_for(lambda e: e.get("event") == "configuration reloaded", "the reload")
        release.set()
        uploading.join(60)
        (dataset,) = finished
        assert dataset.row_count == 40
        with pytest.raises(PrivacyRuleError) as refused:
            server.client("acme").create_report(
                PARENT, base=dataset_name("acme-r"), others=[dataset_name("corvid-r")]
            )
        assert refused.value.reason == "BELOW_MINIMUM_DATASET_SIZE"
        assert "1000" in refused.value.message
        assert server.process.poll() is None
    assert server.named("reload rejected") == []


def test_sighup_with_a_broken_config_keeps_serving_and_logs_every_error(
    pki: DemoPki, tmp_path: Path
) -> None:
    config = write_served_config(tmp_path / "c.toml", pki, tmp_path / "data")
    with served(pki, config) as server:
        upload(server, "acme", "acme-b", tmp_path, rows=40)
        upload(server, "brightmart", "brightmart-b", tmp_path, rows=40)
        broken = config_data(pki, tmp_path / "data", minimum_threshold=5)
        broken["server"]["max_workers"] = 0
        broken["collaborations"][0]["polciy"] = {}
        broken["server"]["ops"] = {"listen": "127.0.0.1:0"}
        config.write_bytes(tomli_w.dumps(broken).encode())
        server.signal(signal.SIGHUP)
        server.wait_for(
            lambda e: e.get("event", "").startswith("configuration not reloaded"), "the refusal"
        )
        keys = {e["key"]: e["problem"] for e in server.named("reload rejected")}
        assert set(keys) == {
            "server.max_workers",
            "collaborations[0].polciy",
            "collaborations[0].policy.minimum_threshold",
        }, keys
        assert "did you mean 'policy'" in keys["collaborations[0].polciy"]
        # Still serving, with the old policy (k = 10).
        report = server.client("acme").create_report(
            PARENT, base=dataset_name("acme-b"), others=[dataset_name("brightmart-b")]
        )
        assert report.name
    assert server.named("configuration reloaded") == []


def presented_certificate(server: ServedProcess, pki: DemoPki) -> x509.Certificate:
    """The certificate the server presents to a new connection (TLS with ALPN h2)."""
    context = ssl.create_default_context(cafile=str(pki.ca.certificate))
    context.load_cert_chain(pki.partners["acme"].certificate, pki.partners["acme"].private_key)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_sighup_serves_a_replaced_server_certificate_to_new_connections(
    pki: DemoPki, tmp_path: Path
) -> None:
    config = write_served_config(tmp_path / "c.toml", pki, tmp_path / "data")
    with served(pki, config) as server:
        before = presented_certificate(server, pki)
        assert (
            before.serial_number
            == x509.load_pem_x509_certificate(pki.server.certificate.read_bytes()).serial_number
        )
        list(server.client("acme").list_datasets(PARENT))  # a connection opened before
        new = issue_certificate(
            pki.ca, tmp_path, "server-2", dns_names=["localhost"], ip_addresses=["127.0.0.1"],
            server=True,
        )  # fmt: skip
        tls = {"certificate": str(new.certificate), "private_key": str(new.private_key),
               "client_ca": str(pki.ca.certificate)}  # fmt: skip
        write_served_config(config, pki, tmp_path / "data", server={"tls": tls})
        server.signal(signal.SIGHUP)
        server.wait_for(lambda e: e.get("event") == "configuration reloaded", "the reload")
        after = presented_certificate(server, pki)
        assert (
            after.serial_number
            == x509.load_pem_x509_certificate(new.certificate.read_bytes()).serial_number
        )
        list(server.client("acme").list_datasets(PARENT))  # the old connection still works
        status, _ = server.ops("/readyz")
        assert status == 200


def test_sighup_revokes_a_partner_certificate_name_even_on_an_open_connection(
    pki: DemoPki, tmp_path: Path
) -> None:
    config = write_served_config(tmp_path / "c.toml", pki, tmp_path / "data")
    with served(pki, config) as server:
        acme = server.client("acme")
        list(acme.list_datasets(PARENT))  # identified, and the identity cached
        data = config_data(pki, tmp_path / "data")
        data["server"]["ops"] = {"listen": "127.0.0.1:0"}
        (entry,) = [p for p in data["partners"] if p["id"] == "acme"]
        entry["certificate_names"] = ["acme-2027.partners.cleanroom.test"]  # rotated away
        config.write_bytes(tomli_w.dumps(data).encode())
        server.signal(signal.SIGHUP)
        server.wait_for(lambda e: e.get("event") == "configuration reloaded", "the reload")
        with pytest.raises(AccessDeniedError) as refused:
            list(acme.list_datasets(PARENT))
        assert refused.value.reason == "UNKNOWN_CERTIFICATE"
