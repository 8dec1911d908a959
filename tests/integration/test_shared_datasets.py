"""Finding partners' datasets: members list every dataset of the collaboration, without sizes.

Before ListSharedDatasets an analyst could not learn another brand's dataset ids from the
clean room at all (ListDatasets shows a brand its own datasets only), so the first report
needed an email to the other brand.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from google.protobuf import json_format

from partners.cli import main
from partners.errors import AccessDeniedError
from tests.support import (
    BRANDS,
    COLLABORATION,
    RunningServer,
    dataset_name,
    digest_array,
    random_digests,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
METHOD = "/cleanroom.v1.PartnerService/ListSharedDatasets"


def _upload(server: RunningServer, tmp_path: Path, brand: str, rows: int, seed: int) -> str:
    digests = random_digests(np.random.default_rng(seed), rows)
    path = write_digest_file(
        tmp_path / f"{brand}.parquet",
        {"email": digest_array(digests)},
        {"tier": ["gold"] * rows},
    )
    dataset_id = f"{brand}-crm"
    server.client(brand).upload(path, dataset_id=dataset_id)
    return dataset_name(dataset_id)


def test_members_see_every_dataset_but_no_size(server: RunningServer, tmp_path: Path) -> None:
    acme = _upload(server, tmp_path, "acme", 120, 1)
    brightmart = _upload(server, tmp_path, "brightmart", 345, 2)

    # ListDatasets shows a brand its own only; the shared listing shows both brands'.
    assert [d.name for d in server.client("acme").list_datasets(PARENT)] == [acme]
    shared = list(server.client("acme").list_shared_datasets(PARENT))
    assert [(d.name, d.owner) for d in shared] == [
        (acme, "partners/acme"),
        (brightmart, "partners/brightmart"),
    ]
    for d in shared:
        assert list(d.identifier_types) == ["email"]
        assert list(d.segment_columns) == ["tier"]
        assert d.create_time.seconds > 0
        fields = json_format.MessageToDict(d, preserving_proto_field_name=True)
        # No size in any form: the message has no field for a row count, checksum or stats.
        assert set(fields) == {
            "name",
            "owner",
            "identifier_types",
            "segment_columns",
            "create_time",
        }
    assert [d.name for d in server.client("brightmart").list_shared_datasets(PARENT)] == [
        acme,
        brightmart,
    ]


@pytest.mark.parametrize(
    ("partner", "parent", "reason"),
    [
        ("outsider", PARENT, "NOT_A_MEMBER"),
        ("ledger", PARENT, "ROLE_REQUIRED"),  # the auditor reads the log, not the catalog
        ("acme", "collaborations/no-such-thing", "NOT_A_MEMBER"),
        ("stranger", PARENT, "UNKNOWN_CERTIFICATE"),  # a certificate of no partner
    ],
)
def test_only_members_may_list_and_every_call_is_logged(
    server: RunningServer, tmp_path: Path, partner: str, parent: str, reason: str
) -> None:
    _upload(server, tmp_path, "acme", 50, 3)
    with pytest.raises(AccessDeniedError) as refused:
        list(server.client(partner).list_shared_datasets(parent))
    assert refused.value.reason == reason
    assert "acme-crm" not in refused.value.message
    list(server.client("brightmart").list_shared_datasets(PARENT))
    events = server.events(METHOD)
    outcomes = [(e.caller, e.outcome.status_code) for e in events]
    assert ("partners/brightmart", "OK") in outcomes
    if partner == "stranger":
        assert any(code == "UNAUTHENTICATED" for _, code in outcomes)
    elif parent == PARENT:
        assert (f"partners/{partner}", "PERMISSION_DENIED") in outcomes


def test_the_command_line_lists_shared_datasets(server: RunningServer, tmp_path: Path) -> None:
    _upload(server, tmp_path, "acme", 60, 4)
    _upload(server, tmp_path, "corvid", 70, 5)
    connection = server.connection("corvid")
    env = {
        "CLEANROOM_SERVER": connection.target,
        "CLEANROOM_CERT": str(connection.certificate),
        "CLEANROOM_KEY": str(connection.private_key),
        "CLEANROOM_CA": str(connection.ca_certificate),
        "CLEANROOM_SERVER_NAME": "localhost",
        "COLUMNS": "100",
    }
    args = ["datasets", "list", "--shared", f"--collaboration={COLLABORATION}"]
    table = CliRunner().invoke(main, args, env=env)
    assert table.exit_code == 0, table.output
    assert "acme-crm" in table.output
    assert "acme " in table.output  # the owner column
    assert "rows" not in table.output
    listed = CliRunner().invoke(main, [*args, "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [d["owner"] for d in json.loads(listed.output)] == ["partners/acme", "partners/corvid"]


def test_the_listing_pages(server: RunningServer, tmp_path: Path) -> None:
    from cleanroom.v1 import partner_service_pb2, partner_service_pb2_grpc

    names = [_upload(server, tmp_path, brand, 40, i) for i, brand in enumerate(BRANDS)]
    with server.connection("corvid").channel() as channel:
        stub = partner_service_pb2_grpc.PartnerServiceStub(channel)
        seen, token = [], ""
        while True:
            request = partner_service_pb2.ListSharedDatasetsRequest(
                parent=PARENT, page_size=1, page_token=token
            )
            page = stub.ListSharedDatasets(request, timeout=30)
            assert len(page.shared_datasets) <= 1
            seen += [d.name for d in page.shared_datasets]
            token = page.next_page_token
            if not token:
                break
        assert seen == sorted(names)
        # A token that is not one of this listing is refused as bad input.
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListSharedDatasets(
                partner_service_pb2.ListSharedDatasetsRequest(
                    parent=PARENT, page_token="bm90LWEtdG9rZW4"
                ),
                timeout=30,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
