"""Every RPC, allowed or refused, appends exactly one event to the query log (SPEC section 6)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from cleanroom.v1 import audit_service_pb2, audit_service_pb2_grpc
from partners.errors import ServerError
from tests.support import (
    COLLABORATION,
    RunningServer,
    dataset_name,
    digest_array,
    random_digests,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
SERVICE = "/cleanroom.v1."


def upload_file(tmp_path: Path, name: str, rows: int = 50, *, kcv: str | None = None) -> Path:
    digests = random_digests(np.random.default_rng(rows), rows)
    extra = {"kcv": kcv} if kcv else {}
    return write_digest_file(
        tmp_path / f"{name}.parquet", {"email": digest_array(digests)}, **extra
    )


def test_every_call_appends_exactly_one_event(server: RunningServer, tmp_path: Path) -> None:
    acme, brightmart, ledger = (server.client(p) for p in ("acme", "brightmart", "ledger"))
    good = upload_file(tmp_path, "good")
    calls: list[tuple[str, str, str, Callable[[], Any]]] = [
        ("PartnerService/UploadDataset", "acme", "OK",
         lambda: acme.upload(good, dataset_id="acme-one")),
        ("PartnerService/UploadDataset", "brightmart", "OK",
         lambda: brightmart.upload(good, dataset_id="brightmart-one")),
        ("PartnerService/UploadDataset", "acme", "FAILED_PRECONDITION",
         lambda: acme.upload(upload_file(tmp_path, "bad", kcv="0" * 16), dataset_id="acme-bad")),
        ("PartnerService/UploadDataset", "ledger", "PERMISSION_DENIED",
         lambda: ledger.upload(good, dataset_id="ledger-one")),
        ("PartnerService/GetDataset", "acme", "OK",
         lambda: acme.get_dataset(dataset_name("acme-one"))),
        ("PartnerService/GetDataset", "acme", "PERMISSION_DENIED",
         lambda: acme.get_dataset(dataset_name("brightmart-one"))),
        ("PartnerService/ListDatasets", "acme", "OK",
         lambda: list(acme.list_datasets(PARENT))),
        ("ReportService/CreateOverlapReport", "acme", "OK",
         lambda: acme.create_report(PARENT, base=dataset_name("acme-one"),
                                    others=[dataset_name("brightmart-one")])),
        ("ReportService/CreateOverlapReport", "ledger", "PERMISSION_DENIED",
         lambda: ledger.create_report(PARENT, base=dataset_name("acme-one"),
                                      others=[dataset_name("brightmart-one")])),
        ("ReportService/ListOverlapReports", "acme", "OK",
         lambda: list(acme.list_reports(PARENT))),
        ("AuditService/ListAuditEvents", "ledger", "OK",
         lambda: list(ledger.list_audit_events(PARENT))),
        ("AuditService/ListAuditEvents", "acme", "PERMISSION_DENIED",
         lambda: list(acme.list_audit_events(PARENT))),
        ("AuditService/GetAuditCheckpoint", "ledger", "OK",
         lambda: ledger.get_checkpoint(PARENT)),
        ("AuditService/GetAuditCheckpoint", "brightmart", "PERMISSION_DENIED",
         lambda: brightmart.get_checkpoint(PARENT)),
        ("AuditService/GetAuditInclusionProof", "ledger", "OK",
         lambda: ledger.inclusion_proof(PARENT, 1, 3)),
        ("AuditService/GetAuditInclusionProof", "ledger", "INVALID_ARGUMENT",
         lambda: ledger.inclusion_proof(PARENT, 5, 3)),
        ("AuditService/GetAuditConsistencyProof", "ledger", "OK",
         lambda: ledger.consistency_proof(PARENT, 2, 4)),
        ("AuditService/GetAuditConsistencyProof", "ledger", "INVALID_ARGUMENT",
         lambda: ledger.consistency_proof(PARENT, 2, 10**6)),
        ("PartnerService/DeleteDataset", "acme", "OK",
         lambda: acme.delete_dataset(dataset_name("acme-one"))),
        ("PartnerService/DeleteDataset", "acme", "PERMISSION_DENIED",
         lambda: acme.delete_dataset(dataset_name("acme-one"))),
    ]  # fmt: skip
    for method, caller, status, run in calls:
        before = len(server.events())
        try:
            run()
            outcome = "OK"
        except ServerError as error:
            outcome = error.code
        assert outcome == status, method
        events = server.events()
        assert len(events) == before + 1, method
        event = events[-1]
        assert (event.method, event.caller) == (SERVICE + method, f"partners/{caller}")
        assert event.outcome.status_code == status
        assert event.index == before
        if status != "OK":
            assert event.outcome.reason
            assert event.outcome.message


def test_report_event_records_what_was_released(server: RunningServer, tmp_path: Path) -> None:
    path = upload_file(tmp_path, "data")
    for brand in ("acme", "brightmart"):
        server.client(brand).upload(path, dataset_id=f"{brand}-one")
    report = server.client("acme").create_report(
        PARENT, base=dataset_name("acme-one"), others=[dataset_name("brightmart-one")]
    )
    event = server.events(method="CreateOverlapReport")[-1]
    assert report.name in event.resources
    assert event.outcome.released_count == report.released_count
    assert event.outcome.suppressed_count == report.suppressed_count
    assert event.request_summary["other_datasets"] == [dataset_name("brightmart-one")]
    assert event.caller_roles == ("analyst", "uploader")


def test_auditor_filters_and_pages(server: RunningServer, tmp_path: Path) -> None:
    acme, ledger = server.client("acme"), server.client("ledger")
    path = upload_file(tmp_path, "data")
    acme.upload(path, dataset_id="acme-one")
    for _ in range(4):
        acme.get_dataset(dataset_name("acme-one"))
    with pytest.raises(ServerError):
        server.client("brightmart").get_dataset(dataset_name("acme-one"))

    everything = list(ledger.list_audit_events(PARENT, page_size=2))
    assert [e.index for e in everything] == list(range(len(everything)))
    # Reading the log is logged too: each page read appends the event of that call.
    assert [e.method.rsplit("/", 1)[-1] for e in everything[:6]] == [
        "UploadDataset",
        *["GetDataset"] * 5,
    ]
    assert all(e.method.endswith("/ListAuditEvents") for e in everything[6:])
    gets = list(ledger.list_audit_events(PARENT, method="GetDataset"))
    assert len(gets) == 5
    full = list(ledger.list_audit_events(PARENT, method=SERVICE + "PartnerService/GetDataset"))
    assert full == gets
    assert len(list(ledger.list_audit_events(PARENT, method="Get_ataset"))) == 0  # no wildcards
    by_brightmart = list(ledger.list_audit_events(PARENT, caller="partners/brightmart"))
    assert [e.outcome.status_code for e in by_brightmart] == ["PERMISSION_DENIED"]
    now = datetime.now(UTC)
    assert len(list(ledger.list_audit_events(PARENT, start_time=now + timedelta(hours=1)))) == 0
    assert len(list(ledger.list_audit_events(PARENT, end_time=now - timedelta(hours=1)))) == 0
    window = list(ledger.list_audit_events(PARENT, start_time=now - timedelta(hours=1)))
    assert len(window) >= 6


def test_bad_page_token_is_refused_and_logged(server: RunningServer) -> None:
    stub = audit_service_pb2_grpc.AuditServiceStub(server.connection("ledger").channel())
    request = audit_service_pb2.ListAuditEventsRequest(parent=PARENT, page_token="made-up")
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListAuditEvents(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in refused.value.details()
    assert server.events()[-1].outcome.reason == "INVALID_PAGE_TOKEN"


def test_calls_outside_any_collaboration_go_to_the_server_log(server: RunningServer) -> None:
    with pytest.raises(ServerError) as refused:
        list(server.client("acme").list_datasets("collaborations/no-such-room"))
    assert refused.value.code == "PERMISSION_DENIED"
    server_log = list(server.client("operator").list_audit_events("collaborations/-"))
    assert server_log[-1].resources == ["collaborations/no-such-room"]
    assert server_log[-1].outcome.status_code == "PERMISSION_DENIED"
    with pytest.raises(ServerError) as denied:
        list(server.client("ledger").list_audit_events("collaborations/-"))
    assert denied.value.reason == "ADMINISTRATOR_REQUIRED"
