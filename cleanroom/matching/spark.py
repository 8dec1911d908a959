"""The Spark matching engine: every prefix range of a question's datasets joined in a task.

The server is the Spark driver. A report is one Spark job (in a job group of its own,
cancelled with its call): a task per group of prefix ranges reads the ranges' Parquet
files (`cleanroom.matching.ranges`), runs the in-memory engine's merge kernel
(`match_sorted`) on them inside the executor, and returns only counts, or the rows
matched where a row's digests of several types fall in different ranges. The driver adds
the counts and ORs the rows; no digest leaves an executor.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cleanroom.errors import ConfigError, UnavailableError
from cleanroom.matching.engine import BoolArray, DatasetTable, current_cancellation
from cleanroom.matching.memory import ArrowMatcher
from cleanroom.matching.question import ExactOverlap, OverlapQuestion
from cleanroom.matching.ranges import (
    CELL,
    OUTPUT_DDL,
    SEGMENTS,
    RangeLocation,
    RangeManifest,
    RangePlan,
    copy_key,
    range_task,
    segment_field,
)
from cleanroom.names import DatasetName

log = logging.getLogger(__name__)

# PySpark warns about any pandas it has not been tested with; this engine exchanges Arrow
# only, never pandas.
_PANDAS_WARNING = "PySpark does not yet fully support pandas"
_LOCAL_MASTER = re.compile(r"local(\[(\*|[1-9][0-9]*)(,[1-9][0-9]*)?\])?")
_CONNECT_SECONDS = 5.0
TASKS_PER_CORE = 4


@contextmanager
def _quiet_pandas_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PANDAS_WARNING, category=FutureWarning)
        yield


def check_java() -> str:
    """The Java runtime Spark will start, or a ConfigError saying how to install one."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise ConfigError(
            "server.engine.kind",
            'kind = "spark" needs a Java 17 (or later) runtime and none was found'
            + (f" at JAVA_HOME={home}" if home else " on PATH")
            + ": install one (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME.",
        )
    return java


def check_master(master: str) -> None:
    """Checks that the master URL is one Spark knows and that its address answers.

    Raises:
        ConfigError: The URL is malformed, or no address of it accepts a connection.
    """
    key = "server.engine.master"
    if master.startswith("local"):
        if not _LOCAL_MASTER.fullmatch(master):
            raise ConfigError(key, f"{master!r} is not local, local[N], local[*] or local[N,F]")
        return
    if master == "yarn":
        if not (os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")):
            raise ConfigError(key, "master yarn needs HADOOP_CONF_DIR or YARN_CONF_DIR set")
        return
    if master.startswith("spark://"):
        addresses = [_host_port(a, key, master) for a in master.removeprefix("spark://").split(",")]
    elif master.startswith("k8s://"):
        api = urlsplit(master.removeprefix("k8s://"))
        if not api.hostname:
            raise ConfigError(key, f"{master!r} is not k8s://https://host:port")
        addresses = [(api.hostname, api.port or (443 if api.scheme == "https" else 80))]
    else:
        raise ConfigError(
            key, f"{master!r} is not a Spark master URL: use local[N], spark://host:port,"
            " k8s://https://host:port or yarn"
        )  # fmt: skip
    problems = []
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=_CONNECT_SECONDS):
                return
        except OSError as error:
            problems.append(f"{host}:{port}: {error.strerror or error}")
    raise ConfigError(key, f"the Spark master {master} is unreachable ({'; '.join(problems)})")


def _host_port(address: str, key: str, master: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(key, f"{master!r} is not spark://host:port[,host:port...]")
    return host, int(port)


def start_session(
    master: str, settings: Mapping[str, str], *, probe_seconds: float = 60.0
) -> tuple[Any, bool]:
    """A Spark session on `master` with `settings`, and whether it was started here.

    The session already active in this process is used if it has the same master (tests
    share one). A probe job must finish within `probe_seconds`: a cluster that accepts the
    driver but gives it no executor would otherwise make every report wait.
    """
    check_java()
    check_master(master)
    # PySpark starts Python workers with $PYSPARK_PYTHON (default: python3 on PATH); on a
    # local master they must be this interpreter, with the server's packages.
    python = settings.get("spark.pyspark.python", sys.executable)
    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", python)
    from pyspark.sql import SparkSession  # noqa: PLC0415 - an optional extra, seconds to load

    with _quiet_pandas_warning():
        active = SparkSession.getActiveSession()
        if active is not None and active.sparkContext.master == master:
            return active, False
        builder = SparkSession.builder.master(master).appName("cleanroom")
        defaults = {
            "spark.ui.showConsoleProgress": "false",
            "spark.pyspark.python": python,
        }
        for name, value in {**defaults, **settings}.items():
            builder = builder.config(name, value)
        session = builder.getOrCreate()
    _probe(session, master, probe_seconds)
    return session, True


def _probe(session: Any, master: str, seconds: float) -> None:
    context = session.sparkContext
    group = f"cleanroom-probe-{uuid.uuid4().hex[:8]}"
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        context.setJobGroup(group, "start-up probe", interruptOnCancel=True)
        try:
            session.range(1, numPartitions=1).count()
        except Exception as error:  # reported below, on the caller's thread
            failure.append(error)
        finally:
            done.set()

    threading.Thread(target=run, name="spark-probe", daemon=True).start()
    if not done.wait(seconds):
        context.cancelJobGroup(group)
        session.stop()
        raise ConfigError(
            "server.engine.master",
            f"no executor of {master} ran a probe task within {seconds:g} s: check that the"
            " cluster has free executors for this application",
        )
    if failure:
        session.stop()
        raise ConfigError(
            "server.engine.master", f"a probe job on {master} failed: {str(failure[0])[:300]}"
        )


class SparkMatcher:
    """Matches on Spark: a job per question, a task per group of prefix ranges.

    Args:
        session: The Spark session (the server is its driver).
        location: Where the datasets' range copies are (`RangeLocation.parse`).
        owns_session: Whether `close` stops the session.
        tasks: Tasks per job at most; default: 4 per core of the cluster.
        driver_rows: Questions over fewer rows than this, all datasets together, are
            matched on the driver by the in-memory engine: a Spark job's fixed cost (0.2
            to 1 s of scheduling) is more than their whole match.
    """

    def __init__(
        self,
        session: Any,
        location: str,
        *,
        owns_session: bool = False,
        tasks: int | None = None,
        driver_rows: int = 0,
    ) -> None:
        self.session = session
        self.uri = location
        self.location = RangeLocation.parse(location)
        self.owns_session = owns_session
        self.tasks = tasks or TASKS_PER_CORE * int(session.sparkContext.defaultParallelism)
        self.driver_rows = driver_rows
        self._driver = ArrowMatcher()

    def close(self) -> None:
        """Stops the Spark session if this matcher started it."""
        if self.owns_session:
            self.session.stop()

    def matches(self, rows_of: DatasetTable, against: DatasetTable) -> BoolArray:
        """For each row of `rows_of`, whether some row of `against` shares a digest of a type."""
        if rows_of.row_count + against.row_count < self.driver_rows:
            return self._driver.matches(rows_of, against)
        datasets = [rows_of, against]
        manifests = [self._manifest(d) for d in datasets]
        plan = self._plan(datasets, manifests, [(0, 1)], segment=None, cells=False)
        flags = np.zeros(rows_of.row_count, dtype=np.bool_)
        if plan.shared:
            result = self._run(plan, f"difference check of {rows_of.name} against {against.name}")
            for rows in result.column("rows").to_pylist():
                if rows is not None:
                    flags[np.frombuffer(rows, dtype="<i8")] = True
        return flags

    def overlap(
        self, question: OverlapQuestion, tables: Mapping[DatasetName, DatasetTable]
    ) -> ExactOverlap:
        """The exact counts of `question` (see `ExactOverlap`)."""
        names = question.datasets
        datasets = [tables[d] for d in names]
        if sum(d.row_count for d in datasets) < self.driver_rows:
            return self._driver.overlap(question, tables)
        manifests = [self._manifest(d) for d in datasets]
        pairs = [(x, y) for x in range(len(names)) for y in range(len(names)) if x != y]
        segment = question.segment_column
        plan = self._plan(datasets, manifests, pairs, segment=segment, cells=True)
        result = self._run(plan, f"overlap report of {question.base}").to_pydict()
        counts = dict.fromkeys(pairs, 0)
        flags = {
            (x, y): np.zeros(datasets[x].row_count, np.bool_) for x, y, out in plan.pairs if out
        }
        cell_counts: dict[tuple[int, int], int] = {}
        for x, y, code, mask, count, rows in zip(*result.values(), strict=True):
            if y == CELL:
                cell_counts[code, mask] = cell_counts.get((code, mask), 0) + count
            elif rows is not None and (x, y) in flags:
                flags[x, y][np.frombuffer(rows, dtype="<i8")] = True
            else:
                counts[x, y] += count
        for pair, matched in flags.items():
            counts[pair] = int(np.count_nonzero(matched))
        base = manifests[0]
        labels, totals = _segment_labels(base, segment)
        patterns = 1 << len(question.others)
        if plan.cell_type is None:
            pattern = np.zeros(datasets[0].row_count, dtype=np.intp)
            for bit in range(len(question.others)):
                if (0, bit + 1) in flags:
                    pattern |= flags[0, bit + 1].astype(np.intp) << bit
            codes = self._segment_codes(datasets[0], segment, len(labels))
            table = np.bincount(codes * patterns + pattern, minlength=len(labels) * patterns)
            cell_counts = {
                (int(c // patterns), int(c % patterns)): int(table[c])
                for c in np.flatnonzero(table)
                if c % patterns
            }
        cells: dict[tuple[str | None, int], int] = {}
        order = sorted(range(len(labels)), key=lambda i: (labels[i] is not None, labels[i] or ""))
        for code in order:
            some = 0  # the code's rows that match some other dataset
            for mask in range(1, patterns):
                cells[labels[code], mask] = cell_counts.get((code, mask), 0)
                some += cells[labels[code], mask]
            cells[labels[code], 0] = totals[code] - some
        cells = {(labels[c], m): cells[labels[c], m] for c in order for m in range(patterns)}
        return ExactOverlap(
            question=question,
            sizes={d: t.row_count for d, t in zip(names, datasets, strict=True)},
            cells=cells,
            pairwise={(names[x], names[y]): counts[x, y] for x, y in pairs},
        )

    def _manifest(self, dataset: DatasetTable) -> RangeManifest:
        manifest = self.location.manifest(copy_key(dataset.file_name))
        if manifest is None:
            raise UnavailableError(
                "DATASET_COPY_MISSING",
                f"The matching engine's copy of {dataset.name} is missing. The operator"
                " must restore the range location (the server writes missing copies at"
                " start); try again later.",
                dataset=str(dataset.name),
            )
        return manifest

    def _plan(
        self,
        datasets: Sequence[DatasetTable],
        manifests: Sequence[RangeManifest],
        pairs: Sequence[tuple[int, int]],
        *,
        segment: str | None,
        cells: bool,
    ) -> RangePlan:
        shared = {}
        for x in range(len(datasets)):
            for y in range(x + 1, len(datasets)):
                types = tuple(
                    t for t in datasets[x].identifier_types if t in datasets[y].identifier_types
                )
                if types and ((x, y) in pairs or (y, x) in pairs):
                    shared[x, y] = types
        base_types = {t for (x, _), types in shared.items() if x == 0 for t in types}
        cell_type = next(iter(base_types)) if cells and len(base_types) == 1 else None
        planned = tuple(
            (x, y, len(shared[min(x, y), max(x, y)]) > 1 or (x == 0 and cell_type is None))
            for x, y in pairs
            if (min(x, y), max(x, y)) in shared
        )
        labels = manifests[0].segment_labels.get(segment or "", [])
        return RangePlan(
            uri=self.uri,
            keys=tuple(copy_key(d.file_name) for d in datasets),
            ranges=tuple(m.ranges for m in manifests),
            present=tuple(m.present for m in manifests),
            pairs=planned,
            shared=shared,
            cell_type=cell_type,
            segment=segment,
            segment_codes=len(labels) + 1 if segment else 1,
        )

    def _segment_codes(
        self, base: DatasetTable, segment: str | None, labels: int
    ) -> np.ndarray[Any, np.dtype[np.intp]]:
        if segment is None:
            return np.zeros(base.row_count, dtype=np.intp)
        path = self.location.path(copy_key(base.file_name), SEGMENTS)
        column = pq.read_table(
            path, columns=[segment_field(segment)], filesystem=self.location.filesystem
        ).column(0)
        codes = column.to_numpy().astype(np.intp)
        codes[codes < 0] = labels - 1
        return codes

    def _run(self, plan: RangePlan, description: str) -> pa.Table:
        """Runs the plan's range tasks as one job of a job group of its own."""
        context = self.session.sparkContext
        group = f"cleanroom-{uuid.uuid4().hex[:12]}"
        partitions = max(1, min(plan.tasks, self.tasks))
        started = time.perf_counter()
        context.setJobGroup(group, description, interruptOnCancel=True)
        cancellation = current_cancellation()
        try:
            with cancellation.stopping_with(lambda: context.cancelJobGroup(group)):
                frame = self.session.range(0, plan.tasks, 1, numPartitions=partitions)
                with _quiet_pandas_warning():
                    result: pa.Table = frame.mapInArrow(
                        functools.partial(run_range_tasks, plan), OUTPUT_DDL
                    ).toArrow()
        except Exception as error:
            _log_job(context, group, description, started, failed=True)
            log.error("spark job %s (%s) failed: %s", group, description, str(error)[:2000])
            if cancellation.cancelled:
                raise UnavailableError(
                    "REPORT_CANCELLED",
                    "The call was cancelled, so its Spark job was stopped; nothing was spent.",
                ) from None
            raise UnavailableError(
                "MATCHING_FAILED",
                "The matching engine's Spark job failed after Spark's retries, so the"
                " report was not made and nothing was spent. Try again; if it keeps"
                " failing, the server's log has the job's error for the operator.",
                job_group=group,
            ) from None
        finally:
            for name in (
                "spark.jobGroup.id",
                "spark.job.description",
                "spark.job.interruptOnCancel",
            ):
                context.setLocalProperty(name, None)
        _log_job(context, group, description, started, failed=False)
        return result


def run_range_tasks(plan: RangePlan, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The body of a Spark task: runs `range_task` for each range number it is given."""
    for batch in batches:
        for task in batch.column(0).to_pylist():
            yield range_task(plan, int(cast("int", task)))


def _segment_labels(
    manifest: RangeManifest, segment: str | None
) -> tuple[list[str | None], list[int]]:
    """The base's labels by code (None last, for rows without a value) and rows per code."""
    if segment is None:
        return [None], [manifest.row_count]
    labels: list[str | None] = list(manifest.segment_labels[segment])
    totals = list(manifest.segment_rows[segment])
    if totals[-1] == 0:
        return labels, totals[:-1]
    return [*labels, None], totals


def _log_job(context: Any, group: str, description: str, started: float, *, failed: bool) -> None:
    """Logs a job's stages: tasks, failed task attempts, wall and executor time."""
    tracker = context.statusTracker()
    store = context._jsc.sc().statusStore()  # the UI's store, kept even without the UI
    stages = []
    for job in sorted(tracker.getJobIdsForGroup(group)):
        info = tracker.getJobInfo(job)
        for stage in info.stageIds if info else []:
            try:
                data = store.lastStageAttempt(stage)
            except Exception:  # a stage not yet in the store: nothing to say of it
                log.debug("no status of stage %d of job %d", stage, job)
                continue
            first, last = data.submissionTime(), data.completionTime()
            wall = (
                (last.get().getTime() - first.get().getTime()) / 1000
                if first.isDefined() and last.isDefined()
                else float("nan")
            )
            stages.append(
                f"stage {stage} attempt {data.attemptId()}: {data.numTasks()} tasks,"
                f" {data.numFailedTasks()} failed, {wall:.2f} s wall,"
                f" {data.executorRunTime() / 1000:.2f} s in executors"
            )
    log.log(
        logging.WARNING if failed else logging.INFO,
        "spark job %s (%s) %s in %.2f s: %s",
        group,
        description,
        "failed" if failed else "done",
        time.perf_counter() - started,
        "; ".join(stages) or "no stage ran",
    )
