"""Double-blind leaks (issue 18, SPEC section 8): what the operator and one brand can learn.

The operator shares the server's whole data directory, copied at every stage of the
masking, with one brand (acme): its collaboration secret, its blind key and every hop it
took. Together they try to decide, for each of 200 known emails, whether it is in
brightmart's dataset (half of them are), by every attack of `tests.privacy.blind_attack`:
they must do no better than a coin (accuracy at most 0.5 plus four standard deviations).
With the shuffles of the server and of the brand both taken out, the attack through the
row order wins every trial (checked by hand: a mutation, not a test).

Every hop is recorded as the brand received it, through the bare stubs: a brand is never
handed a dataset whose mask set holds it, nor a value in any form the test can compute
without the server's blinding, and no two sets a brand receives (a retried attempt of the
same hop included) share an element. No response of any RPC carries any form of any
uploaded value.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pytest
from google.protobuf.message import Message
from pyarrow import ipc

from cleanroom.group import ristretto255 as group
from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    masking_service_pb2,
    masking_service_pb2_grpc,
    overlap_report_pb2,
    partner_service_pb2,
    partner_service_pb2_grpc,
    report_service_pb2,
    report_service_pb2_grpc,
)
from tests.double_blind import (
    ONE,
    HopWorker,
    as_scalar,
    catalog_mask_set,
    catalog_values,
    email_digests,
    forms,
    hop_name,
    partner_name,
    reason_of,
    rows_of,
    rpc_error_bytes,
    state_of,
)
from tests.privacy.blind_attack import Attacker, attack, decoded_runs
from tests.support import (
    BRANDS,
    COLLABORATION,
    RunningServer,
    dataset_name,
    digest_array,
    running_server,
    write_digest_file,
)

pytestmark = pytest.mark.slow

PARENT = f"collaborations/{COLLABORATION}"
PROBES = 200
WINDOW = 8


def dataset_id(brand: str) -> str:
    return f"{brand}-list"


def owner_of(dataset: str) -> str:
    return dataset.rsplit("/", 1)[-1].removesuffix("-list")


def customer_lists(rng: np.random.Generator) -> tuple[dict[str, list[str]], np.ndarray[Any, Any]]:
    """The emails of each brand, and which probes are planted in brightmart's list."""
    probes = [f"probe.{i}@example.org" for i in range(PROBES)]
    planted = np.zeros(PROBES, dtype=np.bool_)
    planted[rng.permutation(PROBES)[: PROBES // 2]] = True
    lists = {
        "acme": probes + [f"acme.{i}@example.com" for i in range(150)],
        "brightmart": [e for e, p in zip(probes, planted, strict=True) if p]
        + [f"bright.{i}@example.net" for i in range(400)],
        "corvid": [f"corvid.{i}@example.io" for i in range(300)],
    }
    return {b: [emails[i] for i in rng.permutation(len(emails))] for b, emails in lists.items()}, (
        planted
    )


class Responses:
    """The bytes of every response and error the brands and others received."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def call(self, method: Callable[..., Any], request: Message) -> Any:
        try:
            response = method(request, timeout=30)
        except grpc.RpcError as error:
            self.payloads += rpc_error_bytes(error)
            return None
        self.payloads.append(response.SerializeToString())
        return response

    def stream(self, method: Callable[..., Any], request: Message) -> list[Any]:
        """A server stream's messages (a refused one must end with no message)."""
        received: list[Any] = []
        try:
            for message in method(request, timeout=30):
                received.append(message)
                self.payloads.append(message.SerializeToString())
        except grpc.RpcError as error:
            self.payloads += rpc_error_bytes(error)
        return received

    def ask_everything(self, server: RunningServer) -> None:
        """Every read-only RPC of every service, by every partner, allowed or refused."""
        datasets = [dataset_name(dataset_id(b)) for b in (*BRANDS, "missing")]
        for partner in (*BRANDS, "ledger", "operator", "outsider"):
            channel = server.connection(partner).channel()
            try:
                self._ask(partner, channel, datasets)
            finally:
                channel.close()

    def _ask(self, partner: str, channel: grpc.Channel, datasets: list[str]) -> None:
        partners = partner_service_pb2_grpc.PartnerServiceStub(channel)
        reports = report_service_pb2_grpc.ReportServiceStub(channel)
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        masking = masking_service_pb2_grpc.MaskingServiceStub(channel)
        self.call(
            masking.ListMaskingHops, masking_service_pb2.ListMaskingHopsRequest(parent=PARENT)
        )
        self.call(partners.ListDatasets, partner_service_pb2.ListDatasetsRequest(parent=PARENT))
        self.call(
            partners.ListSharedDatasets,
            partner_service_pb2.ListSharedDatasetsRequest(parent=PARENT),
        )
        for name in datasets:
            self.call(partners.GetDataset, partner_service_pb2.GetDatasetRequest(name=name))
            for masker in BRANDS:  # hops of others' datasets, and of its own, by anyone
                if masker != partner or name.endswith(f"/{partner}-list"):
                    request = masking_service_pb2.StartMaskingHopRequest(
                        name=f"{name}/maskingHops/{masker}"
                    )
                    rows = self.stream(masking.StartMaskingHop, request)
                    assert rows == [], f"{partner} was handed {request.name}"
        base = dataset_name(dataset_id(partner))
        for segment in ("", "tier"):
            question = overlap_report_pb2.OverlapReport(
                base_dataset=base,
                other_datasets=[d for d in datasets[:3] if d != base][:2],
                segment_column=segment,
            )
            self.call(
                reports.CreateOverlapReport,
                report_service_pb2.CreateOverlapReportRequest(
                    parent=PARENT, overlap_report=question
                ),
            )
        self.call(
            reports.ListOverlapReports, report_service_pb2.ListOverlapReportsRequest(parent=PARENT)
        )
        self.call(audit.ListAuditEvents, audit_service_pb2.ListAuditEventsRequest(parent=PARENT))


def windows(values: set[bytes]) -> set[bytes]:
    return {v[i : i + WINDOW] for v in values for i in range(32 - WINDOW + 1)}


def leaked(payload: bytes, secrets: set[bytes]) -> bool:
    return any(payload[i : i + WINDOW] in secrets for i in range(len(payload) - WINDOW + 1))


def snapshot(server: RunningServer, folder: Path, label: str) -> Path:
    """A copy of every file under the data directory, as the operator could take it."""
    copy = folder / label
    shutil.copytree(server.data_dir, copy)
    return copy


def take_hops(
    server: RunningServer,
    worker: HopWorker,
    masks_before: dict[str, list[str]],
    responses: Responses,
    *,
    retry_first: bool,
) -> int:
    """The brand takes each pending hop; the first one twice (an abandoned attempt first)."""
    taken = 0
    for hop in worker.hops(COLLABORATION):
        owner = owner_of(hop.dataset)
        state = state_of(server.client(owner).get_dataset(hop.dataset))
        assert hop.partner == partner_name(worker.brand), hop
        assert hop.name == hop_name(COLLABORATION, dataset_id(owner), worker.brand)
        assert partner_name(worker.brand) not in state[1], (hop.name, state)
        assert partner_name(worker.brand) in state[2], (hop.name, state)
        stored = catalog_mask_set(server.data_dir, COLLABORATION, dataset_id(owner))
        assert stored == {m.removeprefix("partners/") for m in state[1]}, (hop.name, stored)
        assert worker.brand not in stored, (hop.name, stored)
        if retry_first and not taken:
            abandoned = worker.start(hop.name)
            masks_before[abandoned.attempt_id] = state[1]
            assert abandoned.table.num_rows == hop.row_count
        delivery = worker.start(hop.name)
        masks_before[delivery.attempt_id] = state[1]
        if retry_first and not taken:
            assert delivery.attempt_id != abandoned.attempt_id
            with pytest.raises(grpc.RpcError) as superseded:
                worker.complete(abandoned)
            assert superseded.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert reason_of(superseded.value) == "MASKING_HOP_ATTEMPT_SUPERSEDED"
            responses.payloads += rpc_error_bytes(superseded.value)
        response = worker.complete(delivery)
        responses.payloads.append(response.SerializeToString())
        responses.payloads.append(delivery.first_message)
        taken += 1
    return taken


def test_the_operator_and_one_brand_do_no_better_than_chance(pki: DemoPki, tmp_path: Path) -> None:
    from partners import new_blind_key

    rng = np.random.default_rng(1818)
    lists, planted = customer_lists(rng)
    digests = {brand: email_digests(COLLABORATION, emails) for brand, emails in lists.items()}
    keys = {brand: new_blind_key() for brand in BRANDS}
    snapshots: list[Path] = []
    responses = Responses()
    masks_before: dict[str, list[str]] = {}
    data_dir = tmp_path / "data"
    with running_server(pki, data_dir, collaboration={"matching": "double_blind"}) as server:
        for brand in BRANDS:
            segments = (
                None
                if brand == "corvid"
                else {"tier": list(rng.choice(["a", "b"], len(lists[brand])))}
            )
            path = write_digest_file(
                tmp_path / f"{brand}.parquet", {"email": digest_array(digests[brand])}, segments
            )
            server.client(brand).upload(path, dataset_id=dataset_id(brand), blind_key=keys[brand])
        snapshots.append(snapshot(server, tmp_path / "copies", "0-uploaded"))
        responses.ask_everything(server)
        workers = {b: HopWorker(b, keys[b], server.connection(b)) for b in BRANDS}
        try:
            for round_ in range(1, 2 * len(BRANDS) + 2):
                taken = 0
                for brand in BRANDS:
                    took = take_hops(
                        server, workers[brand], masks_before, responses, retry_first=round_ == 1
                    )
                    if took:
                        snapshots.append(snapshot(server, tmp_path / "copies", f"{round_}-{brand}"))
                    taken += took
                    if round_ == 1 and brand == "acme":
                        responses.ask_everything(server)  # while some hops are pending
                if not taken:
                    break
            for brand in BRANDS:
                state = state_of(server.client(brand).get_dataset(dataset_name(dataset_id(brand))))
                assert state == (
                    "MATCHING_STATE_MATCHABLE",
                    sorted(partner_name(b) for b in BRANDS),
                    [],
                )
            responses.ask_everything(server)  # reports released, applied hops refused
        finally:
            for worker in workers.values():
                worker.close()
    snapshots.append(snapshot_of_stopped(data_dir, tmp_path / "copies"))

    every_form = set().union(
        *(f for brand in BRANDS for f in forms({"email": digests[brand]}, keys).values())
    )
    check_deliveries(workers, masks_before, digests, keys, every_form)
    check_responses(responses, every_form)

    attacker = Attacker(keys["acme"], dataset_id("acme"))
    for copy in snapshots:
        attacker.read_directory(copy)
    attacker.read_traffic("received", (d.table for d in workers["acme"].deliveries))
    attacker.read_traffic("sent", workers["acme"].results)
    probes = email_digests(COLLABORATION, [f"probe.{i}@example.org" for i in range(PROBES)])
    results = attack(attacker, probes, "email", planted)
    for verdict in results:
        assert verdict.accuracy <= verdict.bound, (verdict, results)
    # The attack had what it should: every blinding scalar the catalog ever held, and the
    # attacker's rows through every later form of its dataset.
    for copy in snapshots:
        for table, column, value in catalog_values(copy / "cleanroom.sqlite3"):
            if column in ("factor", "blinding") and value is not None:
                assert as_scalar(value) in attacker.scalars, (copy.name, table, column)
    assert attacker.followed >= 2


def snapshot_of_stopped(data_dir: Path, folder: Path) -> Path:
    copy = folder / "stopped"
    shutil.copytree(data_dir, copy)
    return copy


def check_deliveries(
    workers: dict[str, HopWorker],
    masks_before: dict[str, list[str]],
    digests: dict[str, np.ndarray[Any, Any]],
    keys: dict[str, bytes],
    every_form: set[bytes],
) -> None:
    """What each brand was handed: never its own mask, never a known form, no repeats."""
    for brand, worker in workers.items():
        assert worker.deliveries, brand
        own = rows_of(group.mask_digests(keys[brand], digests[brand], "email"))
        seen: set[bytes] = set(own)
        for sent in worker.sent:
            seen |= sent
        for delivery in worker.deliveries:
            assert partner_name(brand) not in masks_before[delivery.attempt_id], delivery.hop
            elements = delivery.elements()
            assert len(elements) == delivery.table.num_rows  # one element a row, none repeated
            assert elements.isdisjoint(every_form), f"{brand} got unblinded values"
            assert elements.isdisjoint(seen), f"{brand} got a value it had seen before"
            seen |= elements


def check_responses(responses: Responses, every_form: set[bytes]) -> None:
    secrets = windows(every_form)
    assert len(responses.payloads) > 100
    for payload in responses.payloads:  # as bytes, and what its hex or base64 text holds
        assert not leaked(payload, secrets)
        assert not leaked(decoded_runs(payload), secrets)


# --- the attack itself can win: against stores that leak ------------------------------


def write_arrow(path: Path, column: np.ndarray[Any, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"email": pa.array([bytes(r) for r in column], pa.binary(32))})
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def test_the_attack_wins_against_a_store_of_unmasked_points(tmp_path: Path) -> None:
    """A server that kept P(d) (hashed to the group, no brand's key): membership shows."""
    rng = np.random.default_rng(5)
    lists, planted = customer_lists(rng)
    digests = {b: email_digests(COLLABORATION, e) for b, e in lists.items()}
    key = group.new_scalar()
    root = tmp_path / "leaky"
    write_arrow(root / "datasets" / "c--acme-list--1.arrow",
                group.mask_digests(key, digests["acme"], "email"))  # fmt: skip
    write_arrow(root / "datasets" / "c--brightmart-list--2.arrow",
                group.mask_digests(ONE, digests["brightmart"], "email"))  # fmt: skip
    attacker = Attacker(key, "acme-list")
    attacker.read_directory(root)
    probes = email_digests(COLLABORATION, [f"probe.{i}@example.org" for i in range(PROBES)])
    by_name = {v.name: v for v in attack(attacker, probes, "email", planted)}
    assert by_name["search"].accuracy == 1.0


def test_the_attack_wins_against_hops_that_keep_the_row_order(tmp_path: Path) -> None:
    """A hop whose rows were not shuffled: the attacker follows its rows and strips the
    server's stored factor and its own key, and finds the other brand's masked form."""
    import sqlite3

    rng = np.random.default_rng(6)
    lists, planted = customer_lists(rng)
    digests = {b: email_digests(COLLABORATION, e) for b, e in lists.items()}
    mine, theirs, factor = group.new_scalar(), group.new_scalar(), group.new_scalar()
    uploaded, later = tmp_path / "0", tmp_path / "1"
    acme = group.mask_digests(mine, digests["acme"], "email")
    write_arrow(uploaded / "datasets" / "c--acme-list--1.arrow", acme)
    write_arrow(uploaded / "datasets" / "c--brightmart-list--2.arrow",
                group.mask_digests(theirs, digests["brightmart"], "email"))  # fmt: skip
    # brightmart masked acme's rows without shuffling; the server kept them times a factor.
    write_arrow(later / "datasets" / "c--acme-list--3.arrow",
                group.multiply(group.multiply_scalars(factor, theirs), acme))  # fmt: skip
    database = sqlite3.connect(later / "cleanroom.sqlite3")
    database.execute("CREATE TABLE masking (dataset TEXT, factor BLOB)")
    database.execute("INSERT INTO masking VALUES ('acme-list', ?)", (factor,))
    database.commit()
    database.close()
    attacker = Attacker(mine, "acme-list")
    attacker.read_directory(uploaded)
    attacker.read_directory(later)
    probes = email_digests(COLLABORATION, [f"probe.{i}@example.org" for i in range(PROBES)])
    by_name = {v.name: v for v in attack(attacker, probes, "email", planted)}
    assert by_name["position"].accuracy == 1.0
    assert by_name["search"].accuracy <= by_name["search"].bound
