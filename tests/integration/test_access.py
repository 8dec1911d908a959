"""Who may call what, over real mutual TLS channels, and every call once in the query log."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from cleanroom.audit.log import AuditFilter
from cleanroom.names import SERVER_LOG
from cleanroom.tls.pki import certificate_identities, create_demo_pki
from cleanroom.v1 import partner_service_pb2, partner_service_pb2_grpc
from partners.client import CleanRoomClient, Connection
from partners.errors import ServerError
from tests.support import (
    COLLABORATION,
    KCV,
    RunningServer,
    dataset_name,
    digest_array,
    files_under,
    random_digests,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
MISSING_REPORT = f"{PARENT}/overlapReports/r-0000000000000000"

Call = tuple[str, str, str, str]  # method, caller, status code, reason


def summary(event: Any) -> Call:
    method = event.method.rsplit("/", 1)[-1]
    return (method, event.caller, event.outcome.status_code, event.outcome.reason)


def server_log(server: RunningServer) -> list[Any]:
    """The server's own log: calls that named no configured collaboration."""
    return server.clean_room.audit_log.events(SERVER_LOG, AuditFilter(), after=-1, limit=1_000_000)


@contextmanager
def logged(
    server: RunningServer, *calls: Call, in_server_log: tuple[Call, ...] = ()
) -> Iterator[None]:
    """Asserts that the block appends exactly `calls` to the collaboration's log and
    exactly `in_server_log` to the server log: one event per call, no more, no less."""
    before, before_server = len(server.events()), len(server_log(server))
    yield
    added = [summary(e) for e in server.events()[before:]]
    added_server = [summary(e) for e in server_log(server)[before_server:]]
    assert Counter(added) == Counter(calls)
    assert Counter(added_server) == Counter(in_server_log)


def refused(call: Any, *args: Any, **kwargs: Any) -> ServerError:
    """The error a client call fails with."""

    def run() -> None:
        result = call(*args, **kwargs)
        if isinstance(result, Iterator):  # list_* calls run when iterated
            list(result)

    with pytest.raises(ServerError) as error:
        run()
    return error.value


def upload(server: RunningServer, tmp_path: Path, brand: str, dataset_id: str) -> str:
    rng = np.random.default_rng(zlib.crc32(dataset_id.encode()))
    path = write_digest_file(
        tmp_path / f"{dataset_id}.parquet", {"email": digest_array(random_digests(rng, 40))}
    )
    return server.client(brand).upload(path, dataset_id=dataset_id).name


def digest_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_digest_file(
        tmp_path / "upload.parquet", {"email": digest_array(random_digests(rng, 20))}
    )


def assert_nothing_stored(server: RunningServer) -> None:
    assert list(server.client("operator").list_datasets(PARENT)) == []
    assert files_under(server.data_dir / "datasets") == []
    assert files_under(server.data_dir / "tmp") == []


# Refused at the TLS handshake ------------------------------------------------------------


def upload_request() -> Iterator[partner_service_pb2.UploadDatasetRequest]:
    yield partner_service_pb2.UploadDatasetRequest(
        header=partner_service_pb2.DatasetUploadHeader(
            parent=PARENT,
            dataset_id="acme-list",
            identifier_types=["email"],
            key_check_value=KCV,
            row_count=1,
            checksum="0" * 64,
        )
    )


def test_client_without_certificate_is_refused_at_the_handshake(server: RunningServer) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server.pki.ca.certificate.read_bytes()
    )
    channel = grpc.secure_channel(
        f"127.0.0.1:{server.port}",
        credentials,
        options=[("grpc.ssl_target_name_override", "localhost")],
    )
    stub = partner_service_pb2_grpc.PartnerServiceStub(channel)
    with logged(server):  # no RPC reached the server, so nothing is logged
        with pytest.raises(grpc.RpcError) as listing:
            stub.ListDatasets(partner_service_pb2.ListDatasetsRequest(parent=PARENT), timeout=10)
        with pytest.raises(grpc.RpcError) as uploading:
            stub.UploadDataset(upload_request(), timeout=10)
    channel.close()
    assert listing.value.code() == grpc.StatusCode.UNAVAILABLE
    assert uploading.value.code() == grpc.StatusCode.UNAVAILABLE
    assert_nothing_stored(server)


def test_certificate_from_another_ca_is_refused_at_the_handshake(
    server: RunningServer, tmp_path: Path
) -> None:
    other = create_demo_pki(tmp_path / "other-pki", partners=["acme"])
    impostor = Connection(
        target=f"127.0.0.1:{server.port}",
        certificate=other.partners["acme"].certificate,
        private_key=other.partners["acme"].private_key,
        ca_certificate=server.pki.ca.certificate,  # it trusts the real server
        server_name="localhost",
    )
    path = digest_file(tmp_path)
    with CleanRoomClient(impostor, timeout=10) as client, logged(server):
        uploading = refused(client.upload, path, dataset_id="acme-list")
        listing = refused(client.list_datasets, PARENT)
    assert uploading.code == listing.code == "UNAVAILABLE"
    assert_nothing_stored(server)


# Known certificates, unknown or non-member partners ---------------------------------------


def test_certificate_of_no_partner_is_unauthenticated(
    server: RunningServer, tmp_path: Path
) -> None:
    stranger = server.client("stranger")
    subject = certificate_identities(server.pki.partners["stranger"].certificate.read_bytes())
    label = subject.subject
    assert label
    path = digest_file(tmp_path)
    elsewhere = "collaborations/another-room"
    denied = ("UNAUTHENTICATED", "UNKNOWN_CERTIFICATE")
    with logged(
        server,
        ("UploadDataset", label, *denied),
        ("ListDatasets", label, *denied),
        ("GetDataset", label, *denied),
        ("CreateOverlapReport", label, *denied),
        in_server_log=(("ListDatasets", label, *denied),),
    ):
        errors = [
            refused(stranger.upload, path, dataset_id="stranger-list"),
            refused(stranger.list_datasets, PARENT),
            refused(stranger.get_dataset, dataset_name("acme-list")),
            refused(
                stranger.create_report,
                PARENT,
                base=dataset_name("acme-list"),
                others=[dataset_name("corvid-list")],
            ),
            refused(stranger.list_datasets, elsewhere),
        ]
    for error in errors:
        assert (error.code, error.reason) == denied
        assert error.metadata["subject"] == label
    assert_nothing_stored(server)
    stranger_events = [e for e in server.events() if e.caller == label]
    assert len(stranger_events) == 4
    assert all(e.caller_roles == () for e in stranger_events)


def test_partner_of_no_collaboration_is_not_a_member(server: RunningServer, tmp_path: Path) -> None:
    brightmart = upload(server, tmp_path, "brightmart", "brightmart-list")
    outsider = server.client("outsider")
    path = digest_file(tmp_path)
    denied = ("PERMISSION_DENIED", "NOT_A_MEMBER")
    caller = "partners/outsider"
    with logged(
        server,
        ("UploadDataset", caller, *denied),
        ("ListDatasets", caller, *denied),
        ("GetDataset", caller, *denied),
        ("DeleteDataset", caller, *denied),
        ("ListOverlapReports", caller, *denied),
    ):
        errors = [
            refused(outsider.upload, path, dataset_id="outsider-list"),
            refused(outsider.list_datasets, PARENT),
            refused(outsider.get_dataset, brightmart),
            refused(outsider.delete_dataset, brightmart),
            refused(outsider.list_reports, PARENT),
        ]
    for error in errors:
        assert (error.code, error.reason) == denied
        assert error.metadata["partner"] == "outsider"
    assert [d.name for d in server.client("operator").list_datasets(PARENT)] == [brightmart]


# Datasets: authorization before existence -------------------------------------------------


def test_dataset_of_another_brand_is_denied_exactly_like_a_missing_one(
    server: RunningServer, tmp_path: Path
) -> None:
    theirs = upload(server, tmp_path, "brightmart", "brightmart-list")
    missing = dataset_name("brightmart-missing")
    acme = server.client("acme")
    denied = ("PERMISSION_DENIED", "DATASET_NOT_ACCESSIBLE")
    caller = "partners/acme"
    with logged(
        server,
        *[(method, caller, *denied) for method in ("GetDataset", "DeleteDataset")] * 2,
    ):
        existing = [refused(acme.get_dataset, theirs), refused(acme.delete_dataset, theirs)]
        absent = [refused(acme.get_dataset, missing), refused(acme.delete_dataset, missing)]
    for error, twin in zip(existing, absent, strict=True):
        assert (error.code, error.reason) == (twin.code, twin.reason) == denied
        assert error.metadata.keys() == twin.metadata.keys()
        assert error.message.replace(theirs, missing) == twin.message
    # The refused delete deleted nothing, and acme does not even list brightmart's dataset.
    assert server.client("brightmart").get_dataset(theirs).name == theirs
    assert list(acme.list_datasets(PARENT)) == []
    assert len(files_under(server.data_dir / "datasets")) == 1


def test_owner_gets_and_deletes_its_own_and_administrator_sees_missing(
    server: RunningServer, tmp_path: Path
) -> None:
    own = upload(server, tmp_path, "brightmart", "brightmart-list")
    brightmart, operator = server.client("brightmart"), server.client("operator")
    missing = dataset_name("brightmart-missing")
    with logged(
        server,
        ("GetDataset", "partners/brightmart", "OK", ""),
        ("GetDataset", "partners/operator", "OK", ""),
        ("GetDataset", "partners/operator", "NOT_FOUND", "DATASET_NOT_FOUND"),
        ("DeleteDataset", "partners/operator", "NOT_FOUND", "DATASET_NOT_FOUND"),
        ("DeleteDataset", "partners/brightmart", "OK", ""),
    ):
        dataset = brightmart.get_dataset(own)
        assert operator.get_dataset(own) == dataset
        not_found = refused(operator.get_dataset, missing)
        assert (not_found.code, not_found.reason) == ("NOT_FOUND", "DATASET_NOT_FOUND")
        assert not_found.metadata["dataset"] == missing
        not_deleted = refused(operator.delete_dataset, missing)
        assert (not_deleted.code, not_deleted.reason) == ("NOT_FOUND", "DATASET_NOT_FOUND")
        brightmart.delete_dataset(own)
    assert dataset.owner == "partners/brightmart"
    assert_nothing_stored(server)
    roles = {e.caller: e.caller_roles for e in server.events(method="GetDataset")}
    assert roles == {
        "partners/brightmart": ("analyst", "uploader"),
        "partners/operator": ("admin",),
    }


# The auditor ------------------------------------------------------------------------------


def test_auditor_cannot_upload_nor_create_or_read_reports(
    server: RunningServer, tmp_path: Path
) -> None:
    acme_list = upload(server, tmp_path, "acme", "acme-list")
    corvid_list = upload(server, tmp_path, "corvid", "corvid-list")
    report = server.client("acme").create_report(PARENT, base=acme_list, others=[corvid_list])
    ledger = server.client("ledger")
    path = digest_file(tmp_path)
    denied = ("PERMISSION_DENIED", "ROLE_REQUIRED")
    caller = "partners/ledger"
    with logged(
        server,
        ("UploadDataset", caller, *denied),
        ("CreateOverlapReport", caller, *denied),
        ("GetOverlapReport", caller, *denied),
        ("ListOverlapReports", caller, *denied),
        ("GetDataset", caller, *denied),
    ):
        errors = [
            ("uploader", refused(ledger.upload, path, dataset_id="ledger-list")),
            (
                "analyst",
                refused(ledger.create_report, PARENT, base=acme_list, others=[corvid_list]),
            ),
            ("admin or analyst", refused(ledger.get_report, report.name)),
            ("admin or analyst", refused(ledger.list_reports, PARENT)),
            ("admin or analyst or uploader", refused(ledger.get_dataset, acme_list)),
        ]
    for role, error in errors:
        assert (error.code, error.reason) == denied
        assert error.metadata["required_role"] == role
    # What the auditor may do: read the query log, which holds each of those refusals.
    events = list(ledger.list_audit_events(PARENT, caller=caller))
    assert [e.outcome.reason for e in events] == ["ROLE_REQUIRED"] * 5
    assert len(list(server.client("acme").list_reports(PARENT))) == 1


# Reports: the base dataset is the analyst's own; reports are the creator's ---------------


def test_report_base_must_be_own_dataset_and_report_is_private_to_its_creator(
    server: RunningServer, tmp_path: Path
) -> None:
    acme_list = upload(server, tmp_path, "acme", "acme-list")
    brightmart_list = upload(server, tmp_path, "brightmart", "brightmart-list")
    corvid_list = upload(server, tmp_path, "corvid", "corvid-list")
    acme, brightmart = server.client("acme"), server.client("brightmart")
    not_owner = ("PERMISSION_DENIED", "DATASET_NOT_ACCESSIBLE")
    not_creator = ("PERMISSION_DENIED", "NOT_REPORT_CREATOR")
    with logged(
        server,
        ("CreateOverlapReport", "partners/acme", *not_owner),
        ("CreateOverlapReport", "partners/acme", *not_owner),
        ("CreateOverlapReport", "partners/acme", "OK", ""),
        ("GetOverlapReport", "partners/brightmart", *not_creator),
        ("GetOverlapReport", "partners/brightmart", *not_creator),
        ("ListOverlapReports", "partners/brightmart", "OK", ""),
        ("GetOverlapReport", "partners/acme", "OK", ""),
        ("ListOverlapReports", "partners/acme", "OK", ""),
    ):
        others_base = refused(acme.create_report, PARENT, base=brightmart_list, others=[acme_list])
        missing_base = refused(
            acme.create_report,
            PARENT,
            base=dataset_name("brightmart-missing"),
            others=[acme_list],
        )
        # Other brands' datasets are fine as `other_datasets`.
        report = acme.create_report(PARENT, base=acme_list, others=[brightmart_list, corvid_list])
        theirs = refused(brightmart.get_report, report.name)
        absent = refused(brightmart.get_report, MISSING_REPORT)
        assert list(brightmart.list_reports(PARENT)) == []
        assert acme.get_report(report.name) == report
        assert list(acme.list_reports(PARENT)) == [report]
    assert (others_base.code, others_base.reason) == not_owner
    assert (missing_base.code, missing_base.reason) == not_owner
    assert (theirs.code, theirs.reason) == (absent.code, absent.reason) == not_creator
    assert theirs.message.replace(report.name, MISSING_REPORT) == absent.message
    assert report.creator == "partners/acme"
    assert list(report.other_datasets) == [brightmart_list, corvid_list]
    (created,) = [e for e in server.events("CreateOverlapReport") if e.outcome.status_code == "OK"]
    assert report.name in created.resources
