"""No response of any RPC contains any uploaded digest (SPEC section 5).

Every response message, and every error's message and details, is scanned for every
8-byte window of every digest uploaded, in the raw bytes of the wire form.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
from google.protobuf.message import Message

from cleanroom.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    overlap_report_pb2,
    partner_service_pb2,
    partner_service_pb2_grpc,
    report_service_pb2,
    report_service_pb2_grpc,
)
from tests.support import (
    COLLABORATION,
    RunningServer,
    dataset_name,
    digest_array,
    random_digests,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
WINDOW = 8


def windows(digests: np.ndarray) -> set[bytes]:
    return {bytes(row[i : i + WINDOW]) for row in digests for i in range(32 - WINDOW + 1)}


def leaked(payload: bytes, secrets: set[bytes]) -> list[int]:
    return [i for i in range(len(payload) - WINDOW + 1) if payload[i : i + WINDOW] in secrets]


def test_no_response_holds_a_digest(server: RunningServer, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    shared = random_digests(rng, 400)
    uploaded = []
    responses: list[bytes] = []
    for brand in ("acme", "brightmart", "corvid"):
        emails = np.concatenate([shared, random_digests(rng, 600)])
        phones = random_digests(rng, 1000)
        uploaded += [emails, phones]
        present = rng.random(1000) < 0.7
        present[0] = True
        path = write_digest_file(
            tmp_path / f"{brand}.parquet",
            {"email": digest_array(emails), "phone": digest_array(phones, present)},
            {"tier": [str(x) for x in rng.choice(["a", "b", "c"], 1000)]},
        )
        dataset = server.client(brand).upload(path, dataset_id=f"{brand}-list")
        responses.append(dataset.SerializeToString())
    secrets = windows(np.concatenate(uploaded))

    def call(method: object, request: Message) -> None:
        try:
            response = method(request, timeout=30)  # type: ignore[operator]
            responses.append(response.SerializeToString())
        except grpc.RpcError as error:
            responses.append(error.details().encode())
            for _key, value in error.trailing_metadata() or ():
                responses.append(value if isinstance(value, bytes) else value.encode())

    for partner in ("acme", "brightmart", "ledger", "operator", "outsider"):
        channel = server.connection(partner).channel()
        partners = partner_service_pb2_grpc.PartnerServiceStub(channel)
        reports = report_service_pb2_grpc.ReportServiceStub(channel)
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        call(partners.ListDatasets, partner_service_pb2.ListDatasetsRequest(parent=PARENT))
        call(
            partners.ListSharedDatasets,
            partner_service_pb2.ListSharedDatasetsRequest(parent=PARENT),
        )
        for brand in ("acme", "brightmart", "corvid", "missing"):
            name = dataset_name(f"{brand}-list")
            call(partners.GetDataset, partner_service_pb2.GetDatasetRequest(name=name))
        question = overlap_report_pb2.OverlapReport(
            base_dataset=dataset_name(f"{partner}-list"),
            other_datasets=[dataset_name("corvid-list"), dataset_name("brightmart-list")],
            segment_column="tier",
        )
        call(
            reports.CreateOverlapReport,
            report_service_pb2.CreateOverlapReportRequest(parent=PARENT, overlap_report=question),
        )
        call(
            reports.ListOverlapReports, report_service_pb2.ListOverlapReportsRequest(parent=PARENT)
        )
        call(audit.ListAuditEvents, audit_service_pb2.ListAuditEventsRequest(parent=PARENT))
        call(
            audit.ListAuditEvents,
            audit_service_pb2.ListAuditEventsRequest(parent="collaborations/-"),
        )
        call(audit.GetAuditCheckpoint, audit_service_pb2.GetAuditCheckpointRequest(parent=PARENT))
        call(
            audit.GetAuditInclusionProof,
            audit_service_pb2.GetAuditInclusionProofRequest(parent=PARENT, index=0, tree_size=3),
        )
        call(
            audit.GetAuditConsistencyProof,
            audit_service_pb2.GetAuditConsistencyProofRequest(
                parent=PARENT, first_tree_size=1, second_tree_size=3
            ),
        )
        channel.close()

    acme_reports = list(server.client("acme").list_reports(PARENT))
    assert acme_reports, "the scan must include a released report"
    responses += [r.SerializeToString() for r in acme_reports]
    responses += [e.SerializeToString() for e in server.client("ledger").list_audit_events(PARENT)]
    assert len(responses) > 40
    for payload in responses:
        assert leaked(payload, secrets) == []
    # The query log on disk holds no digest either.
    for event in server.events():
        assert leaked(event.entry(), secrets) == []


def test_scan_finds_a_planted_digest() -> None:
    """The scanner itself works: a digest inside a payload is found."""
    rng = np.random.default_rng(1)
    digests = random_digests(rng, 3)
    payload = b"header" + bytes(digests[1][5:20]) + b"trailer"
    assert leaked(payload, windows(digests))
