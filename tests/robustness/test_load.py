"""A short load run in the suite: concurrent brands and auditors, every call in the query log.

Twelve client threads, each with its own mutual TLS channel, mix uploads of small digest
files, overlap reports (exact counts: k = 10, minimum size 10) and reads of the query log,
for a fixed number of operations each, stopping early at a deadline (never asserted on:
it only bounds the run). The only refusals allowed are the server's concurrency limit
(`maximum_concurrent_rpcs`, service/server.py); they are counted. Every call the server
handled appears exactly once in the query logs (a call refused by the limit at most once),
and the log still verifies.

The limit itself is checked deterministically: with every worker held by a stalled upload,
one more caller is refused at once, told why, and logged like any other refused call.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cleanroom.audit.log import AuditFilter
from cleanroom.names import SERVER_LOG
from cleanroom.proofs.signed_note import NoteVerifier
from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    partner_service_pb2,
    partner_service_pb2_grpc,
)
from partners.audit.verify import AuditorState, verify_log
from partners.client import CleanRoomClient
from partners.errors import ServerError
from tests.support import (
    BRANDS,
    COLLABORATION,
    KCV,
    LOG_SIGNER,
    RunningServer,
    dataset_name,
    digest_array,
    running_server,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
THREADS = 12
OPERATIONS_PER_THREAD = 20
RUN_SECONDS = 8.0  # a bound on the run, never an assertion
POOL = 400  # people the brands' datasets are drawn from, so that reports find overlaps
ROWS = 60
FRESH = 20  # digests of each upload that no other dataset has: no two are near-duplicates
# Refusals that a rule of the clean room makes, not the concurrency limit.
RULE_REASONS = {"PRIVACY_BUDGET_EXHAUSTED", "DAILY_REPORT_LIMIT", "STORAGE_FULL"}


@dataclass(frozen=True)
class Call:
    """One RPC as the client saw it."""

    method: str
    caller: str
    code: str
    reason: str
    message: str
    resource: str = ""

    @property
    def refused_by_the_limit(self) -> bool:
        return self.code == "RESOURCE_EXHAUSTED" and self.reason not in RULE_REASONS

    def logged_as(self) -> tuple[str, str, str, str]:
        """How the query log shows it: a committed upload by its dataset's name."""
        return (self.method, self.caller, self.code, self.resource if self.code == "OK" else "")


@dataclass
class Registry:
    """The datasets committed so far, per brand, shared by the threads."""

    datasets: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, brand: str, name: str) -> None:
        with self.lock:
            self.datasets.setdefault(brand, []).append(name)

    def pick(self, rng: np.random.Generator, brand: str) -> str:
        with self.lock:
            names = self.datasets[brand]
            return names[int(rng.integers(len(names)))]


def digest_file(path: Path, pool: np.ndarray[Any, Any], rng: np.random.Generator) -> Path:
    """ROWS rows: some people of the shared pool, and FRESH digests of no one else."""
    chosen = pool[rng.choice(len(pool), ROWS - FRESH, replace=False)]
    fresh = rng.integers(0, 256, size=(FRESH, 32), dtype=np.uint8)
    return write_digest_file(path, {"email": digest_array(np.concatenate([chosen, fresh]))})


def outcome_of(method: str, caller: str, resource: str, run: Callable[[], object]) -> Call:
    """Runs one client call and describes how it ended."""
    try:
        run()
    except ServerError as error:
        return Call(method, caller, error.code, error.reason, error.message, resource)
    except grpc.RpcError as error:
        rpc: Any = error
        reason = rpc.code().name
        status = rpc_status.from_call(rpc)
        for detail in status.details if status else []:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason = info.reason
        return Call(method, caller, rpc.code().name, reason, rpc.details() or "", resource)
    return Call(method, caller, "OK", "", "", resource)


@dataclass
class Worker:
    """One client thread: a brand that uploads and asks for reports, or the auditor."""

    index: int
    partner: str
    server: RunningServer
    registry: Registry
    pool: np.ndarray[Any, Any]
    work_dir: Path
    deadline: float
    calls: list[Call] = field(default_factory=list)
    crash: BaseException | None = None

    def run(self) -> None:
        connection = self.server.connection(self.partner)
        try:
            with CleanRoomClient(connection, timeout=60) as client, connection.channel() as channel:
                rng = np.random.default_rng(1000 + self.index)
                for number in range(OPERATIONS_PER_THREAD):
                    if time.monotonic() > self.deadline:
                        return
                    if self.partner == "ledger":
                        self.read_log(audit_service_pb2_grpc.AuditServiceStub(channel), rng)
                    elif rng.random() < 0.5:
                        self.upload(client, rng, number)
                    else:
                        self.report(client, rng)
        except BaseException as error:  # reported by the test, not lost in the thread
            self.crash = error

    def upload(self, client: CleanRoomClient, rng: np.random.Generator, number: int) -> None:
        dataset_id = f"{self.partner}-t{self.index}-{number}"
        path = digest_file(self.work_dir / f"{dataset_id}.parquet", self.pool, rng)
        name = dataset_name(dataset_id)
        call = outcome_of(
            "UploadDataset", self.caller, name, lambda: client.upload(path, dataset_id=dataset_id)
        )
        self.calls.append(call)
        if call.code == "OK":
            self.registry.add(self.partner, name)

    def report(self, client: CleanRoomClient, rng: np.random.Generator) -> None:
        base = self.registry.pick(rng, self.partner)
        others = [b for b in BRANDS if b != self.partner]
        chosen = rng.choice(len(others), int(rng.integers(1, 3)), replace=False)
        other_names = [self.registry.pick(rng, others[int(i)]) for i in chosen]
        self.calls.append(
            outcome_of(
                "CreateOverlapReport",
                self.caller,
                "",
                lambda: client.create_report(PARENT, base=base, others=other_names),
            )
        )

    def read_log(self, stub: Any, rng: np.random.Generator) -> None:
        """One page of the log, the latest checkpoint, an inclusion proof: one RPC each."""
        start = int(rng.integers(0, 50))
        listing = audit_service_pb2.ListAuditEventsRequest(
            parent=PARENT, page_size=50, start_index=start
        )
        self.calls.append(
            outcome_of(
                "ListAuditEvents",
                self.caller,
                "",
                lambda: stub.ListAuditEvents(listing, timeout=60),
            )
        )
        checkpoint: list[int] = []

        def get_checkpoint() -> None:
            response = stub.GetAuditCheckpoint(
                audit_service_pb2.GetAuditCheckpointRequest(parent=PARENT), timeout=60
            )
            checkpoint.append(response.tree_size)

        self.calls.append(outcome_of("GetAuditCheckpoint", self.caller, "", get_checkpoint))
        if checkpoint:
            size = checkpoint[0]
            proof = audit_service_pb2.GetAuditInclusionProofRequest(
                parent=PARENT, index=int(rng.integers(size)), tree_size=size
            )
            self.calls.append(
                outcome_of(
                    "GetAuditInclusionProof",
                    self.caller,
                    "",
                    lambda: stub.GetAuditInclusionProof(proof, timeout=60),
                )
            )

    @property
    def caller(self) -> str:
        return f"partners/{self.partner}"


def logged_calls(
    server: RunningServer, since: dict[str, int]
) -> Counter[tuple[str, str, str, str]]:
    """The events appended since `since` (log: size), as `Call.logged_as` describes calls."""
    assert server.interceptor.drain(30)
    found: Counter[tuple[str, str, str, str]] = Counter()
    for log, size in since.items():
        events = server.clean_room.audit_log.events(
            log, AuditFilter(start_index=size), after=-1, limit=1_000_000
        )
        for event in events:
            method = event.method.rsplit("/", 1)[-1]
            committed = method == "UploadDataset" and event.outcome.status_code == "OK"
            resource = event.resources[0] if committed else ""
            found[(method, event.caller, event.outcome.status_code, resource)] += 1
    return found


def log_sizes(server: RunningServer) -> dict[str, int]:
    """How many events each log holds (of calls that have ended)."""
    return {log: server.clean_room.audit_log.size(log) for log in (COLLABORATION, SERVER_LOG)}


@pytest.fixture
def loaded(pki: DemoPki, tmp_path: Path) -> Iterator[RunningServer]:
    """A server with the suite's policy: exact counts, k = 10, minimum size 10.

    Clients ask again and again over the same datasets: the exact-release quota (a
    privacy rule, tested in tests/privacy) is raised so that load, not the quota, is
    what this measures.
    """
    with running_server(pki, tmp_path / "data", exact_releases_per_dataset_version=10**6) as server:
        yield server


def test_a_mixed_load_has_no_unexpected_errors_and_every_call_is_logged_once(
    loaded: RunningServer, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    server = loaded
    pool = np.random.default_rng(7).integers(0, 256, size=(POOL, 32), dtype=np.uint8)
    registry = Registry()
    for brand in BRANDS:
        rng = np.random.default_rng(zlib.crc32(brand.encode()))
        path = digest_file(tmp_path / f"{brand}-base.parquet", pool, rng)
        registry.add(brand, server.client(brand).upload(path, dataset_id=f"{brand}-base").name)
    assert server.interceptor.drain(30)
    before = log_sizes(server)

    partners = [*BRANDS, "ledger"]
    deadline = time.monotonic() + RUN_SECONDS
    workers = [
        Worker(i, partners[i % len(partners)], server, registry, pool, tmp_path, deadline)
        for i in range(THREADS)
    ]
    threads = [threading.Thread(target=w.run, name=f"load-{w.index}") for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a client thread is still running"
    assert [w.crash for w in workers if w.crash] == []

    calls = [call for worker in workers for call in worker.calls]
    limited = [c for c in calls if c.refused_by_the_limit]
    unexpected = [c for c in calls if c.code != "OK" and not c.refused_by_the_limit]
    kinds = Counter(c.method for c in calls)
    record_property("calls", len(calls))
    record_property("refused_by_the_concurrency_limit", len(limited))
    print(f"{len(calls)} calls {dict(kinds)}; {len(limited)} refused by the concurrency limit")
    assert unexpected == []
    assert {"UploadDataset", "CreateOverlapReport", "ListAuditEvents"} <= set(kinds)

    # Every call the server handled is in the query logs exactly once. A call refused by the
    # limit never reached the servicers; it may be logged too, but at most once.
    handled = Counter(c.logged_as() for c in calls if not c.refused_by_the_limit)
    logged = logged_calls(server, before)
    assert handled - logged == Counter(), "calls missing from the query logs"
    extra = logged - handled
    assert extra - Counter(c.logged_as() for c in limited) == Counter(), "events of no call"

    uploaded = {c.resource for c in calls if c.method == "UploadDataset" and c.code == "OK"}
    listed = {d.name for d in server.client("operator").list_datasets(PARENT)}
    assert listed == uploaded | {dataset_name(f"{b}-base") for b in BRANDS}

    with CleanRoomClient(server.connection("ledger"), timeout=60) as auditor:
        verifier = NoteVerifier(LOG_SIGNER.verifier_key)
        verdict = verify_log(auditor, PARENT, verifier, AuditorState(tmp_path / "auditor"))
    assert verdict.ok, f"index {verdict.first_bad_index}: {verdict.problem}"
    assert verdict.events_checked >= sum(handled.values())


def test_a_caller_beyond_the_concurrency_limit_is_refused_at_once_told_why_and_logged(
    pki: DemoPki, tmp_path: Path
) -> None:
    release = threading.Event()

    def stalled() -> Iterator[partner_service_pb2.UploadDatasetRequest]:
        header = partner_service_pb2.DatasetUploadHeader(
            parent=PARENT, dataset_id="acme-held", identifier_types=["email"], key_check_value=KCV,
            row_count=10, checksum="0" * 64,
        )  # fmt: skip
        yield partner_service_pb2.UploadDatasetRequest(header=header)
        release.wait(60)  # holds a worker until the test lets go

    # One partner may fill every worker here: the server-wide limit is what is tested.
    whole = {"max_workers": 8, "max_calls_per_partner": 8, "max_uploads_per_partner": 8}
    with running_server(pki, tmp_path / "data", server=whole) as server:
        limit = server.config.server.max_workers
        channel = server.connection("acme").channel()
        stub = partner_service_pb2_grpc.PartnerServiceStub(channel)
        holders = [stub.UploadDataset.future(stalled(), timeout=60) for _ in range(limit)]
        try:
            deadline = time.monotonic() + 30
            while server.interceptor._in_flight < limit:  # the calls under way
                assert time.monotonic() < deadline, "the stalled uploads never all started"
                time.sleep(0.01)
            before = log_sizes(server)
            with CleanRoomClient(server.connection("ledger"), timeout=30) as auditor:
                # Answered while every worker is still held: refused at once, not queued.
                call = outcome_of(
                    "GetAuditCheckpoint",
                    "partners/ledger",
                    "",
                    lambda: auditor.get_checkpoint(PARENT),
                )
        finally:
            release.set()
            for holder in holders:
                holder.exception(timeout=60)
            channel.close()
        assert call.code == "RESOURCE_EXHAUSTED", call
        assert call.message
        logged = logged_calls(server, before)[call.logged_as()]
        # SPEC sections 6 and 7: every refused call is logged, and says why in an ErrorInfo.
        problems = [
            *(["it carries no ErrorInfo"] if call.reason == call.code else []),
            *([f"it is in the query logs {logged} times, not once"] if logged != 1 else []),
        ]
        assert problems == [], f"{call.message!r}: " + "; ".join(problems)
