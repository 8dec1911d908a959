"""`audit verify --privacy`: the privacy accounting recomputed from the query log alone.

Against the real server with noise on: the epsilon the log records per release sums to
what GetPrivacyBudget reports, per collaboration and per member; a budget row changed
in the database contradicts the log, and the verification fails.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from cleanroom.tls.pki import DemoPki
from partners.audit.privacy import REPORT_METHOD, compare_budget, recompute
from partners.cli import main as partner_main
from tests.integration.test_partner_cli import env_for
from tests.privacy.attack import fresh, upload
from tests.support import COLLABORATION, LOG_SIGNER, RunningServer, running_server

PARENT = f"collaborations/{COLLABORATION}"
NOISE = {"noise": True, "epsilon_budget": 6.0, "epsilon_per_report": 1.0}  # 2 per brand


def verify_privacy(server: RunningServer, state: Path) -> tuple[int, str]:
    args = [
        "audit", "verify", f"--collaboration={COLLABORATION}",
        f"--log-key={LOG_SIGNER.verifier_key}", f"--state-dir={state}", "--privacy",
    ]  # fmt: skip
    result = CliRunner().invoke(partner_main, args, env=env_for(server, "ledger"))
    return result.exit_code, result.output


def test_privacy_accounting_agrees_then_catches_an_altered_budget_row(
    pki: DemoPki, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    with running_server(pki, tmp_path / "data", **NOISE) as server:
        shared = fresh(rng, 200)
        acme = upload(server, "acme", tmp_path, shared + fresh(rng, 50))
        bright = upload(server, "brightmart", tmp_path, shared + fresh(rng, 60))
        corvid = upload(server, "corvid", tmp_path, shared[:100] + fresh(rng, 60))
        server.client("acme").create_report(PARENT, base=acme, others=[bright])
        server.client("acme").create_report(PARENT, base=acme, others=[bright])  # reused
        server.client("acme").create_report(PARENT, base=acme, others=[corvid])
        server.client("brightmart").create_report(PARENT, base=bright, others=[acme])
        code, out = verify_privacy(server, tmp_path / "state")
        assert code == 0, out
        assert "privacy: epsilon 3 spent over 3 released reports" in out
        assert "partners/acme: epsilon 2" in out
        assert "partners/brightmart: epsilon 1" in out
        with sqlite3.connect(server.data_dir / "cleanroom.sqlite3") as db:
            db.execute(
                "UPDATE privacy_budgets SET spent_micro = spent_micro - 1000000"
                " WHERE collaboration = ?",
                (COLLABORATION,),
            )
        db.close()
        code, out = verify_privacy(server, tmp_path / "state")
    assert code == 1
    assert "FAILED privacy: the server reports epsilon 2 spent; its log records 3" in out


def release(index: int, epsilon: float, **summary: object) -> bytes:
    policy = {"noise": True, "epsilon_budget": 2.0, "epsilon_per_report": 1.0,
              "minimum_threshold": 50}  # fmt: skip
    event = {
        "index": index,
        "method": REPORT_METHOD,
        "caller": f"partners/brand{index % 2}",
        "outcome": {"status_code": "OK", "epsilon_spent": epsilon},
        "request_summary": {"reused_stored_report": False, "policy": policy, **summary},
    }
    return json.dumps(event).encode()


def test_each_rule_names_the_release_that_breaks_it() -> None:
    entries = [
        release(0, 1.0),
        release(1, 0.5, reused_stored_report=True),  # a reuse that spent
        release(2, 1.5),  # above the per-report epsilon, and over the budget
        release(3, 1.0, policy=None),  # no policy recorded
        release(4, 0.0, policy={"noise": True, "minimum_threshold": 5}),
    ]
    account = recompute(entries)
    found = {index: problem for index, problem in account.problems}
    assert sorted(found) == [1, 2, 3, 4]
    assert "reused a stored report" in found[1]
    assert "above the 1 per report" in found[2] or "above the budget" in found[2]
    assert "does not record the policy" in found[3]
    assert "threshold of 5" in found[4]
    assert account.per_member_micro == {"partners/brand0": 2_500_000, "partners/brand1": 1_500_000}
    assert account.reports == 4
    assert compare_budget(account, 4.0, 4) == []
    assert len(compare_budget(account, 3.0, 5)) == 2
