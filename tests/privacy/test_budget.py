"""Averaging and the budget: a repeated question gets the same figures and spends nothing;
varied questions stop at the budget, and the budget survives a server killed mid-flight."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cleanroom.demo.deployment import free_loopback_port, loopback_connection
from cleanroom.tls.pki import DemoPki
from partners.client import CleanRoomClient
from partners.errors import PrivacyRuleError
from tests.privacy.attack import fresh, upload
from tests.support import (
    BRANDS,
    COLLABORATION,
    dataset_name,
    running_server,
    write_config,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
NOISE = {"noise": True, "epsilon_budget": 3.0, "epsilon_per_report": 1.0}


def test_the_same_question_gets_byte_identical_figures_for_free(
    pki: DemoPki, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    with running_server(pki, tmp_path / "data", **NOISE) as server:
        shared = fresh(rng, 300)
        base = upload(server, "acme", tmp_path, shared + fresh(rng, 100), ["a", "b"] * 200)
        other = upload(server, "brightmart", tmp_path, shared + fresh(rng, 100))
        acme = server.client("acme")
        first = acme.create_report_response(
            PARENT, base=base, others=[other], segment_column="tier"
        )
        assert not first.reused
        assert first.overlap_report.noise.epsilon == 1.0
        for _ in range(5):
            again = acme.create_report_response(
                PARENT, base=base, others=[other], segment_column="tier"
            )
            assert again.reused
            assert (
                again.overlap_report.SerializeToString() == first.overlap_report.SerializeToString()
            )
        budget = acme.get_budget(PARENT)
        assert (budget.spent_epsilon, budget.remaining_epsilon, budget.released_reports) == (
            1.0,
            2.0,
            1,
        )
        spends = [e.outcome.epsilon_spent for e in server.events("CreateOverlapReport")]
        assert spends == [1.0, 0, 0, 0, 0, 0]  # every spend, and every free answer, is logged


def _members(**shares: float) -> list[dict[str, object]]:
    """The test collaboration's members, with the given epsilon shares."""
    members: list[dict[str, object]] = [
        {"partner": b, "roles": ["uploader", "analyst"], **({"epsilon_share": shares[b]}
                                                            if b in shares else {})}
        for b in BRANDS
    ]  # fmt: skip
    return [*members, {"partner": "ledger", "roles": ["auditor"]}]


def test_varied_questions_stop_at_the_member_share(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    policy = {"noise": True, "epsilon_budget": 4.0, "epsilon_per_report": 1.0}
    members = {"members": _members(acme=2.0)}  # brightmart and corvid: 1.0 each, the rest
    with running_server(pki, tmp_path / "data", collaboration=members, **policy) as server:
        shared = fresh(rng, 300)
        base = upload(server, "acme", tmp_path, shared + fresh(rng, 100), ["a", "b"] * 200)
        others = [
            upload(server, b, tmp_path, shared + fresh(rng, 100)) for b in ("brightmart", "corvid")
        ]
        acme = server.client("acme")
        for others_asked in ([others[0]], [others[1]]):
            acme.create_report(PARENT, base=base, others=others_asked)
        with pytest.raises(PrivacyRuleError) as refused:
            acme.create_report(PARENT, base=base, others=others, segment_column="tier")
        assert refused.value.code == "RESOURCE_EXHAUSTED"
        assert refused.value.reason == "PRIVACY_BUDGET_EXHAUSTED"
        assert refused.value.metadata["epsilon_remaining"] == "0"
        assert "your brand has 0 of its 2 left" in refused.value.message
        mine = acme.get_budget(PARENT)
        assert (mine.member, mine.member_share_epsilon, mine.member_spent_epsilon) == (
            "partners/acme",
            2.0,
            2.0,
        )
        assert (mine.member_remaining_epsilon, mine.remaining_epsilon) == (0, 2.0)
        # One brand cannot spend everyone's budget: brightmart still has its own share.
        mart = server.client("brightmart")
        theirs = mart.get_budget(PARENT)
        assert (theirs.member_share_epsilon, theirs.member_remaining_epsilon) == (1.0, 1.0)
        mart_base = upload(server, "brightmart", tmp_path, shared + fresh(rng, 100))
        mart.create_report(PARENT, base=mart_base, others=[base])
        assert mart.get_budget(PARENT).member_remaining_epsilon == 0
        # Questions answered before are still answered, for free.
        assert acme.create_report_response(PARENT, base=base, others=[others[0]]).reused
        assert server.events("CreateOverlapReport")[2].outcome.reason == "PRIVACY_BUDGET_EXHAUSTED"


def test_equal_shares_by_default(pki: DemoPki, tmp_path: Path) -> None:
    with running_server(pki, tmp_path / "data", **NOISE) as server:
        shares = {b: server.client(b).get_budget(PARENT).member_share_epsilon for b in BRANDS}
    assert shares == {b: 1.0 for b in BRANDS}  # 3.0 among three analyst brands


def _start(config: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "cleanroom", "serve", "--config", str(config)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _client(pki: DemoPki, port: int, partner: str) -> CleanRoomClient:
    client = CleanRoomClient(loopback_connection(pki, partner, port), timeout=30)
    client.wait_until_ready(30)  # the server is starting
    return client


def _upload(client: CleanRoomClient, tmp_path: Path, dataset_id: str, digests: list[bytes]) -> str:
    path = write_digest_file(
        tmp_path / f"{dataset_id}.parquet", {"email": pa.array(digests, pa.binary(32))}
    )
    client.upload(path, dataset_id=dataset_id)
    return dataset_name(dataset_id)


def test_the_budget_survives_a_killed_server(pki: DemoPki, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    port = free_loopback_port()
    listen = f"127.0.0.1:{port}"
    config = write_config(
        tmp_path / "cleanroom.toml", pki, tmp_path / "data", listen=listen, **NOISE
    )
    server = _start(config)
    try:
        acme, brightmart = _client(pki, port, "acme"), _client(pki, port, "brightmart")
        shared = fresh(rng, 300)
        base = _upload(acme, tmp_path, "acme-crm", shared + fresh(rng, 100))
        other = _upload(brightmart, tmp_path, "brightmart-crm", shared + fresh(rng, 100))
        first = acme.create_report(PARENT, base=base, others=[other])
        before = acme.get_budget(PARENT)
        acme.close()
        brightmart.close()
    finally:
        server.send_signal(signal.SIGKILL)  # no goodbye: whatever was committed must hold
        server.wait(timeout=30)
    server = _start(config)
    try:
        acme = _client(pki, port, "acme")
        after = acme.get_budget(PARENT)
        assert (
            (after.spent_epsilon, after.remaining_epsilon)
            == (before.spent_epsilon, before.remaining_epsilon)
            == (1.0, 2.0)
        )
        again = acme.create_report_response(PARENT, base=base, others=[other])
        assert again.reused
        assert again.overlap_report == first
        assert acme.get_budget(PARENT).spent_epsilon == 1.0
        acme.close()
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
