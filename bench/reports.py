"""Report rendering benchmark: how long the toolkit takes to draw a report for people.

Times `partners.reports.render_html` (every chart drawn with matplotlib into SVG, then the
Jinja2 page) for reports of 2, 3 and 8 datasets, split by segment or not, and prints the
median beside two baselines from the same run: the terminal tables of the same report
(`partners.render.report_tables`), and one bare matplotlib bar chart written as SVG (the
floor of any chart). Also the size of each page. Writes `bench-results/reports.md` and
`reports.json`. Never fails on a time.

    python -m bench.reports [--quick] [--runs 5] [--out bench-results]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench._report import machine, publish
from cleanroom.v1 import overlap_report_pb2 as pb
from partners import render
from partners.reports import render_html

RUNS, QUICK_RUNS = 5, 2
PARENT = "collaborations/bench"


def _report(others: int, segments: int) -> pb.OverlapReport:
    """A noisy report of a base and `others` datasets, with a withheld cell per segment."""
    names = [f"{PARENT}/datasets/brand-{i}-customers" for i in range(others + 1)]
    report = pb.OverlapReport(
        name=f"{PARENT}/overlapReports/r-bench",
        base_dataset=names[0],
        other_datasets=names[1:],
        segment_column="tier" if segments else "",
        creator="partners/brand-0",
        minimum_threshold=50,
        noise=pb.ReportNoise(mechanism="discrete_laplace", epsilon=1, sensitivity=9, scale=9),
    )
    report.create_time.FromDatetime(datetime(2026, 12, 1, tzinfo=UTC))
    for s in range(max(1, segments)):
        for mask in range(2**others):
            count = pb.ReleasedCount(value=1_000 + 37 * mask + 11 * s)
            if mask == 2**others - 1:
                count = pb.ReleasedCount(suppression_reason=pb.SUPPRESSION_REASON_BELOW_THRESHOLD)
            report.membership_cells.add(
                segment=f"tier-{s}" if segments else "",
                matched_datasets=[n for i, n in enumerate(names[1:]) if mask >> i & 1],
                base_row_count=count,
            )
    for name in names:
        report.dataset_sizes.add(dataset=name, row_count=pb.ReleasedCount(value=250_000))
    for x in names:
        for y in names:
            if x != y:
                report.pairwise_overlaps.add(
                    dataset=x, matched_dataset=y, matched_row_count=pb.ReleasedCount(value=40_000)
                )
    return report


def _tables(report: pb.OverlapReport) -> None:
    Console(file=io.StringIO(), width=160).print(render.report_tables(report, plain=True))


def _bare_chart() -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415 (timed with its import warm)

    figure = Figure(figsize=(4, 3))
    figure.subplots().bar(range(8), range(8))
    figure.savefig(io.StringIO(), format="svg")


def _median(action: Callable[[], Any], runs: int) -> float:
    action()  # warm-up: imports and font caches
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """Times the renderings and prints the table; always 0 (never fails on time)."""
    args = _arguments(list(sys.argv[1:] if argv is None else argv))
    runs: int = args.runs or (QUICK_RUNS if args.quick else RUNS)
    figures = []
    for others, segments in ((1, 0), (2, 4), (7, 3)):
        report = _report(others, segments)
        label = f"{others + 1} datasets" + (f", {segments} segments" if segments else "")
        page = render_html(report)
        figures.append(
            {
                "label": label,
                "html_seconds": _median(lambda r=report: render_html(r), runs),
                "tables_seconds": _median(lambda r=report: _tables(r), runs),
                "html_bytes": len(page.encode()),
            }
        )
    results = {
        "runs": runs,
        "machine": machine()["summary"],
        "bare_chart_seconds": _median(_bare_chart, runs),
        "figures": figures,
    }
    publish(Path(args.out), "reports", _markdown(results), results)
    return 0


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        f"## Drawing a report ({results['runs']} runs each, median, {results['machine']})",
        "",
        "| report | HTML page (4 charts) | baseline: terminal tables | page size |",
        "|---|---:|---:|---:|",
    ]
    for f in results["figures"]:
        lines.append(
            f"| {f['label']} | {f['html_seconds']:.2f} s | {f['tables_seconds']:.3f} s"
            f" | {f['html_bytes'] / 1024:.0f} KiB |"
        )
    lines += [
        "",
        f"Baseline: one bare matplotlib bar chart as SVG: {results['bare_chart_seconds']:.3f} s.",
    ]
    return "\n".join(lines) + "\n"


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs instead of {RUNS}")
    parser.add_argument("--runs", type=int, help=f"runs per figure (default {RUNS})")
    parser.add_argument("--out", default="bench-results", help="where the tables go")
    return parser.parse_known_args(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
