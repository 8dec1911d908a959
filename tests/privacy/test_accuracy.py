"""Noisy figures say how accurate they are, and a dry run says so before anything is spent.

Every noisy released count carries its noise scale and a 95% interval (API, CLI table,
JSON and CSV); `--estimate` (`validate_only`) gives the cost and the accuracy of a
report from the question and the policy alone, and spends nothing.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from cleanroom.privacy.noise import interval_half_width
from cleanroom.tls.pki import DemoPki
from partners.cli import main
from tests.privacy.attack import fresh, upload
from tests.support import COLLABORATION, RunningServer, running_server

PARENT = f"collaborations/{COLLABORATION}"
NOISE = {"noise": True, "epsilon_budget": 1000.0, "epsilon_per_report": 1.0}


def cli(server: RunningServer, partner: str, *args: str) -> str:
    connection = server.connection(partner)
    env = {
        "CLEANROOM_SERVER": connection.target,
        "CLEANROOM_CERT": str(connection.certificate),
        "CLEANROOM_KEY": str(connection.private_key),
        "CLEANROOM_CA": str(connection.ca_certificate),
        "CLEANROOM_SERVER_NAME": "localhost",
    }
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_estimate_tells_cost_and_accuracy_and_spends_nothing(
    pki: DemoPki, tmp_path: Path
) -> None:
    rng = np.random.default_rng(11)
    with running_server(pki, tmp_path / "data", **NOISE) as server:
        shared = fresh(rng, 300)
        base = upload(server, "acme", tmp_path, shared + fresh(rng, 100))
        other = upload(server, "brightmart", tmp_path, shared + fresh(rng, 100))
        acme = server.client("acme")
        before = acme.get_budget(PARENT).member_remaining_epsilon
        dry = acme.create_report_response(PARENT, base=base, others=[other], validate_only=True)
        assert not dry.HasField("overlap_report")
        estimate = dry.estimate
        assert (estimate.noise, estimate.allowed, estimate.reused) == (True, True, False)
        assert estimate.epsilon_cost == 1.0
        assert estimate.member_remaining_epsilon == before
        assert estimate.interval_half_width == interval_half_width(estimate.noise_scale)
        assert acme.get_budget(PARENT).member_remaining_epsilon == before  # nothing spent
        assert (
            server.clean_room.catalog.reports(COLLABORATION, creator=None, after=0, limit=9) == []
        )

        report = acme.create_report(PARENT, base=base, others=[other])
        assert report.noise.scale == estimate.noise_scale
        measured = report.dataset_sizes[1].row_count  # the other's size: one noisy count
        assert measured.noise_scale == estimate.noise_scale
        assert measured.interval_high - measured.value == estimate.interval_half_width
        again = acme.create_report_response(
            PARENT, base=base, others=[other], validate_only=True
        ).estimate
        assert (again.reused, again.epsilon_cost) == (True, 0.0)

        shown = cli(
            server, "acme", "report", "create", f"--collaboration={COLLABORATION}",
            f"--base={base}", f"--other={other}", "--estimate", "--json",
        )  # fmt: skip
        assert json.loads(shown)["reused"] is True
        rows = list(csv.DictReader(cli(server, "acme", "report", "get", report.name, "--csv")
                                   .splitlines()))  # fmt: skip
        size_row = next(r for r in rows if r["figure"] == "dataset_size" and r["dataset"] == other)
        assert (int(size_row["interval_low"]), int(size_row["interval_high"])) == (
            measured.interval_low,
            measured.interval_high,
        )
        assert float(size_row["noise_scale"]) == measured.noise_scale
        table = cli(server, "acme", "report", "get", report.name)
        assert f"{measured.interval_low:,}-{measured.interval_high:,}" in table
        budget = cli(server, "acme", "budget", f"--collaboration={COLLABORATION}")
        share = 1000 / 3  # three analyst brands, no share configured: equal parts
        assert f"your brand (acme): {share - 1:g} remaining of its share of {share:g}" in budget
        dry_table = cli(
            server, "brightmart", "report", "create", f"--collaboration={COLLABORATION}",
            f"--base={other}", f"--other={base}", "--estimate",
        )  # fmt: skip
        assert f"would spend epsilon 1 of your {share:g} left" in dry_table


def test_intervals_hold_the_exact_count_95_percent_of_the_time(
    pki: DemoPki, tmp_path: Path
) -> None:
    rng = np.random.default_rng(12)
    hits = total = 0
    with running_server(pki, tmp_path / "data", **NOISE) as server:
        shared = fresh(rng, 200)
        base = upload(server, "acme", tmp_path, shared + fresh(rng, 200))
        for _ in range(40):
            other = upload(server, "brightmart", tmp_path, shared + fresh(rng, 100))
            report = server.client("acme").create_report(PARENT, base=base, others=[other])
            truth = {(other, 300), (base, 400)}
            for size in report.dataset_sizes:
                count = size.row_count
                exact = next(n for name, n in truth if name == size.dataset)
                total += 1
                hits += count.interval_low <= exact <= count.interval_high
    coverage = hits / total
    # At least 95% by construction; three standard errors below for an honest test.
    assert coverage >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / total), coverage
