"""The privacy accounting of a collaboration, recomputed from its query log alone.

Each released report's event records the epsilon it spent, whether it reused a stored
report, and the policy in effect (`request_summary.policy`). From those, this module sums
the epsilon spent per collaboration and per member and checks every release against the
policy of its time; `compare_budget` then holds the sums against what the server reports
(GetPrivacyBudget), which a changed budget row in the database contradicts.

Each check is one small rule over one event, the policy it names and the running totals:
new fields of the log (for example per-member budget shares) are new rules in `RULES`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

REPORT_METHOD = "/cleanroom.v1.ReportService/CreateOverlapReport"
BUDGET_METHOD = "/cleanroom.v1.ReportService/GetPrivacyBudget"
THRESHOLD_FLOOR = 10  # SPEC section 5: k is never below 10
MICRO = 1_000_000


def to_micro(epsilon: float) -> int:
    """Epsilon in millionths, rounded up, as the server's ledger counts it."""
    return -(-round(epsilon * MICRO * 1000) // 1000)


@dataclass
class PrivacyAccount:
    """What the log says was spent, and every release that broke its policy."""

    spent_micro: int = 0
    reports: int = 0
    per_member_micro: dict[str, int] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def spent(self) -> float:
        """The epsilon spent in the collaboration."""
        return self.spent_micro / MICRO


@dataclass(frozen=True)
class Release:
    """One released report as its event records it."""

    index: int
    member: str
    epsilon: float
    reused: bool
    policy: dict[str, Any] | None


Rule = Callable[[Release, PrivacyAccount], str | None]


def _finite(release: Release, account: PrivacyAccount) -> str | None:
    if not math.isfinite(release.epsilon) or release.epsilon < 0:
        return f"spent an impossible epsilon {release.epsilon!r}"
    return None


def _policy_recorded(release: Release, account: PrivacyAccount) -> str | None:
    return None if release.policy is not None else "does not record the policy in effect"


def _reuse_is_free(release: Release, account: PrivacyAccount) -> str | None:
    if release.reused and release.epsilon:
        return f"reused a stored report but spent epsilon {release.epsilon:g}"
    return None


def _spend_matches_policy(release: Release, account: PrivacyAccount) -> str | None:
    policy = release.policy or {}
    if policy.get("noise") is False and release.epsilon:
        return f"spent epsilon {release.epsilon:g} with noise off"
    per_report = policy.get("epsilon_per_report")
    if isinstance(per_report, int | float) and to_micro(release.epsilon) > to_micro(per_report):
        return f"spent epsilon {release.epsilon:g}, above the {per_report:g} per report"
    return None


def _within_budget(release: Release, account: PrivacyAccount) -> str | None:
    total = (release.policy or {}).get("epsilon_budget")
    if isinstance(total, int | float) and account.spent_micro > to_micro(total):
        return f"brought the spend to {account.spent:g}, above the budget of {total:g}"
    return None


def _threshold_floor(release: Release, account: PrivacyAccount) -> str | None:
    threshold = (release.policy or {}).get("minimum_threshold")
    if isinstance(threshold, int | float) and threshold < THRESHOLD_FLOOR:
        return f"was released under a threshold of {threshold:g}, below {THRESHOLD_FLOOR}"
    return None


RULES: list[Rule] = [
    _finite,
    _policy_recorded,
    _reuse_is_free,
    _spend_matches_policy,
    _within_budget,
    _threshold_floor,
]


def releases(entries: Iterable[bytes]) -> Iterable[Release]:
    """The released reports among a log's events (canonical bytes, oldest first)."""
    for entry in entries:
        data = json.loads(entry)
        outcome = data["outcome"]
        if data["method"] != REPORT_METHOD or outcome["status_code"] != "OK":
            continue
        summary = data["request_summary"]
        policy = summary.get("policy")
        yield Release(
            index=int(data["index"]),
            member=str(data["caller"]),
            epsilon=float(outcome["epsilon_spent"]),
            reused=bool(summary.get("reused_stored_report", False)),
            policy=policy if isinstance(policy, dict) else None,
        )


def recompute(entries: Iterable[bytes], rules: Iterable[Rule] = RULES) -> PrivacyAccount:
    """Sums the spends of the log's releases and checks each against the rules."""
    account = PrivacyAccount()
    checks = list(rules)
    for release in releases(entries):
        spend = to_micro(release.epsilon) if math.isfinite(release.epsilon) else 0
        account.spent_micro += spend
        member = account.per_member_micro
        member[release.member] = member.get(release.member, 0) + spend
        account.reports += not release.reused
        for rule in checks:
            problem = rule(release, account)
            if problem:
                account.problems.append((release.index, f"release {release.index} {problem}"))
    return account


def until_budget_read(entries: Sequence[bytes]) -> Sequence[bytes]:
    """The events up to the latest GetPrivacyBudget call, which the budget read reflects.

    An auditor reads the budget, then the log: releases logged after that read are not in
    the figures it got, so they are left out of the comparison (and checked next time).
    """
    for position in range(len(entries) - 1, -1, -1):
        try:
            data = json.loads(entries[position])
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("method") == BUDGET_METHOD:
            return entries[: position + 1]
    return entries


def compare_budget(
    account: PrivacyAccount, spent_epsilon: float, released_reports: int
) -> list[str]:
    """Where the server's budget differs from the log's recomputation."""
    problems = []
    if to_micro(spent_epsilon) != account.spent_micro:
        problems.append(
            f"the server reports epsilon {spent_epsilon:g} spent; its log records {account.spent:g}"
        )
    if released_reports != account.reports:
        problems.append(
            f"the server reports {released_reports} released reports; its log records"
            f" {account.reports}"
        )
    return problems
