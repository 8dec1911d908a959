"""Load benchmark: concurrent brands and auditors on the real server, latency per operation.

Starts the server as an operator runs it (`python -m cleanroom serve`, mutual TLS on a free
loopback port) in a subprocess, so that its CPU is its own, and runs client threads with a
channel each for a fixed time: brands upload small digest files and ask for overlap
reports of their datasets against other brands', an auditor reads the query log (a page of
events, the latest checkpoint, an inclusion proof). Prints a Markdown table of latency
percentiles and throughput per operation, and the count of unexpected errors; writes the
same to `bench-results/load.md` and `load.json`. Refusals by the server's concurrency limit
(RESOURCE_EXHAUSTED, `server.max_workers`) are expected under load: they are counted as
"busy", and the client backs off a few milliseconds. At the end, the auditor verifies the
whole query log.

Never fails on a time: the exit status is 1 only when a call failed unexpectedly or the
log did not verify.

    python -m bench.load [--seconds 60] [--clients 20] [--quick] [--out bench-results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from cleanroom.demo.deployment import config_toml, free_loopback_port, loopback_connection
from cleanroom.proofs.signed_note import NoteSigner, NoteVerifier
from cleanroom.tls.pki import DemoPki, create_demo_pki, write_private_file
from cleanroom.v1 import audit_service_pb2, audit_service_pb2_grpc
from partners.audit.verify import AuditorState, verify_log
from partners.client import CleanRoomClient, Connection
from partners.errors import ServerError
from partners.preparation import pipeline as preparation
from partners.preparation.digest import key_check_value

COLLABORATION = "load"
PARENT = f"collaborations/{COLLABORATION}"
SECRET = bytes(range(32))
BRANDS = ("acme", "brightmart", "corvid", "dunmore", "elkhorn")
AUDITOR = "ledger"
AUDITOR_EVERY = 5  # one client in five reads the log; the others are brands
ROWS = 1_000  # per uploaded dataset
SHARED = 600  # of them drawn from a pool of people every brand may know
POOL = 20_000
FILES_PER_CLIENT = 3  # prepared before the run, uploaded in turn under new ids
MAX_OPERATIONS = 1_000_000  # per client: the run ends on time long before
BACKOFF_SECONDS = (0.005, 0.02)  # after a busy refusal, a random pause in this range
START_SECONDS = 60.0
STOP_SECONDS = 30.0
CALL_SECONDS = 120.0
RULE_REASONS = frozenset({"PRIVACY_BUDGET_EXHAUSTED", "DAILY_REPORT_LIMIT", "STORAGE_FULL"})
OPERATIONS = ("upload", "report", "audit_page", "audit_checkpoint", "audit_proof")
SECONDS, CLIENTS = 60.0, 20
QUICK_SECONDS, QUICK_CLIENTS = 10.0, 8


@dataclass
class Tally:
    """What one kind of operation did: latencies of its successes, busy and failed calls."""

    seconds: list[float] = field(default_factory=list)
    busy: int = 0
    failed: list[str] = field(default_factory=list)

    def merge(self, other: Tally) -> None:
        """Adds another client's tally of the same operation to this one."""
        self.seconds += other.seconds
        self.busy += other.busy
        self.failed += other.failed


@dataclass
class Registry:
    """The datasets committed so far, per brand, shared by the client threads."""

    datasets: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, brand: str, name: str) -> None:
        """Records a committed dataset of `brand`."""
        with self.lock:
            self.datasets.setdefault(brand, []).append(name)

    def pick(self, rng: np.random.Generator, brand: str) -> str:
        """A random committed dataset of `brand`."""
        with self.lock:
            names = self.datasets[brand]
            return names[int(rng.integers(len(names)))]


class LoadServer:
    """`python -m cleanroom serve` in a subprocess, with its certificates and configuration."""

    def __init__(self, root: Path, *, max_workers: int) -> None:
        """Writes certificates, a signing key and a configuration under `root`.

        Args:
            root: An empty directory for everything the server needs and writes.
            max_workers: The server's `max_workers`, which also bounds concurrent calls.
        """
        self.root = root
        self.pki: DemoPki = create_demo_pki(root / "certs", partners=[*BRANDS, AUDITOR])
        self.signer = NoteSigner.generate("cleanroom.load")
        write_private_file(root / "certs" / "log-signing.key", self.signer.key_text() + "\n")
        self.port = free_loopback_port()
        self.config = root / "cleanroom.toml"
        self.config.write_text(
            config_toml(
                root=root,
                pki=self.pki,
                port=self.port,
                collaboration=COLLABORATION,
                key_check_value=key_check_value(SECRET, COLLABORATION),
                members={**{b: ("uploader", "analyst") for b in BRANDS}, AUDITOR: ("auditor",)},
                identifier_types=["email"],
                policy={
                    "minimum_threshold": 50,
                    "minimum_dataset_size": 500,
                    "epsilon_budget": 1000.0,
                    "epsilon_per_report": 0.001,
                },
                server={"max_workers": max_workers},
                ops_listen="127.0.0.1:0",  # any free port: benchmarks may run beside a server
            )
        )
        self.log = root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Starts the server and waits until it answers health checks."""
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cleanroom", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={**os.environ, "COLUMNS": "200"},
            )
        deadline = time.monotonic() + START_SECONDS
        with self.connection(AUDITOR).channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start in {START_SECONDS:g} s")
                time.sleep(0.1)

    def connection(self, partner: str) -> Connection:
        """How `partner` reaches the server."""
        return loopback_connection(self.pki, partner, self.port)

    def stop(self) -> None:
        """Stops the server gracefully (SIGTERM), or kills it after STOP_SECONDS."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_SECONDS)


@dataclass
class Client:
    """One client thread: a brand that uploads and asks for reports, or the auditor."""

    index: int
    partner: str
    server: LoadServer
    registry: Registry
    files: list[Path]
    deadline: float
    tallies: dict[str, Tally] = field(default_factory=lambda: {op: Tally() for op in OPERATIONS})
    crash: str | None = None

    def run(self) -> None:
        """Runs operations until the deadline; never raises (a crash is recorded)."""
        rng = np.random.default_rng(100 + self.index)
        connection = self.server.connection(self.partner)
        try:
            with (
                CleanRoomClient(connection, timeout=CALL_SECONDS) as client,
                connection.channel() as channel,
            ):
                audit = audit_service_pb2_grpc.AuditServiceStub(channel)
                for number in range(MAX_OPERATIONS):
                    if time.monotonic() >= self.deadline:
                        return
                    if self.partner == AUDITOR:
                        self._read_log(audit, rng)
                    elif rng.random() < 0.5:
                        self._upload(client, rng, number)
                    else:
                        self._report(client, rng)
        except Exception as error:  # reported in the results, not lost with the thread
            self.crash = f"{type(error).__name__}: {error}"

    def _upload(self, client: CleanRoomClient, rng: np.random.Generator, number: int) -> None:
        dataset_id = f"{self.partner}-c{self.index}-{number}"
        path = self.files[number % len(self.files)]
        dataset = self._time("upload", rng, lambda: client.upload(path, dataset_id=dataset_id))
        if dataset is not None:
            self.registry.add(self.partner, dataset.name)

    def _report(self, client: CleanRoomClient, rng: np.random.Generator) -> None:
        base = self.registry.pick(rng, self.partner)
        brands = [b for b in BRANDS if b != self.partner]
        chosen = rng.choice(len(brands), int(rng.integers(1, 4)), replace=False)
        others = [self.registry.pick(rng, brands[int(i)]) for i in chosen]
        self._time("report", rng, lambda: client.create_report(PARENT, base=base, others=others))

    def _read_log(
        self, audit: audit_service_pb2_grpc.AuditServiceStub, rng: np.random.Generator
    ) -> None:
        checkpoint = self._time(
            "audit_checkpoint",
            rng,
            lambda: audit.GetAuditCheckpoint(
                audit_service_pb2.GetAuditCheckpointRequest(parent=PARENT), timeout=CALL_SECONDS
            ),
        )
        size = checkpoint.tree_size if checkpoint is not None else 0
        if size:
            start = int(rng.integers(size))
            page = audit_service_pb2.ListAuditEventsRequest(
                parent=PARENT, page_size=100, start_index=start
            )
            self._time("audit_page", rng, lambda: audit.ListAuditEvents(page, timeout=CALL_SECONDS))
            proof = audit_service_pb2.GetAuditInclusionProofRequest(
                parent=PARENT, index=start, tree_size=size
            )
            self._time(
                "audit_proof",
                rng,
                lambda: audit.GetAuditInclusionProof(proof, timeout=CALL_SECONDS),
            )

    def _time(self, operation: str, rng: np.random.Generator, call: Callable[[], Any]) -> Any:
        """Runs one call; records its latency, or that it was busy or failed."""
        tally = self.tallies[operation]
        started = time.perf_counter()
        try:
            result = call()
        except (ServerError, grpc.RpcError) as error:
            code, reason, message = _describe(error)
            if code == "RESOURCE_EXHAUSTED" and reason not in RULE_REASONS:
                tally.busy += 1
                time.sleep(float(rng.uniform(*BACKOFF_SECONDS)))  # a busy server: back off
            else:
                tally.failed.append(f"{code} {reason}: {message}"[:300])
            return None
        tally.seconds.append(time.perf_counter() - started)
        return result


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the load benchmark and prints its table.

    Args:
        argv: The command line arguments (`sys.argv[1:]` when None).

    Returns:
        1 if any call failed unexpectedly or the query log did not verify, else 0.
    """
    args = _arguments(list(sys.argv[1:] if argv is None else argv))
    seconds: float = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    clients: int = args.clients or (QUICK_CLIENTS if args.quick else CLIENTS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="load-", dir=out)).resolve()
    try:
        server = LoadServer(work / "server", max_workers=args.max_workers)
        print(f"load: {clients} clients for {seconds:g} s on {_machine()['summary']}", flush=True)
        files = _prepare_files(work / "files", clients, np.random.default_rng(args.seed))
        server.start()
        try:
            results = _run(server, clients, seconds, files, args.seed)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["settings"] = {"seconds": seconds, "clients": clients, "max_workers": args.max_workers}
    results["machine"] = _machine()
    report = render(results)
    (out / "load.md").write_text(report)
    (out / "load.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report)
    print(f"written to {out / 'load.md'} and {out / 'load.json'}")
    return 1 if results["unexpected_errors"] or not results["log"]["verified"] else 0


def _run(
    server: LoadServer, clients: int, seconds: float, files: list[list[Path]], seed: int
) -> dict[str, Any]:
    """Seeds each brand with a dataset, runs the clients, verifies the log; returns figures."""
    registry = Registry()
    for brand in BRANDS:
        with CleanRoomClient(server.connection(brand), timeout=CALL_SECONDS) as client:
            registry.add(brand, client.upload(files[0][0], dataset_id=f"{brand}-base").name)
    partners = [
        AUDITOR if i % AUDITOR_EVERY == AUDITOR_EVERY - 1 else BRANDS[i % len(BRANDS)]
        for i in range(clients)
    ]
    started = time.monotonic()
    workers = [
        Client(i, partner, server, registry, files[i], started + seconds)
        for i, partner in enumerate(partners)
    ]
    threads = [threading.Thread(target=w.run, name=f"client-{w.index}") for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 2 * CALL_SECONDS)
    elapsed = time.monotonic() - started
    tallies = {op: Tally() for op in OPERATIONS}
    for worker in workers:
        for op, tally in worker.tallies.items():
            tallies[op].merge(tally)
    crashes = [w.crash for w in workers if w.crash] + [
        f"client {t.name} still running" for t in threads if t.is_alive()
    ]
    failed = [message for tally in tallies.values() for message in tally.failed] + crashes
    with CleanRoomClient(server.connection(AUDITOR), timeout=CALL_SECONDS) as auditor:
        state = AuditorState(server.root / "auditor")
        verdict = verify_log(auditor, PARENT, NoteVerifier(server.signer.verifier_key), state)
    return {
        "seed": seed,
        "elapsed_seconds": elapsed,
        "operations": {op: _figures(tallies[op], elapsed) for op in OPERATIONS},
        "unexpected_errors": len(failed),
        "unexpected_examples": sorted(set(failed))[:20],
        "log": {
            "verified": verdict.ok,
            "events_checked": verdict.events_checked,
            "problem": verdict.problem,
        },
    }


def _figures(tally: Tally, elapsed: float) -> dict[str, Any]:
    """Count, busy, failed, latency percentiles (ms) and throughput of one operation."""
    latencies: npt.NDArray[np.float64] = np.array(tally.seconds, dtype=np.float64) * 1000
    percentiles = (
        {f"p{p}_ms": float(np.percentile(latencies, p)) for p in (50, 90, 99)}
        if len(latencies)
        else {"p50_ms": None, "p90_ms": None, "p99_ms": None}
    )
    return {
        "ok": len(latencies),
        "busy": tally.busy,
        "failed": len(tally.failed),
        **percentiles,
        "max_ms": float(latencies.max()) if len(latencies) else None,
        "per_second": len(latencies) / elapsed if elapsed else 0.0,
    }


def render(results: dict[str, Any]) -> str:
    """The Markdown report: settings, the table of operations, errors and the log check."""
    settings, log = results["settings"], results["log"]
    lines = [
        "# Load benchmark",
        "",
        f"{settings['clients']} clients for {results['elapsed_seconds']:.1f} s against one server"
        f" (`max_workers` {settings['max_workers']}) on {results['machine']['summary']},"
        f" {results['machine']['date']}.",
        "",
        "| operation | ok | busy | failed | p50 ms | p90 ms | p99 ms | max ms | ok per s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for op, f in results["operations"].items():
        cells = [_ms(f["p50_ms"]), _ms(f["p90_ms"]), _ms(f["p99_ms"]), _ms(f["max_ms"])]
        lines.append(
            f"| {op} | {f['ok']:,} | {f['busy']:,} | {f['failed']:,} | {' | '.join(cells)}"
            f" | {f['per_second']:.1f} |"
        )
    total = sum(f["ok"] for f in results["operations"].values())
    busy = sum(f["busy"] for f in results["operations"].values())
    lines += [
        "",
        f"{total:,} calls succeeded, {busy:,} were refused as busy by the concurrency limit"
        f" (expected under load); unexpected errors: **{results['unexpected_errors']}**.",
    ]
    lines += [f"- {example}" for example in results["unexpected_examples"]]
    verdict = "verified" if log["verified"] else f"FAILED: {log['problem']}"
    lines += ["", f"Query log: {log['events_checked']:,} events, {verdict}.", ""]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _describe(error: ServerError | grpc.RpcError) -> tuple[str, str, str]:
    """The code, ErrorInfo reason (the code if none) and message of a failed call."""
    if isinstance(error, ServerError):
        return error.code, error.reason, error.message
    call: Any = error  # every RpcError of a call is also a grpc.Call
    code: str = call.code().name
    reason = code
    try:
        status = rpc_status.from_call(call)
    except ValueError:
        status = None
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = info.reason
    return code, reason, str(call.details() or "")


def _prepare_files(directory: Path, clients: int, rng: np.random.Generator) -> list[list[Path]]:
    """FILES_PER_CLIENT digest files per client, as `cleanroom-partner prepare` writes them.

    Each holds ROWS rows: SHARED people of a common pool (so that reports find overlaps)
    and people of no other file.
    """
    directory.mkdir(parents=True)
    pool = rng.integers(0, 256, size=(POOL, 32), dtype=np.uint8)
    files = []
    for client in range(clients):
        paths = []
        for number in range(FILES_PER_CLIENT):
            shared = pool[rng.choice(POOL, SHARED, replace=False)]
            own = rng.integers(0, 256, size=(ROWS - SHARED, 32), dtype=np.uint8)
            path = directory / f"c{client}-{number}.parquet"
            _write_digests(path, np.concatenate([shared, own]))
            paths.append(path)
        files.append(paths)
    return files


def _write_digests(path: Path, digests: npt.NDArray[np.uint8]) -> None:
    """A one-type digests file with the metadata `CleanRoomClient.upload` reads."""
    column = pa.array([bytes(row) for row in digests], pa.binary(32))
    metadata = {
        preparation.META_FORMAT: preparation.DIGEST_FORMAT.encode(),
        preparation.META_COLLABORATION: COLLABORATION.encode(),
        preparation.META_KEY_CHECK_VALUE: key_check_value(SECRET, COLLABORATION).encode(),
        preparation.META_IDENTIFIER_TYPES: json.dumps(["email"]).encode(),
        preparation.META_SEGMENT_COLUMNS: json.dumps([]).encode(),
    }
    table = pa.table({"email": column}).replace_schema_metadata(metadata)
    pq.write_table(table, path)


def _machine() -> dict[str, Any]:
    cores = os.cpu_count() or 1
    return {
        "summary": f"{cores} cores, Python {platform.python_version()}",
        "cores": cores,
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, help=f"how long to run (default {SECONDS:g})")
    parser.add_argument("--clients", type=int, help=f"client threads (default {CLIENTS})")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SECONDS:g} s with {QUICK_CLIENTS} clients"
    )
    parser.add_argument("--max-workers", type=int, default=8, help="the server's max_workers")
    parser.add_argument("--out", default="bench-results", help="where the results go")
    parser.add_argument("--seed", type=int, default=7)
    args, _ = parser.parse_known_args(argv)  # `python -m bench` passes every module's options
    return args


if __name__ == "__main__":
    sys.exit(main())
