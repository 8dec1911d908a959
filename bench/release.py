"""Release benchmark: how long the privacy rules take to turn exact counts into a report.

For 1 to 7 other datasets and a segment column of 4 values, with cell counts drawn around
the threshold (k = 50, so that many are suppressed and the audit has work), times the
exact-mode release (thresholds, shape rules, and the secondary suppression audit with its
integer programs) beside the noisy release of the same counts (OpenDP noise and
thresholds: the baseline, measured in the same run). The matcher is not timed here (see
`bench.server`). Writes `bench-results/release.md` and `release.json`. Never fails on a
time.

    python -m bench.release [--quick] [--out bench-results]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench._report import machine, publish
from cleanroom.config import PrivacyPolicy
from cleanroom.matching.question import ExactOverlap, OverlapQuestion
from cleanroom.names import DatasetName, OverlapReportName
from cleanroom.privacy.release import ReportIdentity, release

OTHERS, QUICK_OTHERS = (1, 3, 5, 7), (1, 3, 5)
SEGMENTS = 4
K = 50
RUNS = 3


def exact_counts(others: int, rng: np.random.Generator) -> ExactOverlap:
    """Cells of 4 segments, each count 0 to 4k, and the figures that follow from them."""
    base = DatasetName("bench", "acme-base")
    names = tuple(DatasetName("bench", f"brand{i}-list") for i in range(others))
    question = OverlapQuestion(base, names, "tier")
    cells = {
        (f"tier-{s}", mask): int(rng.integers(0, 4 * K))
        for s in range(SEGMENTS)
        for mask in range(2**others)
    }
    pairwise = {pair: int(rng.integers(10 * K, 20 * K)) for pair in question.ordered_pairs()}
    for bit, other in enumerate(names):
        pairwise[base, other] = sum(n for (_, m), n in cells.items() if m >> bit & 1)
    sizes = {base: sum(cells.values()), **{o: 40 * K for o in names}}
    return ExactOverlap(question, sizes, cells, pairwise)


def _seconds(exact: ExactOverlap, policy: PrivacyPolicy) -> list[float]:
    identity = ReportIdentity(OverlapReportName("bench", "r-0"), "partners/acme", datetime.now(UTC))
    types = {name: ("email",) for name in exact.question.datasets}
    seconds = []
    for _ in range(RUNS):
        started = time.perf_counter()
        release(exact, policy, identity, types)
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Times the releases and prints the table; always 0 (a benchmark never fails on time)."""
    args = _arguments(list(sys.argv[1:] if argv is None else argv))
    rng = np.random.default_rng(args.seed)
    exact_policy = PrivacyPolicy(minimum_threshold=K, minimum_dataset_size=K, noise=False)
    noisy_policy = PrivacyPolicy(minimum_threshold=K, minimum_dataset_size=K)
    figures = []
    for others in QUICK_OTHERS if args.quick else OTHERS:
        exact = exact_counts(others, rng)
        exact_seconds = _seconds(exact, exact_policy)
        noisy_seconds = _seconds(exact, noisy_policy)
        figures.append(
            {
                "others": others,
                "cells": len(exact.cells),
                "exact_median_seconds": statistics.median(exact_seconds),
                "noisy_median_seconds": statistics.median(noisy_seconds),
            }
        )
        print(f"  {others} others: exact {figures[-1]['exact_median_seconds']:.3f} s", flush=True)
    results = {
        "runs": RUNS,
        "k": K,
        "segments": SEGMENTS,
        "machine": machine(),
        "figures": figures,
    }
    publish(Path(args.out), "release", render(results), results)
    return 0


def render(results: dict[str, Any]) -> str:
    """The Markdown table of the median release times."""
    lines = [
        f"## Release of a report from exact counts ({results['segments']} segments,"
        f" k = {results['k']}, median of {results['runs']}, {results['machine']['summary']})",
        "",
        "| other datasets | cells | exact mode (audit) | baseline: noisy release |",
        "|---:|---:|---:|---:|",
    ]
    for f in results["figures"]:
        lines.append(
            f"| {f['others']} | {f['cells']} | {f['exact_median_seconds']:.3f} s"
            f" | {f['noisy_median_seconds']:.3f} s |"
        )
    return "\n".join(lines) + "\n"


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.release", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"others {QUICK_OTHERS}")
    parser.add_argument("--out", default="bench-results", help="where the tables go")
    parser.add_argument("--seed", type=int, default=11)
    return parser.parse_known_args(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
