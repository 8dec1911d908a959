"""Probes for another brand's datasets: the answers are byte for byte the same whether the
dataset exists or not, and never carry a figure of it; the query log gives auditors no
exact dataset size.

Each probe runs in two worlds: in one, brightmart holds `brightmart-secret` (7 rows,
below the minimum size of 10, or 400 rows for the upload probe); in the other it holds
nothing. acme asks the same things in both, over raw gRPC, and the status code, message
and `google.rpc.Status` details it gets back are compared as bytes, in any mode.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_status import rpc_status

from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    overlap_report_pb2,
    partner_service_pb2,
    partner_service_pb2_grpc,
    report_service_pb2,
    report_service_pb2_grpc,
)
from tests.privacy.attack import World, fresh, in_two_worlds
from tests.support import COLLABORATION, dataset_name, running_server

PARENT = f"collaborations/{COLLABORATION}"
SECRET = dataset_name("brightmart-secret")


def answer(call: Callable[[], object]) -> tuple[str, str, bytes]:
    """The whole refusal as bytes: code, message and the serialized google.rpc.Status."""
    try:
        call()
    except grpc.RpcError as error:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        return (
            error.code().name,
            error.details() or "",
            status.SerializeToString() if status else b"",
        )
    return "OK", "", b""


def _probes(world: World, rows: int) -> list[tuple[str, str, bytes]]:
    rng = np.random.default_rng(8)
    mine = world.upload("acme", fresh(rng, 100), dataset_id="acme-audience")
    if world.member:
        world.upload("brightmart", fresh(rng, rows), dataset_id="brightmart-secret")
    channel = world.server.connection("acme").channel()
    reports = report_service_pb2_grpc.ReportServiceStub(channel)
    partners = partner_service_pb2_grpc.PartnerServiceStub(channel)

    def report(others: list[str], base: str = mine) -> Callable[[], object]:
        question = overlap_report_pb2.OverlapReport(base_dataset=base, other_datasets=others)
        request = report_service_pb2.CreateOverlapReportRequest(
            parent=PARENT, overlap_report=question
        )
        return lambda: reports.CreateOverlapReport(request, timeout=30)

    def estimate(others: list[str]) -> Callable[[], object]:
        question = overlap_report_pb2.OverlapReport(base_dataset=mine, other_datasets=others)
        request = report_service_pb2.CreateOverlapReportRequest(
            parent=PARENT, overlap_report=question, validate_only=True
        )
        return lambda: reports.CreateOverlapReport(request, timeout=30)

    def upload_as(dataset_id: str) -> Callable[[], object]:
        header = partner_service_pb2.DatasetUploadHeader(
            parent=PARENT, dataset_id=dataset_id, identifier_types=["email"],
            key_check_value=world.server.config.collaborations[COLLABORATION].key_check_value,
            row_count=10, checksum="0" * 64,
        )  # fmt: skip
        messages = [partner_service_pb2.UploadDatasetRequest(header=header)]
        return lambda: partners.UploadDataset(iter(messages), timeout=30)

    def get_dataset() -> object:
        return partners.GetDataset(partner_service_pb2.GetDatasetRequest(name=SECRET), timeout=30)

    def delete_dataset() -> object:
        request = partner_service_pb2.DeleteDatasetRequest(name=SECRET)
        return partners.DeleteDataset(request, timeout=30)

    answers = [
        answer(report([SECRET])),
        answer(report([SECRET, mine])),
        answer(estimate([SECRET])),
        answer(upload_as("brightmart-secret")),
        answer(get_dataset),
        answer(delete_dataset),
        answer(report([mine], base=SECRET)),
    ]
    channel.close()
    return answers


@pytest.mark.parametrize("noise", [False, True], ids=["exact", "noise"])
def test_a_small_dataset_of_another_brand_reads_as_a_missing_one(
    pki: DemoPki, tmp_path: Path, noise: bool
) -> None:
    missing, small = in_two_worlds(pki, tmp_path, lambda w: _probes(w, 7), noise=noise)
    assert missing == small
    code, message, _ = small[0]
    assert code == "FAILED_PRECONDITION"
    assert "7" not in message  # no figure of brightmart's dataset
    assert b"DATASET_UNAVAILABLE" in small[0][2]
    assert b"DATASET_ID_NOT_OWNED" in small[3][2]


def test_an_upload_cannot_probe_another_brands_ids(pki: DemoPki, tmp_path: Path) -> None:
    missing, present = in_two_worlds(pki, tmp_path, lambda w: _probes(w, 400))
    assert missing[3] == present[3]
    assert present[3][0] == "INVALID_ARGUMENT"


def test_the_owners_own_small_dataset_is_told_its_size(pki: DemoPki, tmp_path: Path) -> None:
    """The owner may know its own figures: the precise refusal stays for it."""
    rng = np.random.default_rng(9)
    with running_server(pki, tmp_path / "data") as server:
        world = World(server, tmp_path, member=True)
        small = world.upload("acme", fresh(rng, 7), dataset_id="acme-small")
        other = world.upload("brightmart", fresh(rng, 100), dataset_id="brightmart-crm")
        refused = world.report("acme", small, [other])
    assert refused[2] == "BELOW_MINIMUM_DATASET_SIZE"
    assert ("row_count", "7") in refused[4]


def test_the_log_gives_auditors_no_exact_dataset_size(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    with running_server(pki, tmp_path / "data") as server:
        world = World(server, tmp_path, member=True)
        mine = world.upload("acme", fresh(rng, 1234), dataset_id="acme-audience")
        theirs = world.upload("brightmart", fresh(rng, 567), dataset_id="brightmart-crm")
        world.report("acme", mine, [theirs])
        server.client("brightmart").delete_dataset(theirs)
        channel = server.connection("ledger").channel()
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        events = audit.ListAuditEvents(
            audit_service_pb2.ListAuditEventsRequest(parent=PARENT, page_size=100), timeout=30
        ).audit_events
        channel.close()
    entries = [json.loads(e.entry) for e in events]
    uploads = [e for e in entries if e["method"].endswith("UploadDataset")]
    assert [e["request_summary"]["rows"] for e in uploads] == ["1000-9999", "100-999"]
    for entry in entries:  # no exact size as a number anywhere in what an event says
        said = json.dumps([entry["request_summary"], entry["outcome"]])
        assert not re.search(r"\b(1234|567)\b", said), said
