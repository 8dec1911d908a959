"""Exact mode (no noise) against a determined partner: every attack of issue 11, k = 10.

Each attack runs in two worlds that differ only in brightmart's rows: the target person is
in its list, or a stranger stands in their place (so its size is the same). The attacker
is acme (uploader and analyst), sometimes with a colluding brand. What acme sees must be
the same in both worlds, or, where a released count holds the target among people acme
cannot tell apart, the estimate the attack computes must be.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pyarrow import ipc

from cleanroom.config import parse_config
from cleanroom.ops.metrics import CallMetrics
from cleanroom.service.server import audit_interceptor, build_server
from cleanroom.tls.pki import DemoPki, partner_dns_name
from cleanroom.usecases.clean_room import CleanRoom
from cleanroom.v1 import overlap_report_pb2, partner_service_pb2, partner_service_pb2_grpc
from tests.privacy.attack import (
    World,
    fresh,
    in_two_worlds,
    observe,
    upload,
    upload_columns,
)
from tests.support import COLLABORATION, KCV, RunningServer, config_data, running_server

PARENT = f"collaborations/{COLLABORATION}"
QUOTA = "EXACT_RELEASE_QUOTA_USED"


class People:
    """The same people in both worlds (seeded): brightmart's list, acme's, the target."""

    def __init__(self, seed: int = 31) -> None:
        rng = np.random.default_rng(seed)
        self.victims = fresh(rng, 200)  # brightmart's customers
        self.target, self.stranger = fresh(rng, 1), fresh(rng, 1)
        self.padding = fresh(rng, 100)  # acme's customers that brightmart does not have
        self.more_padding = fresh(rng, 40)
        self.phones = {v: p for v, p in zip(self.victims + self.target, fresh(rng, 201),
                                            strict=True)}  # fmt: skip

    def audience(self) -> list[bytes]:
        """acme's audience: half of brightmart's customers, and its own."""
        return self.victims[:100] + self.padding

    def victim_list(self, world: World) -> list[bytes]:
        return self.victims + (self.target if world.member else self.stranger)


def refused_with(view: Any, reason: str) -> bool:
    return isinstance(view, tuple) and view[0] == "refused" and view[2] == reason


def _victim(world: World, people: People) -> str:
    return world.upload("brightmart", people.victim_list(world), dataset_id="brightmart-crm")


def test_delete_and_upload_again_with_the_target(pki: DemoPki, tmp_path: Path) -> None:
    people = People()

    def attack(world: World) -> list[Any]:
        victim = _victim(world, people)
        base = world.upload("acme", people.audience(), dataset_id="acme-audience")
        first = world.report("acme", base, [victim])
        world.server.client("acme").delete_dataset(base)
        again = world.upload("acme", people.audience() + people.target, dataset_id="acme-audience")
        return [first, world.report("acme", again, [victim])]

    without, with_target = in_two_worlds(pki, tmp_path, attack)
    assert without == with_target
    assert refused_with(with_target[1], QUOTA)


def test_padding_so_the_audiences_differ_by_more_than_k(pki: DemoPki, tmp_path: Path) -> None:
    people = People()

    def attack(world: World) -> list[Any]:
        victim = _victim(world, people)
        base = world.upload("acme", people.audience(), dataset_id="acme-audience")
        # 40 rows that match nothing: the two audiences differ by 41 rows, far above k.
        padded = people.audience() + people.target + people.more_padding
        twin = world.upload("acme", padded, dataset_id="acme-audience-2")
        return [world.report("acme", base, [victim]), world.report("acme", twin, [victim])]

    without, with_target = in_two_worlds(pki, tmp_path, attack)
    assert without == with_target
    assert refused_with(with_target[1], QUOTA)


def test_another_identifier_type_for_the_second_audience(pki: DemoPki, tmp_path: Path) -> None:
    people = People()

    def attack(world: World) -> list[Any]:
        rows = people.victim_list(world)
        victim = upload_columns(
            world.server, "brightmart", world.tmp_path,
            {"email": rows, "phone": [people.phones.get(r) or r for r in rows]},
            dataset_id="brightmart-crm",
        )  # fmt: skip
        base = world.upload("acme", people.audience(), dataset_id="acme-emails")
        second = people.victims[:100] + people.target
        by_phone = upload_columns(
            world.server, "acme", world.tmp_path,
            {"phone": [people.phones[r] for r in second] + people.padding},
            dataset_id="acme-phones",
        )  # fmt: skip
        return [world.report("acme", base, [victim]), world.report("acme", by_phone, [victim])]

    without, with_target = in_two_worlds(pki, tmp_path, attack)
    assert without == with_target
    assert refused_with(with_target[1], QUOTA)


@pytest.mark.slow
def test_a_thousand_datasets_first(pki: DemoPki, tmp_path: Path) -> None:
    """A check that read one page of the owner's datasets no longer saw the audience once
    1,000 others sorted before it. The quota counts reports, not datasets: the second
    question is refused however many datasets came first. (One world: the first
    report holds no trace of the target, as the tests above show.)"""
    people = People()
    small = fresh(np.random.default_rng(5), 10)
    with running_server(pki, tmp_path / "data") as server:
        world = World(server, tmp_path, member=True)
        victim = _victim(world, people)
        uploads = partner_service_pb2_grpc.PartnerServiceStub(server.connection("acme").channel())
        batch = pa.record_batch([pa.array(small, pa.binary(32))], names=["email"])
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        chunk = sink.getvalue().to_pybytes()

        def small_upload(i: int) -> None:  # the same small list each time, over the wire
            header = partner_service_pb2.DatasetUploadHeader(
                parent=PARENT, dataset_id=f"acme-a-{i:04d}", identifier_types=["email"],
                key_check_value=KCV, row_count=len(small),
                checksum=hashlib.sha256(chunk).hexdigest(),
            )  # fmt: skip
            uploads.UploadDataset(
                iter([
                    partner_service_pb2.UploadDatasetRequest(header=header),
                    partner_service_pb2.UploadDatasetRequest(record_batches=chunk),
                ]),
                timeout=60,
            )  # fmt: skip

        # Two at a time (the most one partner may run): each waits a moment to commit.
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(small_upload, range(1000)))
        assert len(server.clean_room.catalog.datasets(COLLABORATION, owner="acme", after="",
                                                      limit=2000)) == 1000  # fmt: skip
        base = world.upload("acme", people.audience(), dataset_id="acme-z-audience")
        twin = world.upload("acme", people.audience() + people.target,
                            dataset_id="acme-z-twin")  # fmt: skip
        assert isinstance(world.report("acme", base, [victim]), bytes)
        assert refused_with(world.report("acme", twin, [victim]), QUOTA)


@contextmanager
def _server_with_a_second_certificate(pki: DemoPki, data_dir: Path) -> Iterator[RunningServer]:
    """A test server where acme's partner entry also names the "stranger" certificate."""
    data = config_data(pki, data_dir)
    acme = next(p for p in data["partners"] if p["id"] == "acme")
    acme["certificate_names"].append(partner_dns_name("stranger"))
    config = parse_config(data, base_dir=data_dir)
    room = CleanRoom(config)
    metrics = CallMetrics()
    interceptor = audit_interceptor(room, metrics)
    grpc_server, port = build_server(room, interceptor=interceptor)
    running = RunningServer(pki, config, room, grpc_server, port, interceptor, metrics)
    try:
        yield running
    finally:
        running.stop()


def test_a_second_certificate_of_the_same_brand(pki: DemoPki, tmp_path: Path) -> None:
    """The quota is the brand's, not the certificate's: by default, with no setting."""
    people = People()
    seen = []
    for member in (False, True):
        where = tmp_path / ("with" if member else "without")
        where.mkdir()
        with _server_with_a_second_certificate(pki, where / "data") as server:
            world = World(server, where, member)
            victim = _victim(world, people)
            base = world.upload("acme", people.audience(), dataset_id="acme-audience")
            padded = people.audience() + people.target + people.more_padding
            twin = upload(server, "stranger", where, padded, dataset_id="acme-twin")
            seen.append([world.report("acme", base, [victim]),
                         world.report("stranger", twin, [victim])])  # fmt: skip
    assert seen[0] == seen[1]
    assert refused_with(seen[1][1], QUOTA)
    assert ("scope", "member") in seen[1][1][4]


def _second_identity(world: World, people: People) -> list[Any]:
    """acme reports; corvid, colluding, uploads the same audience plus the target."""
    victim = _victim(world, people)
    base = world.upload("acme", people.audience(), dataset_id="acme-audience")
    twin = world.upload("corvid", people.audience() + people.target, dataset_id="corvid-twin")
    return [world.report("acme", base, [victim]), world.report("corvid", twin, [victim])]


def test_a_second_partner_identity_with_the_collaboration_quota(
    pki: DemoPki, tmp_path: Path
) -> None:
    people = People()
    without, with_target = in_two_worlds(
        pki,
        tmp_path,
        lambda world: _second_identity(world, people),
        exact_releases_per_dataset_version_in_collaboration=1,
    )
    assert without == with_target
    assert refused_with(with_target[1], QUOTA)
    assert ("scope", "collaboration") in with_target[1][4]


def test_two_colluding_brands_are_a_limit_of_exact_mode_by_default(
    pki: DemoPki, tmp_path: Path
) -> None:
    """README "Privacy model": without the collaboration-wide quota, two member brands
    that pool their reports can difference them. Noise mode covers them; exact mode
    covers them only with `exact_releases_per_dataset_version_in_collaboration = 1`."""
    people = People()
    without, with_target = in_two_worlds(
        pki, tmp_path, lambda world: _second_identity(world, people)
    )
    assert without[0] == with_target[0]
    assert without[1] != with_target[1]  # the pooled second report tells the worlds apart


def test_a_segment_of_the_target_and_k_minus_1_rows_that_match_nothing(
    pki: DemoPki, tmp_path: Path
) -> None:
    people = People()

    def attack(world: World) -> list[Any]:
        victim = _victim(world, people)
        rows = people.victims[:100] + people.padding[:40] + people.target + people.padding[40:49]
        tiers = ["big"] * 140 + ["probe"] * 10  # probe: the target and 9 rows matching nothing
        base = world.upload("acme", rows, tiers, dataset_id="acme-probe")
        return [world.report("acme", base, [victim], "tier")]

    without, with_target = in_two_worlds(pki, tmp_path, attack)
    assert without == with_target
    report = overlap_report_pb2.OverlapReport.FromString(without[0])
    assert any(c.base_row_count.HasField("value") for c in report.membership_cells)


def _cell(view: Any, segment: str, matched: bool) -> int | None:
    if not isinstance(view, bytes):
        return None
    report = overlap_report_pb2.OverlapReport.FromString(view)
    for cell in report.membership_cells:
        if cell.segment == segment and bool(cell.matched_datasets) == matched:
            return cell.base_row_count.value if cell.base_row_count.HasField("value") else None
    return None


def test_two_segment_columns_identical_but_for_the_target(pki: DemoPki, tmp_path: Path) -> None:
    people = People()

    def attack(world: World) -> int | None:
        victim = _victim(world, people)
        rows = people.victims[:100] + people.padding + people.target
        first = ["a", "b"] * 100 + ["a"]
        second = ["a", "b"] * 100 + ["b"]
        base = upload_columns(
            world.server, "acme", world.tmp_path, {"email": rows},
            {"tier": first, "tier2": second}, dataset_id="acme-two-columns",
        )  # fmt: skip
        by_first = world.report("acme", base, [victim], "tier")
        by_second = world.report("acme", base, [victim], "tier2")
        a_first, a_second = _cell(by_first, "a", True), _cell(by_second, "a", True)
        if a_first is None or a_second is None:
            return None
        return a_first - a_second  # 1 if the target is brightmart's, else 0

    without, with_target = in_two_worlds(pki, tmp_path, attack)
    assert without == with_target is None


def test_two_of_the_attackers_datasets_in_one_report(pki: DemoPki, tmp_path: Path) -> None:
    people = People()

    def attack(world: World) -> list[Any]:
        victim = _victim(world, people)
        base = world.upload("acme", people.audience(), dataset_id="acme-audience")
        # The twin is the base plus the target and 40 rows that match nothing (so it is
        # no near-duplicate): rows of the twin matching brightmart minus rows of the base
        # matching it would tell.
        padded = people.audience() + people.target + people.more_padding
        twin = world.upload("acme", padded, dataset_id="acme-twin")
        return [world.report("acme", base, [twin, victim])]

    without, with_target = in_two_worlds(pki, tmp_path, attack)
    assert without == with_target
    assert refused_with(with_target[0], "EXACT_REPORT_SHAPE")


def test_the_two_directions_of_a_pair_sharing_two_types(pki: DemoPki, tmp_path: Path) -> None:
    """acme holds the target's email and phone in two rows; brightmart holds them in one.

    Rows of acme matching brightmart count both; rows of brightmart matching acme count
    one: their difference is 1 if the target is brightmart's, 0 if not, whatever the
    shared customers are.
    """
    people = People()

    def attack(world: World) -> int | None:
        rows = people.victim_list(world)
        phones = [people.phones.get(r) or r for r in rows]
        victim = upload_columns(world.server, "brightmart", world.tmp_path,
                                {"email": rows, "phone": phones}, dataset_id="brightmart-crm")  # fmt: skip
        shared = people.victims[:100]
        emails: list[bytes | None] = [*shared, people.target[0], None, *people.padding]
        mobiles: list[bytes | None] = [*(people.phones[r] for r in shared), None,
                                       people.phones[people.target[0]], *people.padding]  # fmt: skip
        base = upload_columns(world.server, "acme", world.tmp_path,
                              {"email": emails, "phone": mobiles}, dataset_id="acme-two-types")  # fmt: skip
        view = world.report("acme", base, [victim])
        if not isinstance(view, bytes):
            return None
        report = overlap_report_pb2.OverlapReport.FromString(view)
        counts = {
            (p.dataset, p.matched_dataset): p.matched_row_count.value
            for p in report.pairwise_overlaps
            if p.matched_row_count.HasField("value")
        }
        if (base, victim) not in counts or (victim, base) not in counts:
            return None
        return counts[base, victim] - counts[victim, base]

    without, with_target = in_two_worlds(pki, tmp_path, attack)
    assert without == with_target is None


def test_the_same_question_again_returns_the_stored_report(pki: DemoPki, tmp_path: Path) -> None:
    people = People()

    def attack(world: World) -> list[Any]:
        victim = _victim(world, people)
        base = world.upload("acme", people.audience(), dataset_id="acme-audience")
        acme = world.server.client("acme")
        first = acme.create_report_response(PARENT, base=base, others=[victim])
        again = acme.create_report_response(PARENT, base=base, others=[victim])
        assert (first.reused, again.reused) == (False, True)
        assert again.overlap_report == first.overlap_report
        return [observe(lambda: again.overlap_report)]

    without, with_target = in_two_worlds(pki, tmp_path, attack)
    assert without == with_target


def test_the_estimate_tells_the_quota_before_asking(pki: DemoPki, tmp_path: Path) -> None:
    people = People()
    with running_server(pki, tmp_path / "data") as server:
        world = World(server, tmp_path, member=True)
        victim = _victim(world, people)
        base = world.upload("acme", people.audience(), dataset_id="acme-audience")
        twin = world.upload("acme", people.audience() + people.more_padding,
                            dataset_id="acme-audience-2")  # fmt: skip
        acme = server.client("acme")

        def estimate(mine: str) -> Any:
            return acme.create_report_response(
                PARENT, base=mine, others=[victim], validate_only=True
            ).estimate

        first = estimate(base)
        assert (first.allowed, first.noise, first.epsilon_cost) == (True, False, 0.0)
        acme.create_report(PARENT, base=base, others=[victim])
        assert estimate(base).reused
        later = estimate(twin)
        assert (later.allowed, later.refusal_reason) == (False, QUOTA)
