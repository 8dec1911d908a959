"""Spark engine benchmark: pairwise and five-dataset reports on local[2], beside baselines.

At 10 million rows per dataset (`--quick`: 200,000), datasets of one identifier type whose
overlaps are known by construction are stored as the server stores them (the sorted Arrow
file and the prefix-range Parquet copy), then matched by, in the same run:

- the Spark engine (`SparkMatcher`, every question on Spark);
- the in-memory engine (`ArrowMatcher`) over the memory-mapped Arrow files;
- a plain Spark SQL job over the same Parquet files: a join and count for the pair, one
  aggregation by digest of the union for the five datasets.

Prints and writes `bench-results/spark.md` and `spark.json`, with the load average at start
and end. Never fails on a time: only when a figure differs from the expected one.

    python -m bench.spark [--quick] [--rows 10000000] [--ranges 64] [--out bench-results]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import ipc

from cleanroom.matching.engine import DatasetTable
from cleanroom.matching.layout import sorted_layout
from cleanroom.matching.memory import ArrowMatcher
from cleanroom.matching.question import ExactOverlap, OverlapQuestion
from cleanroom.matching.ranges import RangeLocation, copy_key, range_task, write_ranges
from cleanroom.matching.spark import SparkMatcher, start_session
from cleanroom.names import DatasetName

ROWS, QUICK_ROWS = 10_000_000, 200_000
DATASETS = 5
MASTER = "local[2]"
TARGETS = {"pairwise_seconds": 20.0, "five_seconds": 60.0, "speedup_over_spark_sql": 3.0}


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns 1 if a figure was wrong, else 0."""
    args = _arguments(sys.argv[1:] if argv is None else argv)
    rows = args.rows or (QUICK_ROWS if args.quick else ROWS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_at_start = os.getloadavg()
    print(f"spark benchmark: {DATASETS} datasets of {rows:,} rows on {MASTER}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="spark-", dir=out)).resolve()
    figures: dict[str, Any] = {"rows": rows, "ranges": args.ranges, "master": MASTER}
    problems: list[str] = []
    try:
        location = RangeLocation.parse(work / "copies")
        tables, people = _datasets(work, location, rows, args.ranges, figures)
        started = time.perf_counter()
        session, _ = start_session(
            MASTER, {"spark.ui.enabled": "false", "spark.driver.memory": "3g"}
        )
        figures["session_start_seconds"] = time.perf_counter() - started
        spark = SparkMatcher(session, str(location.root), driver_rows=0)
        memory = ArrowMatcher()
        names = list(tables)
        for label, question in (
            ("pairwise", OverlapQuestion(names[0], (names[1],))),
            ("five", OverlapQuestion(names[0], tuple(names[1:]))),
        ):
            expected = _expected(question, people)
            runs = {
                "memory": _timed(lambda q=question: memory.overlap(q, tables)),  # type: ignore[misc]
                "spark_first": _timed(lambda q=question: spark.overlap(q, tables)),  # type: ignore[misc]
                "spark": _timed(lambda q=question: spark.overlap(q, tables)),  # type: ignore[misc]
            }
            for engine, (seconds, answer) in runs.items():
                figures[f"{label}_{engine}_seconds"] = seconds
                if answer.pairwise != expected:
                    problems.append(f"{label} on {engine}: pairwise counts differ")
            if runs["spark"][1] != runs["memory"][1]:
                problems.append(f"{label}: the Spark engine's answer differs from in-memory")
            seconds, counts = _plain_spark_sql(session, location, question, tables)
            figures[f"{label}_spark_sql_seconds"] = seconds
            if counts != expected:
                problems.append(f"{label}: the plain Spark SQL counts differ")
            figures[f"{label}_range_task_seconds"] = _range_task_seconds(spark, question, tables)
            print(
                f"  {label}: spark {figures[f'{label}_spark_seconds']:.1f} s,"
                f" in memory {figures[f'{label}_memory_seconds']:.1f} s,"
                f" plain spark sql {seconds:.1f} s",
                flush=True,
            )
        session.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["load_average_at_start"] = load_at_start
    figures["load_average_at_end"] = os.getloadavg()
    report = _render(figures, problems)
    (out / "spark.md").write_text(report)
    document = {"figures": figures, "targets": TARGETS, "problems": problems}
    (out / "spark.json").write_text(json.dumps(document, indent=2) + "\n")
    print()
    print(report)
    return 1 if problems else 0


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.spark", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows")
    parser.add_argument("--rows", type=int, help="rows per dataset")
    parser.add_argument("--ranges", type=int, default=64, help="prefix ranges per copy")
    parser.add_argument("--out", default="bench-results", help="where the tables go")
    parser.add_argument("--seed", type=int, default=17)
    args, _ = parser.parse_known_args(argv)  # other benchmark modules read theirs
    return args


def _datasets(
    work: Path, location: RangeLocation, rows: int, ranges: int, figures: dict[str, Any]
) -> tuple[dict[DatasetName, DatasetTable], dict[DatasetName, np.ndarray[Any, Any]]]:
    """Five datasets drawn from 1.5 x rows people, stored as the server stores them."""
    rng = np.random.default_rng(17)
    universe = 3 * rows // 2
    digests = np.frombuffer(rng.bytes(universe * 32), dtype=np.uint8).reshape(universe, 32)
    tables, people = {}, {}
    copy_seconds = []
    for k in range(DATASETS):
        name = DatasetName("bench", f"d{k}")
        chosen = rng.choice(universe, size=rows, replace=False)
        column = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(32), rows, [None, pa.py_buffer(np.ascontiguousarray(digests[chosen]).data)]
        )
        stored, _ = sorted_layout(pa.table({"email": column}), ("email",), ())
        path = work / f"bench--d{k}--0.arrow"
        with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, stored.schema) as writer:
            writer.write_table(stored, max_chunksize=rows)
        del stored
        table = ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        dataset = DatasetTable(name, table, ("email",), (), path.name)
        started = time.perf_counter()
        write_ranges(dataset, location, copy_key(path.name), ranges)
        copy_seconds.append(time.perf_counter() - started)
        tables[name], people[name] = dataset, np.sort(chosen)
    figures["copy_write_seconds_per_dataset"] = sum(copy_seconds) / len(copy_seconds)
    return tables, people


def _expected(
    question: OverlapQuestion, people: dict[DatasetName, np.ndarray[Any, Any]]
) -> dict[tuple[DatasetName, DatasetName], int]:
    """Pairwise counts from person numbers: one digest per person, so a match is a person."""
    return {
        (x, y): len(np.intersect1d(people[x], people[y], assume_unique=True))
        for x, y in question.ordered_pairs()
    }


def _timed(run: Callable[[], ExactOverlap]) -> tuple[float, ExactOverlap]:
    started = time.perf_counter()
    answer = run()
    return time.perf_counter() - started, answer


def _plain_spark_sql(
    session: Any,
    location: RangeLocation,
    question: OverlapQuestion,
    tables: dict[DatasetName, DatasetTable],
) -> tuple[float, dict[tuple[DatasetName, DatasetName], int]]:
    """The same counts by Spark SQL alone over the same Parquet files."""
    from pyspark.sql import functions as f  # noqa: PLC0415 - Spark's, loaded with the session

    def frame(name: DatasetName) -> Any:
        return session.read.parquet(location.path(copy_key(tables[name].file_name), "email"))

    started = time.perf_counter()
    if len(question.others) == 1:
        (other,) = question.others
        matched = frame(question.base).join(frame(other), "digest").count()
        counts = {(question.base, other): matched, (other, question.base): matched}
        return time.perf_counter() - started, counts
    names = question.datasets
    union = None
    for bit, name in enumerate(names):
        part = frame(name).select("digest", f.lit(1 << bit).alias("bit"))
        union = part if union is None else union.unionAll(part)
    assert union is not None
    masks = union.groupBy("digest").agg(f.sum("bit").alias("mask")).groupBy("mask").count()
    by_mask = {int(r["mask"]): int(r["count"]) for r in masks.collect()}
    counts = {
        (x, y): sum(
            n for m, n in by_mask.items() if m >> names.index(x) & 1 and m >> names.index(y) & 1
        )
        for x, y in question.ordered_pairs()
    }
    return time.perf_counter() - started, counts


def _range_task_seconds(
    spark: SparkMatcher, question: OverlapQuestion, tables: dict[DatasetName, DatasetTable]
) -> float:
    """One range task's time (read, join, count) on the driver: the unit of the cost model."""
    datasets = [tables[d] for d in question.datasets]
    manifests = [spark._manifest(d) for d in datasets]
    pairs = [(x, y) for x in range(len(datasets)) for y in range(len(datasets)) if x != y]
    plan = spark._plan(datasets, manifests, pairs, segment=None, cells=True)
    started = time.perf_counter()
    tasks = min(4, plan.tasks)
    for task in range(tasks):
        range_task(plan, task)
    return (time.perf_counter() - started) / tasks


def _render(figures: dict[str, Any], problems: list[str]) -> str:
    rows = figures["rows"]
    lines = [
        f"# Spark engine on {figures['master']}, {rows:,} rows per dataset,"
        f" {figures['ranges']} prefix ranges",
        "",
        f"Load average (1, 5, 15 min) at start {_load(figures['load_average_at_start'])},"
        f" at end {_load(figures['load_average_at_end'])}; Spark session start"
        f" {figures['session_start_seconds']:.1f} s; range copy written in"
        f" {figures['copy_write_seconds_per_dataset']:.1f} s per dataset.",
        "",
        "| report | Spark engine | (first run) | in memory | plain Spark SQL | speed-up | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, target in (("pairwise", "pairwise_seconds"), ("five", "five_seconds")):
        spark, sql = figures[f"{label}_spark_seconds"], figures[f"{label}_spark_sql_seconds"]
        lines.append(
            f"| {label} | {spark:.1f} s | {figures[f'{label}_spark_first_seconds']:.1f} s"
            f" | {figures[f'{label}_memory_seconds']:.1f} s | {sql:.1f} s | {sql / spark:.1f}x"
            f" | <= {TARGETS[target]:.0f} s, >= {TARGETS['speedup_over_spark_sql']:.0f}x |"
        )
    lines += [
        "",
        "One range task (read its Parquet files, merge-join, count) on the driver:"
        f" {figures['pairwise_range_task_seconds'] * 1000:.0f} ms for the pair,"
        f" {figures['five_range_task_seconds'] * 1000:.0f} ms for the five datasets,"
        f" at {rows // figures['ranges']:,} rows per dataset and range.",
    ]
    lines += ["", *(f"PROBLEM: {p}" for p in problems)] if problems else []
    return "\n".join(lines) + "\n"


def _load(values: Any) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
