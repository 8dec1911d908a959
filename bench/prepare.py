"""Preparation benchmark: `prepare` and `resolve` on large customer files, beside baselines.

Measures, on synthetic files made first (not timed) in a work folder under `--out`:

- emails: rows per second of `prepare` end to end (read CSV, normalize, digest, write
  Parquet), beside a plain per-row Python loop of normalize, SHA-256 and HMAC;
- the same emails as a Thai Windows export: semicolon-delimited, cp874, with a column of
  Thai names, delimiter and encoding told by `prepare` itself, beside the UTF-8 figure;
- phones in mixed national and international formats: the same, beside the per-row loop
  that calls the phone library for every number;
- `resolve` over three files of 1,000,000 records each: seconds;
- peak memory (resident, the process and its workers together) of preparing a 3 GB CSV.

Writes `bench-results/prepare.md` and `prepare.json` and prints the table. Never fails on a
time; the work files are deleted at the end.

    python -m bench.prepare [--quick] [--out bench-results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from bench import _customers
from partners.preparation.digest import digest_normalized, type_key
from partners.preparation.normalize import InvalidIdentifierError, normalize_email, normalize_phone
from partners.preparation.pipeline import prepare
from partners.preparation.resolve import Source, resolve

SECRET = bytes(range(32))
COLLABORATION = "bench"
REGION = "US"


@dataclass(frozen=True)
class Sizes:
    """How large each benchmark's input is."""

    email_rows: int
    email_baseline_rows: int
    phone_rows: int
    phone_baseline_rows: int
    resolve_records: int
    memory_bytes: int


FULL = Sizes(5_000_000, 300_000, 2_000_000, 30_000, 1_000_000, 3_000_000_000)
QUICK = Sizes(200_000, 50_000, 100_000, 5_000, 50_000, 30_000_000)
TARGETS = {
    "email_rows_per_second": 1_000_000,
    "phone_speedup": 4.0,
    "resolve_seconds": 20.0,
    "peak_memory_bytes": 1 << 30,
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table; return 0 (figures never fail it)."""
    args = _arguments(sys.argv[1:] if argv is None else argv)
    if args.child_prepare:
        return _child_prepare(Path(args.child_prepare[0]), Path(args.child_prepare[1]))
    sizes = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    print(f"preparation benchmark on {machine['summary']}", flush=True)
    if not args.no_warm_up:
        print(f"warming up memory: {warm_up(2 << 30):.1f} s", flush=True)
    rng = np.random.default_rng(args.seed)
    book = _customers.PhoneBook.make(rng)
    work = Path(tempfile.mkdtemp(prefix="prepare-", dir=out)).resolve()
    try:
        benchmarks: dict[str, Callable[[], dict[str, Any]]] = {
            "email": lambda: bench_column(
                work,
                rng,
                book,
                "email",
                rows=sizes.email_rows,
                baseline_rows=sizes.email_baseline_rows,
            ),
            "phone": lambda: bench_column(
                work,
                rng,
                book,
                "phone",
                rows=sizes.phone_rows,
                baseline_rows=sizes.phone_baseline_rows,
            ),
            "email_cp874": lambda: bench_cp874(work, rng, book, rows=sizes.email_rows),
            "resolve": lambda: bench_resolve(work, rng, book, sizes.resolve_records),
            "memory": lambda: bench_memory(work, rng, book, sizes.memory_bytes),
        }
        results = {name: run() for name, run in benchmarks.items() if name in args.only}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine["load_average_at_end"] = os.getloadavg()[0]
    report = render(machine, results)
    if args.quick:
        report += (
            "\nQuick run: inputs this small measure start-up (worker processes, imports) more"
            " than throughput; compare only full runs with the targets.\n"
        )
    (out / "prepare.md").write_text(report)
    document = {"machine": machine, "targets": TARGETS, "sizes": asdict(sizes), "results": results}
    (out / "prepare.json").write_text(json.dumps(document, indent=2) + "\n")
    print()
    print(report)
    print(json.dumps(document["results"], indent=2))
    print(f"written to {out / 'prepare.md'} and {out / 'prepare.json'}")
    return 0


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.prepare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke run")
    parser.add_argument("--out", default="bench-results", help="where the tables go")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default={"email", "email_cp874", "phone", "resolve", "memory"},
        help="a comma-separated subset of email, email_cp874, phone, resolve, memory",
    )
    parser.add_argument("--no-warm-up", action="store_true", help="skip touching memory first")
    parser.add_argument(
        "--child-prepare", nargs=2, metavar=("SOURCE", "DESTINATION"), help=argparse.SUPPRESS
    )
    args, _ = parser.parse_known_args(argv)  # other benchmark modules read theirs
    return args


# The benchmarks ---------------------------------------------------------------------------


def bench_column(
    work: Path,
    rng: np.random.Generator,
    book: _customers.PhoneBook,
    identifier_type: str,
    *,
    rows: int,
    baseline_rows: int,
) -> dict[str, Any]:
    """Time `prepare` on a file of one identifier column (and a segment), and the baseline."""
    source = work / f"{identifier_type}.csv"
    _customers.write_csv(source, rng, book, rows, (identifier_type, "tier"))
    print(
        f"{identifier_type}: {rows:,} rows, {source.stat().st_size / 1e6:,.0f} MB of CSV",
        flush=True,
    )
    before = _cpu_seconds()
    started = time.perf_counter()
    summary = prepare(
        source,
        work / f"{identifier_type}.parquet",
        secret=SECRET,
        collaboration_id=COLLABORATION,
        columns={identifier_type: identifier_type},
        segment_columns=["tier"],
        default_region=REGION,
    )
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - before
    cells = (
        pa_csv.read_csv(
            source,
            convert_options=pa_csv.ConvertOptions(
                include_columns=[identifier_type], column_types={identifier_type: pa.string()}
            ),
        )
        .column(0)[:baseline_rows]
        .to_pylist()
    )
    baseline = per_row_baseline(identifier_type, cells)
    result = {
        "rows": rows,
        "csv_bytes": source.stat().st_size,
        "seconds": seconds,
        "rows_per_second": rows / seconds,
        "cpu_seconds": cpu,
        "cpu_microseconds_per_row": cpu / rows * 1e6,
        "valid": summary.types[identifier_type].valid,
        "duplicates": summary.types[identifier_type].duplicates,
        "baseline_rows": len(cells),
        "baseline_rows_per_second": baseline,
        "speedup": rows / seconds / baseline,
    }
    print(
        f"  prepare {result['rows_per_second']:,.0f} rows/s; baseline {baseline:,.0f} rows/s",
        flush=True,
    )
    return result


THAI_NAMES = ("สมชาย", "สมหญิง", "ประยุทธ์", "วิภา", "กิตติ", "นภา")


def bench_cp874(
    work: Path, rng: np.random.Generator, book: _customers.PhoneBook, *, rows: int
) -> dict[str, Any]:
    """Time `prepare` on a semicolon-delimited cp874 CSV of emails and Thai names."""
    utf8 = work / "email-th-utf8.csv"
    source = work / "email-th.csv"
    _customers.write_csv(utf8, rng, book, rows, ("email", "tier"))
    names = pa.array(np.array(THAI_NAMES, dtype=object)[rng.integers(0, len(THAI_NAMES), rows)])
    table = pa_csv.read_csv(utf8).append_column("name", names)
    utf8.unlink()
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(table, sink, write_options=pa_csv.WriteOptions(delimiter=";"))
    source.write_bytes(sink.getvalue().to_pybytes().decode().encode("cp874"))
    del table, sink
    print(
        f"email_cp874: {rows:,} rows, {source.stat().st_size / 1e6:,.0f} MB of cp874 CSV",
        flush=True,
    )
    before = _cpu_seconds()
    started = time.perf_counter()
    summary = prepare(
        source,
        work / "email-th.parquet",
        secret=SECRET,
        collaboration_id=COLLABORATION,
        columns={"email": "email"},
        segment_columns=["tier"],
    )
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - before
    print(f"  prepare {rows / seconds:,.0f} rows/s ({summary.source})", flush=True)
    return {
        "rows": rows,
        "csv_bytes": source.stat().st_size,
        "seconds": seconds,
        "rows_per_second": rows / seconds,
        "cpu_seconds": cpu,
        "cpu_microseconds_per_row": cpu / rows * 1e6,
        "read_as": summary.source,
        "valid": summary.types["email"].valid,
    }


def per_row_baseline(identifier_type: str, cells: list[str | None]) -> float:
    """Rows per second of the plain implementation: per row, normalize, SHA-256 and HMAC."""
    key = type_key(SECRET, COLLABORATION, identifier_type)
    normalize: Callable[[str], str] = (
        normalize_email
        if identifier_type == "email"
        else lambda cell: normalize_phone(cell, REGION)
    )
    started = time.perf_counter()
    for cell in cells:
        if not cell:
            continue
        try:
            value = normalize(cell)
        except InvalidIdentifierError:
            continue
        digest_normalized(key, [value])
    return len(cells) / (time.perf_counter() - started)


def bench_resolve(
    work: Path, rng: np.random.Generator, book: _customers.PhoneBook, records: int
) -> dict[str, Any]:
    """Time `resolve` over a CRM, an app and a web file of `records` records each."""
    population = records * 3 // 2
    people = [rng.integers(0, population, records) for _ in range(3)]
    maid_of = _customers.maids(rng, population)
    crm = pa.table(
        {
            "email": _customers.emails(rng, people[0]),
            "phone": _customers.us_phones(rng, book, people[0]),
            "tier": _customers.tiers(rng, records),
        }
    )
    app = pa.table(
        {
            "mobile": _customers.us_phones(rng, book, people[1]),
            "idfa": maid_of.take(pa.array(people[1])),
        }
    )
    web = pa.table(
        {"device_id": maid_of.take(pa.array(people[2])), "email": _customers.emails(rng, people[2])}
    )
    pa_csv.write_csv(_drop_some(rng, crm, "phone"), work / "crm.csv")
    pq.write_table(_drop_some(rng, app, "idfa"), work / "app.parquet")
    pa_csv.write_csv(_drop_some(rng, web, "email"), work / "web.csv")
    sources = [
        Source(work / "crm.csv", {"email": "email", "phone": "phone"}),
        Source(work / "app.parquet", {"mobile": "phone", "idfa": "maid"}),
        Source(work / "web.csv", {"device_id": "maid", "email": "email"}),
    ]
    print(f"resolve: 3 files of {records:,} records", flush=True)
    started = time.perf_counter()
    summary = resolve(sources, work / "people.parquet", default_region=REGION)
    seconds = time.perf_counter() - started
    print(f"  {seconds:.1f} s; {summary.persons:,} persons", flush=True)
    return {
        "records": summary.records,
        "seconds": seconds,
        "persons": summary.persons,
        "planted_people": len(np.unique(np.concatenate(people))),
        "records_per_person": {str(k): v for k, v in summary.records_per_person.items()},
        "shared_identifiers_excluded": summary.shared_identifiers_excluded,
    }


def bench_memory(
    work: Path, rng: np.random.Generator, book: _customers.PhoneBook, size: int
) -> dict[str, Any]:
    """Prepare a CSV of about `size` bytes in a child process; sample its memory."""
    source = work / "large.csv"
    print(f"memory: writing about {size / 1e9:.2f} GB of CSV", flush=True)
    rows = _customers.write_csv_of_size(source, rng, book, size, ("email", "phone", "maid", "tier"))
    csv_bytes = source.stat().st_size
    print(f"  {rows:,} rows, {csv_bytes / 1e9:.2f} GB; preparing in a child process", flush=True)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.prepare",
            "--child-prepare",
            str(source),
            str(work / "large.parquet"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    sampler = _TreeMemory(child.pid)
    sampler.start()
    output, _ = child.communicate()
    sampler.stop()
    source.unlink()
    (work / "large.parquet").unlink(missing_ok=True)
    measured = json.loads(output.strip().splitlines()[-1])
    workers = sorted(
        (high for pid, high in sampler.high_water.items() if pid != child.pid), reverse=True
    )[: measured["workers"]]
    result = {
        "csv_bytes": csv_bytes,
        "rows": rows,
        **measured,
        "peak_tree_rss_bytes_sampled": sampler.peak,
        "worker_high_water_bytes": workers,
        "peak_bound_bytes": measured["peak_rss_bytes"] + sum(workers),
    }
    print(
        f"  peak {sampler.peak / 2**20:,.0f} MiB sampled; {measured['seconds']:.0f} s", flush=True
    )
    return result


def _child_prepare(source: Path, destination: Path) -> int:
    """Run in the child process of `bench_memory`: prepare, then report peak memory as JSON."""
    from partners.preparation._worker_pool import default_workers  # noqa: PLC0415 (child mode only)

    started = time.perf_counter()
    summary = prepare(
        source,
        destination,
        secret=SECRET,
        collaboration_id=COLLABORATION,
        columns={"email": "email", "phone": "phone", "maid": "maid"},
        segment_columns=["tier"],
        default_region=REGION,
    )
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows_read": summary.rows_read,
                "rows_written": summary.rows_written,
                "workers": default_workers(),
                # VmHWM, not ru_maxrss: Linux carries the starting process's peak into the
                # latter, across fork and exec.
                "peak_rss_bytes": _status_bytes(os.getpid(), "VmHWM"),
            }
        ),
        flush=True,
    )
    return 0


# Measuring --------------------------------------------------------------------------------


class _TreeMemory:
    """Samples, every 0.1 s, the resident memory of a process and all its descendants.

    Keeps the largest sum seen (what the tree held at once), and each process's own high
    water mark (VmHWM), whose sum bounds the tree's peak from above.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0
        self.high_water: dict[int, int] = {}

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            pids = _descendants(self._pid)
            self.peak = max(self.peak, sum(_status_bytes(pid, "VmRSS") for pid in pids))
            for pid in pids:
                high = _status_bytes(pid, "VmHWM")
                self.high_water[pid] = max(self.high_water.get(pid, 0), high)


def _descendants(root: int) -> list[int]:
    """The process and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def _status_bytes(pid: int, field: str) -> int:
    """A figure of /proc/PID/status (VmRSS, VmHWM) in bytes; 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu_seconds() -> float:
    """User and system time of this process and of its finished children."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _drop_some(rng: np.random.Generator, table: pa.Table, column: str) -> pa.Table:
    """Blank a fifth of a column, as sources rarely hold every identifier."""
    values = table.column(column).combine_chunks()
    blank = pa.array(rng.random(len(values)) < 0.2)
    return table.set_column(
        table.schema.get_field_index(column), column, pc.if_else(blank, "", values)
    )


def describe_machine() -> dict[str, Any]:
    """Cores, CPU model, memory, software versions and the load when the run started."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    versions = {
        name: metadata.version(name)
        for name in ("numpy", "pyarrow", "phonenumbers", "cryptography")
    }
    return {
        "summary": f"{cores} cores ({cpu}), {memory / 2**30:.1f} GiB memory",
        "cores": cores,
        "cpu": cpu,
        "memory_bytes": memory,
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": os.getloadavg()[0],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def warm_up(size: int) -> float:
    """Touch `size` bytes of fresh memory once (a VM's first touch of a page is slow)."""
    started = time.perf_counter()
    block = np.ones(size, dtype=np.uint8)
    del block
    return time.perf_counter() - started


# The table --------------------------------------------------------------------------------


def render(machine: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    """The Markdown table of the figures, each beside its baseline and target."""
    rows = []
    notes = [
        "Baseline: a Python loop that, for each value, normalizes it"
        " (`partners.preparation.normalize`, the phone library for phones), hashes it with"
        " SHA-256 and HMACs the hash; no reading or writing."
    ]
    for name, label in (("email", "emails"), ("phone", "phones, mixed formats")):
        if name in results:
            column = results[name]
            target = (
                f"≥ {TARGETS['email_rows_per_second']:,} rows/s"
                if name == "email"
                else f"≥ {TARGETS['phone_speedup']:.0f}x the baseline"
            )
            met = (
                column["rows_per_second"] >= TARGETS["email_rows_per_second"]
                if name == "email"
                else column["speedup"] >= TARGETS["phone_speedup"]
            )
            rows.append(
                (
                    f"{label}: `prepare` {column['rows']:,} rows, CSV to Parquet",
                    f"{column['rows_per_second']:,.0f} rows/s ({column['seconds']:.1f} s,"
                    f" {column['cpu_microseconds_per_row']:.2f} us CPU a row)",
                    f"{column['baseline_rows_per_second']:,.0f} rows/s",
                    f"{column['speedup']:.1f}x",
                    target,
                    _met(met),
                )
            )
    if "email_cp874" in results:
        thai = results["email_cp874"]
        utf8 = results.get("email")
        rows.append(
            (
                f"emails, Thai export (`;`, cp874, Thai names): `prepare` {thai['rows']:,} rows",
                f"{thai['rows_per_second']:,.0f} rows/s ({thai['seconds']:.1f} s,"
                f" {thai['cpu_microseconds_per_row']:.2f} us CPU a row)",
                f"UTF-8 CSV above: {utf8['rows_per_second']:,.0f} rows/s" if utf8 else "",
                f"{thai['rows_per_second'] / utf8['rows_per_second']:.2f}x" if utf8 else "",
                "shown beside UTF-8",
                "",
            )
        )
    if "resolve" in results:
        resolved = results["resolve"]
        rows.append(
            (
                f"`resolve` 3 files of {resolved['records'] // 3:,} records",
                f"{resolved['seconds']:.1f} s ({resolved['persons']:,} persons)",
                "",
                "",
                f"< {TARGETS['resolve_seconds']:.0f} s",
                _met(resolved["seconds"] < TARGETS["resolve_seconds"]),
            )
        )
    if "memory" in results:
        memory = results["memory"]
        peak = memory["peak_tree_rss_bytes_sampled"]
        rows.append(
            (
                f"`prepare` {memory['csv_bytes'] / 1e9:.2f} GB CSV ({memory['rows']:,} rows):"
                " peak memory",
                f"{peak / 2**20:,.0f} MiB, process and workers ({memory['seconds']:.0f} s)",
                "",
                "",
                "< 1 GiB",
                _met(peak < TARGETS["peak_memory_bytes"]),
            )
        )
        highs = ", ".join(f"{high / 2**20:,.0f}" for high in memory["worker_high_water_bytes"])
        notes.append(
            "Peak memory: the largest sum, sampled every 0.1 s, of the resident memory of the"
            f" preparing process and its {memory['workers']} workers; each process's own high"
            f" water mark: {memory['peak_rss_bytes'] / 2**20:,.0f} MiB for the process,"
            f" {highs} MiB for the workers (sum {memory['peak_bound_bytes'] / 2**20:,.0f} MiB,"
            " a bound)."
        )
    lines = [
        f"Preparation benchmark, {machine['date']}: {machine['summary']};"
        f" Python {machine['python']},"
        f" load average {machine['load_average_at_start']:.2f} at start,"
        f" {machine.get('load_average_at_end', 0):.2f} at end.",
        "",
        "| figure | measured | per-row baseline, same run | ratio | target | met |",
        "|---|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        " ".join(notes),
    ]
    return "\n".join(lines) + "\n"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


if __name__ == "__main__":
    sys.exit(main())
