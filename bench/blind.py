"""Double-blind benchmark: masked uploads, masking hops and reports, and OpenMined PSI beside them.

Two scenarios, each on the real server (`cleanroom serve` in a subprocess, mutual TLS on
loopback, `matching = "double_blind"`, exact mode) and the toolkit's Python API, with
datasets whose overlaps are planted (`bench._data`): every released count is checked
against the construction.

- `three_way`: three brands with `--rows` rows each, emails (90%) and phones (70%) and a
  segment column, from digest files with the metadata `cleanroom-partner prepare` writes
  (`bench._data.write`; the digests are random, not prepared from CSVs), to a released
  three-way report by segment: each brand uploads with its blind key (masking and
  shuffling on the brand's side), each brand in turn runs `partners.work` (its pending
  masking hops) until every dataset is matchable, then the first brand asks for the report.
- `versus_psi`: two brands with `--rows` rows each, one type (emails), half of each in
  the other: our flow end to end (both uploads, both hops, the pairwise report), then
  OpenMined PSI's cardinality mode on the same two sets of digests (`bench/_openmined_psi.py`
  in its own virtual environment, `.venv-psi/`, made on first use: its protobuf pin clashes
  with ours).

Prints the wall time of every phase and the total, the CPU time of the benchmark's process
(the brands' side) and of the server's, the time per identifier element, and the speed of
the group operations measured in the same run (on one core and on every core); writes
`bench-results/blind-three-way.md` (and `.json`) and `blind-versus-psi.md`. Never fails on
a time: the exit status is 1 only when a released count (ours or OpenMined's) differs from
the planted one.

    python -m bench.blind [--rows 1000000] [--quick] [--scenarios three_way,versus_psi]

At 1,000,000 rows, allow an hour or more on 2 cores: every element costs `2·B`
multiplications of about 70 to 100 µs of CPU each (B brands).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow.parquet as pq

import partners
from bench import _data
from bench._report import machine, publish
from bench._world import BRANDS, COLLABORATION, BenchServer
from cleanroom.group import ristretto255
from cleanroom.v1 import dataset_pb2

ROWS = 1_000_000
QUICK_ROWS = 20_000
SCENARIOS = ("three_way", "versus_psi")
PARENT = f"collaborations/{COLLABORATION}"
THREE_WAY_TARGET_SECONDS = 15 * 60.0
SPEEDUP_TARGET = 2.0  # over OpenMined PSI's cardinality mode, wall time
MAX_ROUNDS = 4  # of every brand taking its pending hops; one suffices when nobody joins late
MATCHABLE = dataset_pb2.MATCHING_STATE_MATCHABLE
OPENMINED_PSI = "openmined.psi==2.0.6"
PSI_VENV = Path(__file__).resolve().parents[1] / ".venv-psi"
PSI_CHILD = Path(__file__).resolve().with_name("_openmined_psi.py")
INSTALL_SECONDS = 600.0
PSI_SECONDS = 4 * 3600.0
CALIBRATION_ELEMENTS = 20_000

T = TypeVar("T")


@dataclass
class Clock:
    """Wall and CPU time of the phases of one scenario, the brands' side and the server's."""

    server: BenchServer
    phases: list[dict[str, Any]] = field(default_factory=list)

    def time(self, phase: str, elements: int, call: Callable[[], T]) -> T:
        """Runs `call` as the named phase over `elements` identifier elements; records it."""
        cpu, server_cpu = time.process_time(), self.server.cpu_seconds()
        started = time.perf_counter()
        value = call()
        seconds = time.perf_counter() - started
        entry = {
            "phase": phase,
            "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu,
            "server_cpu_seconds": self.server.cpu_seconds() - server_cpu,
            "elements": elements,
        }
        self.phases.append(entry)
        per_element = f", {seconds / elements * 1e6:.0f} µs per element" if elements else ""
        print(f"  {phase}: {seconds:.1f} s{per_element}", flush=True)
        return value

    def total(self, key: str = "seconds") -> float:
        """The sum of one figure over the phases."""
        return float(sum(p[key] for p in self.phases))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the chosen scenarios and prints their tables.

    Args:
        argv: The command line arguments (`sys.argv[1:]` when None).

    Returns:
        1 if a released count differed from the planted one, else 0.
    """
    args = _arguments(list(sys.argv[1:] if argv is None else argv))
    rows: int = args.rows or (QUICK_ROWS if args.quick else ROWS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for scenario in args.scenarios:
        work = Path(tempfile.mkdtemp(prefix="blind-", dir=out)).resolve()
        rng = np.random.default_rng(args.seed)
        try:
            if scenario == "three_way":
                results = three_way(work, rows, rng)
                table = render_three_way(results)
                name = "blind-three-way"
            else:
                results = versus_psi(work, rows, rng)
                table = render_versus_psi(results)
                name = "blind-versus-psi"
        finally:
            shutil.rmtree(work, ignore_errors=True)
        problems += results["problems"]
        publish(out, name, table, results)
    for problem in problems:
        print(f"WRONG: {problem}", file=sys.stderr)
    return 1 if problems else 0


# The three-way report ---------------------------------------------------------------------


def three_way(work: Path, rows: int, rng: np.random.Generator) -> dict[str, Any]:
    """Three brands, two types, a segment: uploads, hops and the report, every count checked."""
    brands = BRANDS[:3]
    before = machine()
    print(f"double-blind, three brands of {rows:,} rows on {before['summary']}", flush=True)
    group_operations = calibrate()
    (work / "files").mkdir()
    datasets = _data.group(work / "files", rows, rng, brands)
    base, others = datasets[0], datasets[1:]
    expected = _data.expected_report(base, others, 2 * rows, segment=True)
    with BenchServer.start(work / "server", brands=brands, matching="double_blind") as server:
        clock = Clock(server)
        keys = _upload_all(server, clock, datasets)
        problems = _mask_all(server, clock, datasets, keys, work / "journals")
        report = clock.time("report", 0, partial(_report, server, base, others, segment=True))
    problems += _data.compare(report, expected)
    return {
        "scenario": "three_way",
        "rows": rows,
        "brands": list(brands),
        "elements": _elements(datasets),
        "multiplications": _multiplications(datasets),
        "group_operations": group_operations,
        "phases": clock.phases,
        "total_seconds": clock.total(),
        "cpu_seconds": clock.total("cpu_seconds"),
        "server_cpu_seconds": clock.total("server_cpu_seconds"),
        "target_seconds": THREE_WAY_TARGET_SECONDS,
        "figures_released": _released(report),
        "figures": _data.figures(report),
        "problems": problems,
        "machine": {"before": before, "after": machine()},
    }


def render_three_way(results: dict[str, Any]) -> str:
    """The Markdown table of the three-way scenario."""
    rows, total = results["rows"], results["total_seconds"]
    lines = [
        "# Double-blind: three brands to a three-way report",
        "",
        f"Three brands of {rows:,} rows each (emails 90%, phones 70%, a segment column;"
        f" {results['elements']:,} identifier elements in all), exact mode, on"
        f" {results['machine']['before']['summary']} (load"
        f" {results['machine']['after']['load']:.1f} at the end).",
        "",
        *_phase_table(results["phases"]),
        "",
        f"Total **{total:.1f} s** (target ≤ {results['target_seconds']:.0f} s at 1,000,000 rows)."
        f" CPU: {results['cpu_seconds']:.1f} s on the brands' side,"
        f" {results['server_cpu_seconds']:.1f} s on the server's;"
        f" {results['multiplications']:,} scalar multiplications,"
        f" {total / results['multiplications'] * 1e6:.1f} µs of wall time and"
        f" {_cpu_per_multiplication(results):.1f} µs of CPU each (hashing included).",
    ]
    lines += ["", _group_line(results)]
    if rows != ROWS:
        lines += [
            "",
            f"Extrapolated linearly to {ROWS:,} rows per brand (not measured):"
            f" {total * ROWS / rows:.0f} s; the group operations alone"
            f" {_floor_seconds(results, ROWS):.0f} s.",
        ]
    lines += ["", _verdict(results), ""]
    return "\n".join(lines)


# Against OpenMined PSI --------------------------------------------------------------------


def versus_psi(work: Path, rows: int, rng: np.random.Generator) -> dict[str, Any]:
    """Two brands, one type: our flow to the pairwise report, then OpenMined PSI's cardinality."""
    brands = BRANDS[:2]
    before = machine()
    print(f"double-blind against OpenMined PSI, two sets of {rows:,} on {before['summary']}")
    python, unavailable = openmined_python()
    group_operations = calibrate()
    (work / "files").mkdir()
    first, second = _data.pair(work / "files", rows, rng, (brands[0], brands[1]))
    expected = _data.expected_report(first, [second], rows + rows // 2, segment=False)
    overlap = expected.pairwise[first.name, second.name]
    with BenchServer.start(work / "server", brands=brands, matching="double_blind") as server:
        clock = Clock(server)
        keys = _upload_all(server, clock, [first, second])
        problems = _mask_all(server, clock, [first, second], keys, work / "journals")
        report = clock.time("report", 0, partial(_report, server, first, [second], segment=False))
    problems += _data.compare(report, expected)
    openmined: dict[str, Any] | None = None
    if python is not None:
        print("  OpenMined PSI, cardinality mode:", flush=True)
        openmined = run_openmined(python, first, second, work / "sets")
        if openmined["intersection"] != overlap:
            problems.append(f"OpenMined PSI counted {openmined['intersection']}, not {overlap}")
        print(f"  OpenMined PSI: {openmined['total_seconds']:.1f} s", flush=True)
    ours = clock.total()
    return {
        "scenario": "versus_psi",
        "rows": rows,
        "brands": list(brands),
        "overlap": overlap,
        "elements": _elements([first, second]),
        "multiplications": _multiplications([first, second]),
        "group_operations": group_operations,
        "phases": clock.phases,
        "total_seconds": ours,
        "cpu_seconds": clock.total("cpu_seconds"),
        "server_cpu_seconds": clock.total("server_cpu_seconds"),
        "openmined": openmined,
        "openmined_unavailable": unavailable,
        "speedup": openmined["total_seconds"] / ours if openmined else None,
        "speedup_target": SPEEDUP_TARGET,
        "figures_released": _released(report),
        "figures": _data.figures(report),
        "problems": problems,
        "machine": {"before": before, "after": machine()},
    }


def openmined_python() -> tuple[Path | None, str | None]:
    """The interpreter of `.venv-psi/` with OpenMined PSI, made on first use; or why not."""
    python = PSI_VENV / "bin" / "python"
    probe = [str(python), "-c", "import private_set_intersection.python"]
    if python.exists() and subprocess.run(probe, check=False, capture_output=True).returncode == 0:
        return python, None
    print(f"  making {PSI_VENV} with {OPENMINED_PSI} (once)", flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(PSI_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", OPENMINED_PSI],
        probe,
    ]
    for step in steps:
        try:
            done = subprocess.run(
                step, check=False, capture_output=True, text=True, timeout=INSTALL_SECONDS
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, f"{' '.join(step[:3])}: {error}"
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
            print(f"  OpenMined PSI is not available: {reason}", flush=True)
            return None, reason
    return python, None


def run_openmined(
    python: Path, client: _data.Dataset, server: _data.Dataset, directory: Path
) -> dict[str, Any]:
    """OpenMined PSI on the digests of the two datasets: `client` learns the intersection size."""
    directory.mkdir()
    paths = []
    for dataset in (client, server):
        column = pq.read_table(dataset.path, columns=["email"]).column("email").combine_chunks()
        path = directory / f"{dataset.brand}.bin"
        path.write_bytes(column.buffers()[1].to_pybytes()[: 32 * len(column)])
        paths.append(path)
    done = subprocess.run(
        [str(python), str(PSI_CHILD), *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        timeout=PSI_SECONDS,
    )
    figures: dict[str, Any] = json.loads(done.stdout)
    for phase, seconds in figures["seconds"].items():
        print(f"    {phase}: {seconds:.1f} s", flush=True)
    return figures


def render_versus_psi(results: dict[str, Any]) -> str:
    """The Markdown table of the comparison with OpenMined PSI."""
    rows, ours = results["rows"], results["total_seconds"]
    lines = [
        "# Double-blind against OpenMined PSI's cardinality mode",
        "",
        f"Two brands of {rows:,} rows each, one type (emails), {results['overlap']:,} people in"
        f" both, on {results['machine']['before']['summary']} (load"
        f" {results['machine']['after']['load']:.1f} at the end).",
        "",
        "## Ours: masked uploads, masking hops, the pairwise report (exact mode)",
        "",
        *_phase_table(results["phases"]),
        "",
        f"Total **{ours:.1f} s**; CPU {results['cpu_seconds']:.1f} s on the brands' side,"
        f" {results['server_cpu_seconds']:.1f} s on the server's;"
        f" {results['multiplications']:,} scalar multiplications,"
        f" {ours / results['multiplications'] * 1e6:.1f} µs of wall time and"
        f" {_cpu_per_multiplication(results):.1f} µs of CPU each (hashing included).",
        "",
        "## OpenMined PSI (cardinality mode, `DataStructure.RAW`: exact; single-threaded)",
        "",
    ]
    openmined = results["openmined"]
    if openmined is None:
        lines += [f"Not measured: {results['openmined_unavailable']}.", ""]
        return "\n".join([*lines, _verdict(results), ""])
    lines += [
        "| phase | seconds | µs per element |",
        "|---|---:|---:|",
    ]
    for phase, seconds in openmined["seconds"].items():
        lines.append(f"| {phase} | {seconds:.1f} | {seconds / rows * 1e6:.0f} |")
    theirs = openmined["total_seconds"]
    ours_cpu = results["cpu_seconds"] + results["server_cpu_seconds"]
    lines += [
        f"| **total** | **{theirs:.1f}** | {theirs / rows * 1e6:.0f} |",
        "",
        f"openmined.psi {openmined['version']}, intersection {openmined['intersection']:,};"
        f" CPU {openmined['cpu_seconds']:.1f} s; messages"
        f" {sum(openmined['message_bytes'].values()) / 1e6:.1f} MB.",
        "",
        f"Speed-up of ours over OpenMined: **{results['speedup']:.2f}x** in wall time"
        f" (target ≥ {results['speedup_target']:g}x);"
        f" {openmined['cpu_seconds'] / ours_cpu:.2f}x in CPU time"
        f" ({openmined['cpu_seconds']:.1f} s against {ours_cpu:.1f} s).",
    ]
    lines += ["", _group_line(results)]
    if rows != ROWS:
        lines += [
            "",
            f"Extrapolated linearly to {ROWS:,} rows a side (not measured): ours"
            f" {ours * ROWS / rows:.0f} s (the group operations alone"
            f" {_floor_seconds(results, ROWS):.0f} s), OpenMined {theirs * ROWS / rows:.0f} s.",
        ]
    lines += ["", _verdict(results), ""]
    return "\n".join(lines)


# Shared steps -----------------------------------------------------------------------------


def calibrate() -> dict[str, float]:
    """Microseconds per element of the group operations here: on one core, on every core.

    `mask` is a hash to the group and a multiplication (what an upload does to each
    digest), `multiply` one multiplication (a hop's work per element); `_one_core` is the
    wall time on one thread, `_wall` the wall time on every core, `_cpu` the CPU time then.
    """
    digests = np.frombuffer(
        np.random.default_rng(0).bytes(CALIBRATION_ELEMENTS * 32), dtype=np.uint8
    ).reshape(CALIBRATION_ELEMENTS, 32)
    key = ristretto255.new_scalar()
    elements = ristretto255.mask_digests(key, digests, "email")
    operations: dict[str, Callable[..., Any]] = {
        "mask": partial(ristretto255.mask_digests, key, digests, "email"),
        "multiply": partial(ristretto255.multiply, key, elements),
    }
    figures: dict[str, float] = {}
    for name, operation in operations.items():
        for label, workers in (("one_core", 1), ("wall", None)):
            cpu, started = time.process_time(), time.perf_counter()
            operation(workers=workers)
            figures[f"{name}_{label}"] = (time.perf_counter() - started) / len(digests) * 1e6
            if workers is None:
                figures[f"{name}_cpu"] = (time.process_time() - cpu) / len(digests) * 1e6
    print(
        f"  group operations: a multiplication {figures['multiply_one_core']:.0f} µs on one"
        f" core, {figures['multiply_wall']:.0f} µs per element on every core; a hash to the"
        f" group and a multiplication {figures['mask_one_core']:.0f} µs on one core",
        flush=True,
    )
    return figures


def _group_line(results: dict[str, Any]) -> str:
    g = results["group_operations"]
    return (
        f"Group operations measured in the same run: a multiplication {g['multiply_one_core']:.0f}"
        f" µs on one core ({g['multiply_wall']:.0f} µs per element on every core), a hash to"
        f" the group and a multiplication {g['mask_one_core']:.0f} µs on one core; at that"
        f" speed the flow's {results['multiplications']:,} multiplications alone take"
        f" {_floor_seconds(results, results['rows']):.1f} s."
    )


def _floor_seconds(results: dict[str, Any], rows: int) -> float:
    """The flow's group operations alone at `rows` rows per brand, on every core here."""
    g = results["group_operations"]
    scale = rows / results["rows"]
    uploads = results["elements"] * g["mask_wall"]
    others = (results["multiplications"] - results["elements"]) * g["multiply_wall"]
    return float((uploads + others) * scale / 1e6)


def _upload_all(
    server: BenchServer, clock: Clock, datasets: list[_data.Dataset]
) -> dict[str, bytes]:
    """Each brand makes a blind key and uploads its dataset with it; returns the keys."""
    keys: dict[str, bytes] = {}
    for dataset in datasets:
        keys[dataset.brand] = partners.new_blind_key()
        with server.client(dataset.brand) as client:
            clock.time(
                f"upload+mask {dataset.brand}",
                _elements([dataset]),
                partial(
                    client.upload,
                    dataset.path,
                    dataset_id=dataset.dataset_id,
                    blind_key=keys[dataset.brand],
                ),
            )
    return keys


def _mask_all(
    server: BenchServer,
    clock: Clock,
    datasets: list[_data.Dataset],
    keys: dict[str, bytes],
    journals: Path,
) -> list[str]:
    """Each brand in turn takes its pending hops until every dataset is matchable."""
    for round_number in range(1, MAX_ROUNDS + 1):
        for brand, key in keys.items():
            elements = sum(_elements([d]) for d in datasets if _pending(server, d, brand))
            if not elements:
                continue
            with server.client(brand) as client:
                clock.time(
                    f"hops by {brand}" + (f" (round {round_number})" if round_number > 1 else ""),
                    elements,
                    partial(partners.work, client, PARENT, key, journal=journals / brand),
                )
        if all(_matchable(server, d) for d in datasets):
            return []
    return [f"datasets still masking after {MAX_ROUNDS} rounds of hops"]


def _pending(server: BenchServer, dataset: _data.Dataset, brand: str) -> bool:
    """Whether `brand` has still to mask `dataset` (asked of the dataset's owner)."""
    with server.client(dataset.brand) as client:
        found = client.get_dataset(dataset.name)
    return f"partners/{brand}" in found.pending_maskers


def _matchable(server: BenchServer, dataset: _data.Dataset) -> bool:
    with server.client(dataset.brand) as client:
        return client.get_dataset(dataset.name).matching_state == MATCHABLE


def _report(
    server: BenchServer, base: _data.Dataset, others: list[_data.Dataset], *, segment: bool
) -> Any:
    """The report of `base` against `others`, asked by the base's brand."""
    with server.client(base.brand) as client:
        return client.create_report(
            PARENT,
            base=base.name,
            others=[o.name for o in others],
            segment_column=_data.SEGMENT if segment else None,
        )


def _elements(datasets: list[_data.Dataset]) -> int:
    """The identifier elements (non-null digests) of the datasets."""
    return int(sum(present.sum() for d in datasets for present in d.present.values()))


def _multiplications(datasets: list[_data.Dataset]) -> int:
    """Scalar multiplications of the whole flow, with B brands and E elements: 2·B·E.

    Per element: 1 by its owner at upload, one by each of the B-1 other brands at their hops,
    B by the server (one per hop and one at the first send).
    """
    return 2 * len(datasets) * _elements(datasets)


def _released(report: Any) -> int:
    """How many of a report's counts were released (the others withheld, with a reason)."""
    counts = [s.row_count for s in report.dataset_sizes]
    counts += [p.matched_row_count for p in report.pairwise_overlaps]
    counts += [c.base_row_count for c in report.membership_cells]
    return sum(1 for count in counts if count.HasField("value"))


def _cpu_per_multiplication(results: dict[str, Any]) -> float:
    """Microseconds of CPU, both sides, per scalar multiplication of the flow."""
    cpu = results["cpu_seconds"] + results["server_cpu_seconds"]
    return float(cpu / results["multiplications"] * 1e6)


def _phase_table(phases: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| phase | seconds | elements | µs per element | CPU s (brands) | CPU s (server) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        per = f"{p['seconds'] / p['elements'] * 1e6:.0f}" if p["elements"] else "-"
        lines.append(
            f"| {p['phase']} | {p['seconds']:.1f} | {p['elements']:,} | {per}"
            f" | {p['cpu_seconds']:.1f} | {p['server_cpu_seconds']:.1f} |"
        )
    total = sum(p["seconds"] for p in phases)
    lines.append(f"| **total** | **{total:.1f}** | | | | |")
    return lines


def _verdict(results: dict[str, Any]) -> str:
    checked = f"{results['figures_released']} of the report's {results['figures']} counts released"
    if results["problems"]:
        return f"{checked}; **WRONG**: " + "; ".join(results["problems"])
    return f"{checked}, every one equal to the planted count."


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.blind", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rows", type=int, help=f"rows per brand (default {ROWS:,})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows per brand")
    parser.add_argument(
        "--scenarios",
        type=lambda text: tuple(text.split(",")),
        default=SCENARIOS,
        help=f"a comma-separated subset of {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--out", default="bench-results", help="where the tables go")
    parser.add_argument("--seed", type=int, default=18)
    args, _ = parser.parse_known_args(argv)  # `python -m bench` passes every module's options
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {', '.join(sorted(unknown))}; choose from {SCENARIOS}")
    return args


if __name__ == "__main__":
    sys.exit(main())
