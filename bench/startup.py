"""Start-up benchmark: how long the partner toolkit's command line takes to answer.

Times each command as a brand's shell runs it, a fresh process each time, repeated, and
prints the median beside two baselines from the same run: the bare interpreter (the floor)
and a process that imports every toolkit module up front (what the command line would cost
if it loaded everything at start). The target is `cleanroom-partner --help` under 0.5 s on
2 cores. Writes `bench-results/startup.md` and `startup.json`. Never fails on a time.

    python -m bench.startup [--quick] [--runs 15] [--out bench-results]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._report import machine, publish

TARGET_SECONDS = 0.5
RUNS, QUICK_RUNS = 15, 5
EVERY_TOOLKIT_MODULE = (
    "import partners.cli.audit, partners.cli.datasets, partners.cli.preparation,"
    " partners.cli.reports, partners.cli.secrets"
)


def _partner_command() -> list[str]:
    installed = shutil.which("cleanroom-partner", path=str(Path(sys.executable).parent))
    return [installed] if installed else [sys.executable, "-m", "partners"]


def _timings(command: list[str], runs: int) -> list[float]:
    """Wall-clock seconds of `runs` fresh processes of `command` (after one warm-up run)."""
    subprocess.run(command, check=True, capture_output=True)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Times the commands and prints the table; always 0 (a benchmark never fails on time)."""
    args = _arguments(list(sys.argv[1:] if argv is None else argv))
    runs: int = args.runs or (QUICK_RUNS if args.quick else RUNS)
    partner = _partner_command()
    cases = [
        ("cleanroom-partner --help", [*partner, "--help"], TARGET_SECONDS),
        ("cleanroom-partner prepare --help", [*partner, "prepare", "--help"], None),
        ("cleanroom-partner upload --help", [*partner, "upload", "--help"], None),
        ("baseline: python -c pass", [sys.executable, "-c", "pass"], None),
        ("baseline: every toolkit module imported",
         [sys.executable, "-c", EVERY_TOOLKIT_MODULE], None),
    ]  # fmt: skip
    results: dict[str, Any] = {"runs": runs, "machine": machine(), "figures": []}
    for label, command, target in cases:
        seconds = _timings(command, runs)
        results["figures"].append(
            {
                "label": label,
                "median_seconds": statistics.median(seconds),
                "min_seconds": min(seconds),
                "max_seconds": max(seconds),
                "target_seconds": target,
            }
        )
    publish(Path(args.out), "startup", render(results), results)
    return 0


def render(results: dict[str, Any]) -> str:
    """The Markdown table of the median start-up times."""
    lines = [
        f"## Start-up of the partner toolkit ({results['runs']} runs each,"
        f" {results['machine']['summary']})",
        "",
        "| command | median | min | max | target |",
        "|---|---:|---:|---:|---|",
    ]
    for f in results["figures"]:
        target = f["target_seconds"]
        verdict = ""
        if target is not None:
            met = "met" if f["median_seconds"] < target else "NOT met"
            verdict = f"< {target:g} s ({met})"
        lines.append(
            f"| {f['label']} | {f['median_seconds']:.3f} s | {f['min_seconds']:.3f} s"
            f" | {f['max_seconds']:.3f} s | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs instead of {RUNS}")
    parser.add_argument("--runs", type=int, help=f"runs per command (default {RUNS})")
    parser.add_argument("--out", default="bench-results", help="where the tables go")
    return parser.parse_known_args(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
