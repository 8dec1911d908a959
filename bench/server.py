"""Server benchmark: uploads and overlap reports at 1, 3 and 10 million rows, beside baselines.

Runs the real server (`cleanroom serve`, mutual TLS on loopback) in a subprocess and the
real partner client; generates the digest files first (not timed). Writes
`bench-results/server.md` and `server.json` and prints the table. Never fails on a time:
it fails only when a released figure differs from the expected one.

    python -m bench.server [--quick] [--sizes 1000000,3000000] [--out bench-results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bench import _baselines, _data
from bench._world import BRANDS, COLLABORATION, BenchServer
from cleanroom.matching.layout import sorted_layout

SIZES = (1_000_000, 3_000_000, 10_000_000)
QUICK_SIZES = (50_000, 150_000, 500_000)
SAMPLE_ROWS = 5_000  # checked by brute force over the digests, with Python sets
WARM_UP_BYTES = 3 << 30
PARENT = f"collaborations/{COLLABORATION}"
TARGETS = {
    "upload_rows_per_second": 3_000_000,
    "upload_two_types_rows_per_second": 2_000_000,
    "pairwise_seconds": 0.1,
    "pairwise_speedup": 4.0,  # over the faster of DuckDB and Polars
    "group_seconds": 1.0,
    "group_speedup": 8.0,
    "peak_memory_bytes": 1.5e9,
    "group_peak_memory_bytes": 4.8e9,
}


@dataclass
class SizeResult:
    """Every figure measured at one size."""

    rows: int
    uploads: list[dict[str, Any]] = field(default_factory=list)
    local_copy_seconds: float = 0.0
    layout_seconds: dict[int, float] = field(default_factory=dict)  # by identifier types
    pairwise: list[dict[str, Any]] = field(default_factory=list)
    pairwise_peak_memory_bytes: int | None = None
    memory_before_pairwise_bytes: int = 0
    pandas_merge_seconds: float = 0.0
    polars_pairwise_seconds: float = 0.0
    duckdb_pairwise_seconds: float = 0.0
    group: dict[str, Any] = field(default_factory=dict)
    group_again: dict[str, Any] = field(default_factory=dict)
    group_peak_memory_bytes: int | None = None
    memory_before_group_bytes: int = 0
    polars_group_seconds: float = 0.0
    duckdb_group_seconds: float = 0.0
    figures_checked: int = 0

    def upload_seconds(self, types: int) -> float:
        """The mean time of the uploads of datasets with `types` identifier types."""
        times = [u["seconds"] for u in self.uploads if u["types"] == types]
        return sum(times) / len(times)

    @property
    def pairwise_compute(self) -> float | None:
        """The matcher's best time over the pairwise reports, from the server's log."""
        times = [p["matcher_seconds"] for p in self.pairwise if p["matcher_seconds"] is not None]
        return min(times) if times else None

    @property
    def pairwise_end_to_end(self) -> float:
        """The best time of the pairwise reports, as the client saw it."""
        return min(p["seconds"] for p in self.pairwise)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns 1 if a released figure was wrong, else 0."""
    args = _arguments(sys.argv[1:] if argv is None else argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    print(f"server benchmark at {', '.join(f'{n:,}' for n in sizes)} rows on {machine['summary']}")
    if not args.no_warm_up:
        print(f"warming up memory: {warm_up(WARM_UP_BYTES):.1f} s", flush=True)
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=out)).resolve()
    problems: list[str] = []
    try:
        with BenchServer.start(work / "server") as server:
            sample = SizeResult(SAMPLE_ROWS)
            problems += run_size(server, work, sample, rng, brute_force=True)
            results = []
            for rows in sizes:
                result = SizeResult(rows)
                problems += run_size(server, work, result, rng, brute_force=False)
                results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = render(machine, results, sample, problems)
    (out / "server.md").write_text(report)
    (out / "server.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "targets": TARGETS,
                "sample": vars(sample),
                "sizes": [vars(r) for r in results],
                "problems": problems,
            },
            indent=2,
        )
        + "\n"
    )
    print()
    print(report)
    print(f"written to {out / 'server.md'} and {out / 'server.json'}")
    return 1 if problems else 0


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    parser.add_argument(
        "--sizes",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        help="comma-separated rows per dataset",
    )
    parser.add_argument("--out", default="bench-results", help="where the tables go")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--no-warm-up", action="store_true", help="skip touching memory first")
    args, _ = parser.parse_known_args(argv)  # other benchmark modules read theirs
    return args


def run_size(
    server: BenchServer,
    work: Path,
    result: SizeResult,
    rng: np.random.Generator,
    *,
    brute_force: bool,
) -> list[str]:
    """Measures everything at one size; returns the figures that differ from the expected."""
    directory = work / f"files-{result.rows}"
    directory.mkdir()
    problems = run_pair(server, directory, result, rng, brute_force=brute_force)
    problems += run_group(server, directory, result, rng, brute_force=brute_force)
    shutil.rmtree(directory)
    for problem in problems:
        print(f"  WRONG: {problem}", flush=True)
    return problems


def run_pair(
    server: BenchServer,
    directory: Path,
    result: SizeResult,
    rng: np.random.Generator,
    *,
    brute_force: bool,
) -> list[str]:
    """Two one-type datasets: their uploads and the pairwise reports, with baselines."""
    rows = result.rows
    print(f"\n{rows:,} rows: generating the pair", flush=True)
    first, second = _data.pair(directory, rows, rng, (BRANDS[0], BRANDS[1]))
    for dataset in (first, second):
        result.uploads.append(upload(server, dataset))
    result.local_copy_seconds = _baselines.local_copy_seconds(first.path, directory / "copy")
    print(f"  local copy baseline: {result.local_copy_seconds:.2f} s", flush=True)
    result.layout_seconds[1] = layout_seconds(first)
    problems = []
    result.memory_before_pairwise_bytes = server.memory_bytes()
    reset = server.reset_peak_memory()
    for base, other in ((first, second), (second, first)):
        expected = _data.expected_report(base, [other], rows + rows // 2, segment=False)
        checks = [expected]
        if brute_force:
            checks.append(_data.brute_force_report(base, [other], segment=False))
        measured = overlap_report(server, base, [other], segment=False)
        if base is first and reset:
            result.pairwise_peak_memory_bytes = server.peak_memory_bytes()
        released = measured.pop("report")
        for truth in checks:
            problems += _data.compare(released, truth)
            result.figures_checked += measured["figures"]
        result.pairwise.append(measured)
    if not brute_force:
        result.pandas_merge_seconds, merged = _baselines.pandas_merge(first, second)
        if merged != expected.pairwise[second.name, first.name]:
            problems.append(f"pandas merged {merged} rows; the report says otherwise")
        print(f"  pandas merge baseline: {result.pandas_merge_seconds:.2f} s", flush=True)
        truth = _data.expected_report(first, [second], rows + rows // 2, segment=False)
        polars, duckdb = baselines([first, second], truth, segment=False, problems=problems)
        result.polars_pairwise_seconds, result.duckdb_pairwise_seconds = polars, duckdb
    delete(server, [first, second])
    return problems


def run_group(
    server: BenchServer,
    directory: Path,
    result: SizeResult,
    rng: np.random.Generator,
    *,
    brute_force: bool,
) -> list[str]:
    """A base and four others with two types: their uploads and the report by segment."""
    rows = result.rows
    print(f"{rows:,} rows: generating five datasets", flush=True)
    group = _data.group(directory, rows, rng, BRANDS[2:7])
    for dataset in group:
        result.uploads.append(upload(server, dataset))
    result.layout_seconds[2] = layout_seconds(group[0])
    base, others = group[0], group[1:]
    expected = _data.expected_report(base, others, 2 * rows, segment=True)
    checks = [expected]
    if brute_force:
        checks.append(_data.brute_force_report(base, others, segment=True))
    result.memory_before_group_bytes = server.memory_bytes()
    reset = server.reset_peak_memory()
    measured = overlap_report(server, base, others, segment=True)
    if reset:
        result.group_peak_memory_bytes = server.peak_memory_bytes()
    released = measured.pop("report")
    problems = []
    for truth in checks:
        problems += _data.compare(released, truth)
        result.figures_checked += measured["figures"]
    result.group = measured
    # The same datasets again, without the split (another question: not a stored report),
    # now that the first report has brought their files back into memory.
    again = overlap_report(server, base, others, segment=False)
    problems += _data.compare(
        again.pop("report"), _data.expected_report(base, others, 2 * rows, segment=False)
    )
    result.figures_checked += again["figures"]
    result.group_again = again
    delete(server, group)  # before the baselines: the server's files leave the page cache
    if not brute_force:
        polars, duckdb = baselines(group, expected, segment=True, problems=problems)
        result.polars_group_seconds, result.duckdb_group_seconds = polars, duckdb
    return problems


def baselines(
    datasets: list[_data.Dataset],
    expected: _data.ExpectedReport,
    *,
    segment: bool,
    problems: list[str],
) -> tuple[float, float]:
    """Polars' and DuckDB's seconds for the same report, each checked against `expected`."""
    prepared = _baselines.prepare(datasets, segment=segment)
    found = {
        "Polars": _baselines.polars_overlap(prepared),
        "DuckDB": _baselines.duckdb_overlap(prepared, os.cpu_count() or 1),
    }
    for name, overlap in found.items():
        if overlap.pairwise != expected.pairwise or overlap.cells != expected.cells:
            problems.append(f"the {name} baseline disagrees with the expected counts")
        print(f"  {name} baseline: {overlap.seconds:.2f} s", flush=True)
    return found["Polars"].seconds, found["DuckDB"].seconds


def upload(server: BenchServer, dataset: _data.Dataset) -> dict[str, Any]:
    """Uploads a dataset with its brand's client; the time is the client's, file to commit."""
    with server.client(dataset.brand) as client:
        started = time.perf_counter()
        client.upload(dataset.path, dataset_id=dataset.dataset_id)
        seconds = time.perf_counter() - started
    print(
        f"  upload {dataset.dataset_id}: {seconds:.2f} s,"
        f" {dataset.rows / seconds / 1e6:.2f} M rows/s",
        flush=True,
    )
    return {
        "dataset": dataset.dataset_id,
        "rows": dataset.rows,
        "types": len(dataset.types),
        "bytes": dataset.path.stat().st_size,
        "seconds": seconds,
    }


def layout_seconds(dataset: _data.Dataset) -> float:
    """The commit-time sort and layout alone, as an upload's commit runs it.

    `sorted_layout` in this process, on the dataset's rows already in memory.
    """
    table = pq.read_table(dataset.path).combine_chunks()
    segments = [_data.SEGMENT] if dataset.tiers is not None else []
    started = time.perf_counter()
    sorted_layout(table, list(dataset.types), segments)
    seconds = time.perf_counter() - started
    print(
        f"  commit-time layout of {dataset.dataset_id}: {seconds:.2f} s,"
        f" {dataset.rows / seconds / 1e6:.2f} M rows/s",
        flush=True,
    )
    return seconds


def overlap_report(
    server: BenchServer, base: _data.Dataset, others: list[_data.Dataset], *, segment: bool
) -> dict[str, Any]:
    """Asks for a report as the base's brand; the time is the client's, and the matcher's."""
    before = len(server.matcher_seconds())
    with server.client(base.brand) as client:
        started = time.perf_counter()
        report = client.create_report(
            PARENT,
            base=base.name,
            others=[o.name for o in others],
            segment_column=_data.SEGMENT if segment else None,
        )
        seconds = time.perf_counter() - started
    logged = server.matcher_seconds()
    matcher = logged[-1] if len(logged) > before else None
    cpu = server.matcher_cpu_seconds()[-1] if len(logged) > before else None
    rows = base.rows + sum(o.rows for o in others)
    print(
        f"  report over {1 + len(others)} datasets: {seconds:.3f} s end to end"
        + (f", matcher {matcher:.3f} s" if matcher is not None else "")
        + (f" ({cpu:.3f} s of CPU)" if cpu is not None else ""),
        flush=True,
    )
    return {
        "datasets": 1 + len(others),
        "rows": rows,
        "seconds": seconds,
        "matcher_seconds": matcher,
        "matcher_cpu_seconds": cpu,
        "figures": _data.figures(report),
        "report": report,
    }


def delete(server: BenchServer, datasets: list[_data.Dataset]) -> None:
    """Deletes datasets, so that the next size has the disk and no near-duplicates."""
    for dataset in datasets:
        with server.client(dataset.brand) as client:
            client.delete_dataset(dataset.name)


# The machine -----------------------------------------------------------------------------


def describe_machine() -> dict[str, Any]:
    """Cores, CPU model, memory, software versions and the load when the run started."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) * 1024
    cores = os.cpu_count() or 1
    versions = {
        name: metadata.version(name)
        for name in ("numpy", "pandas", "pyarrow", "grpcio", "polars", "duckdb")
    }
    load = os.getloadavg()[0]
    summary = f"{cores} cores ({cpu}), {memory / 2**30:.1f} GiB memory"
    return {
        "summary": summary,
        "cores": cores,
        "cpu": cpu,
        "memory_bytes": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": load,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def warm_up(size: int) -> float:
    """Touches `size` bytes of fresh memory once, and returns how long that took.

    On a virtual machine the first touch of a page the guest never used costs the host a
    fault (here up to 100 times a normal one); a long-running server has long paid it.
    """
    started = time.perf_counter()
    block = np.ones(size, dtype=np.uint8)
    del block
    return time.perf_counter() - started


# The table -------------------------------------------------------------------------------


def render(
    machine: dict[str, Any], results: list[SizeResult], sample: SizeResult, problems: list[str]
) -> str:
    """The Markdown report: targets at the largest size, then every size."""
    largest = results[-1]
    lines = [
        "# Server benchmark",
        "",
        f"`make bench`, {machine['date']}. Machine: {machine['summary']}, Linux"
        f" {machine['kernel']}, Python {machine['python']}, "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        + f". Load average {machine['load_average_at_start']:.1f} at start: other work on"
        " the machine adds noise.",
        "",
        f"## At {largest.rows:,} rows per dataset",
        "",
        "| figure | ours | baseline, same run | ours vs baseline | target |",
        "|---|---:|---:|---:|---|",
        *_target_rows(largest),
        "",
        "## Every size",
        "",
        "| rows per dataset | upload, 1 type | upload, 2 types | pairwise report"
        " (server) | per row | five datasets (server): first / again | per row, again"
        " | peak memory, pairwise |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_size_row(r) for r in results),
        "",
        "Uploads are timed by the client, from the digests file to the committed dataset."
        " Report times are the matcher's, from the server's log; end to end (the client's"
        " RPC) adds the rest of the server's work and the network. Per row: time divided by"
        " the rows of all the report's datasets. The five-dataset report is asked twice:"
        " first right after the uploads (this machine's kernel pages out memory left"
        " untouched for a few seconds, page cache included, so part of the files is read"
        " back from disk), then again, without the split, with the files in memory.",
        "",
    ]
    checked = sum(r.figures_checked for r in results)
    if problems:
        lines += ["**WRONG FIGURES:**", "", *(f"- {p}" for p in problems), ""]
    else:
        lines += [
            f"Correct: all {checked:,} released figures equal the counts expected from how the"
            f" data was made, and all {sample.figures_checked:,} figures of a"
            f" {sample.rows:,}-row sample equal a brute force over the digests with Python"
            " sets; pandas, Polars and DuckDB count the same.",
            "",
        ]
    return "\n".join(lines)


def _target_rows(result: SizeResult) -> list[str]:
    rows = result.rows
    upload = result.upload_seconds(types=1)
    upload_two = result.upload_seconds(types=2)
    copy = result.local_copy_seconds
    compute = result.pairwise_compute
    end_to_end = result.pairwise_end_to_end
    pairwise_time = compute if compute is not None else end_to_end
    faster_pair = min(result.polars_pairwise_seconds, result.duckdb_pairwise_seconds)
    pair_speedup = faster_pair / pairwise_time
    group = result.group.get("matcher_seconds") or result.group["seconds"]
    again = result.group_again.get("matcher_seconds") or result.group_again["seconds"]
    faster_group = min(result.polars_group_seconds, result.duckdb_group_seconds)
    group_speedup = faster_group / group
    peak = result.pairwise_peak_memory_bytes
    group_peak = result.group_peak_memory_bytes
    digests = 2 * rows * 32
    lines = [
        f"| upload, 1 type, file to committed dataset | {upload:.2f} s,"
        f" {rows / upload / 1e6:.1f} M rows/s | local copy (read Parquet, write Arrow, fsync):"
        f" {copy:.2f} s, {rows / copy / 1e6:.1f} M rows/s | {upload / copy:.1f}x the time |"
        f" ≥ 3 M rows/s: {_met(rows / upload >= TARGETS['upload_rows_per_second'])} |",
        f"| upload, 2 types + segment | {upload_two:.2f} s, {rows / upload_two / 1e6:.1f} M"
        " rows/s | | | ≥ 2 M rows/s:"
        f" {_met(rows / upload_two >= TARGETS['upload_two_types_rows_per_second'])} |",
        *(
            f"| commit-time sort and layout alone, {types} type{'s + segment' * (types > 1)}"
            f" | {seconds:.2f} s, {rows / seconds / 1e6:.1f} M rows/s | | | |"
            for types, seconds in sorted(result.layout_seconds.items())
        ),
        f"| pairwise report, 2 datasets half overlapping, server | {pairwise_time:.3f} s"
        f" ({end_to_end:.3f} s end to end{_cpu(min(result.pairwise, key=_matcher))}) |"
        f" Polars {result.polars_pairwise_seconds:.2f} s,"
        f" DuckDB {result.duckdb_pairwise_seconds:.2f} s, pandas merge"
        f" {result.pandas_merge_seconds:.1f} s | {pair_speedup:.1f}x the faster of DuckDB and"
        f" Polars ({result.pandas_merge_seconds / pairwise_time:.0f}x pandas) |"
        f" ≤ 0.1 s: {_met(pairwise_time <= TARGETS['pairwise_seconds'])};"
        f" ≥ 4x: {_met(pair_speedup >= TARGETS['pairwise_speedup'])} |",
        f"| base + 4 others, 2 types, by segment, server | {group:.2f} s"
        f" ({result.group['seconds']:.2f} s end to end{_cpu(result.group)}) | Polars"
        f" {result.polars_group_seconds:.1f} s, DuckDB {result.duckdb_group_seconds:.1f} s |"
        f" {group_speedup:.1f}x the faster | ≤ 1.0 s: {_met(group <= TARGETS['group_seconds'])};"
        f" ≥ 8x: {_met(group_speedup >= TARGETS['group_speedup'])} |",
        f"| the same datasets again (no split), files in memory | {again:.2f} s"
        f" ({result.group_again['seconds']:.2f} s end to end) | | | |",
    ]
    if peak is not None:
        lines.append(
            f"| peak server memory, pairwise report | {peak / 1e9:.2f} GB"
            f" ({result.memory_before_pairwise_bytes / 1e9:.2f} GB before it) | the digests"
            f" alone: {digests / 1e9:.2f} GB | | < 1.5 GB:"
            f" {_met(peak < TARGETS['peak_memory_bytes'])} |"
        )
    if group_peak is not None:
        lines.append(
            f"| peak server memory, five-dataset report | {group_peak / 1e9:.2f} GB"
            f" ({result.memory_before_group_bytes / 1e9:.2f} GB before it) | | | < 4.8 GB:"
            f" {_met(group_peak < TARGETS['group_peak_memory_bytes'])} |"
        )
    return lines


def _size_row(result: SizeResult) -> str:
    rows = result.rows
    pairwise = result.pairwise_compute or result.pairwise_end_to_end
    group = result.group.get("matcher_seconds") or result.group["seconds"]
    again = result.group_again.get("matcher_seconds") or result.group_again["seconds"]
    peak = result.pairwise_peak_memory_bytes
    return (
        f"| {rows:,} | {rows / result.upload_seconds(1) / 1e6:.1f} M rows/s"
        f" | {rows / result.upload_seconds(2) / 1e6:.1f} M rows/s"
        f" | {pairwise:.3f} s | {pairwise / (2 * rows) * 1e9:.1f} ns"
        f" | {group:.3f} s / {again:.3f} s | {again / (5 * rows) * 1e9:.1f} ns"
        f" | {'' if peak is None else f'{peak / 1e9:.2f} GB'} |"
    )


def _matcher(report: dict[str, Any]) -> float:
    return float(report["matcher_seconds"] or report["seconds"])


def _cpu(report: dict[str, Any]) -> str:
    """The matcher's CPU seconds, which load on the machine inflates less than its time."""
    cpu = report.get("matcher_cpu_seconds")
    return "" if cpu is None else f"; {cpu:.2f} s of CPU"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


if __name__ == "__main__":
    sys.exit(main())
