"""What the double-blind tests share: a server with one collaboration per matching mode,
audiences written for both, a hop worker made of the bare stubs, and the omniscient view.

The tests hold every brand's blind key, so they can compute every form a value may take
(`k_S · P(d)` for every set of brands `S`) and check what the server stores and sends
against it. The hop worker (`HopWorker`) is a brand written from the wire contract alone
(SPEC section 8, masking_service.proto): it records every payload it receives, so the
tests can hold the server to what a brand may see, independently of the toolkit.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import secrets
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import tomli_w
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pyarrow import ipc

from cleanroom.config import parse_config
from cleanroom.group import ristretto255 as group
from cleanroom.ops.metrics import CallMetrics
from cleanroom.service.server import audit_interceptor, build_server
from cleanroom.tls.pki import DemoPki
from cleanroom.usecases.clean_room import CleanRoom
from cleanroom.v1 import (
    dataset_pb2,
    masking_service_pb2,
    masking_service_pb2_grpc,
    overlap_report_pb2,
)
from partners.client import Connection
from partners.preparation.digest import key_check_value, type_key
from tests.support import (
    BRANDS,
    COLLABORATION,
    SECRET,
    RunningServer,
    config_data,
    digest_array,
    write_digest_file,
)

SHARED = COLLABORATION  # the collaboration that matches on the shared secret
BLIND = "spring-blind"  # the same brands, matching double-blind
TYPES = ("email", "phone")
SEGMENT = "tier"
TIERS = ("gold", "silver", "bronze")
ONE = (1).to_bytes(32, "little")  # the scalar 1: `mask_digests(ONE, d)` is P(d)
ORDER = 2**252 + 27742317777372353535851937790883648493  # ristretto255's group order
MASKING_METHODS = ("ListMaskingHops", "StartMaskingHop", "CompleteMaskingHop")
MASKING_SERVICE = "/cleanroom.v1.MaskingService/"
Matrix = np.ndarray[Any, np.dtype[np.uint8]]


def parent(collaboration: str) -> str:
    return f"collaborations/{collaboration}"


def dataset_in(collaboration: str, dataset_id: str) -> str:
    return f"collaborations/{collaboration}/datasets/{dataset_id}"


def hop_name(collaboration: str, dataset_id: str, partner: str) -> str:
    return f"{dataset_in(collaboration, dataset_id)}/maskingHops/{partner}"


def partner_name(partner: str) -> str:
    return f"partners/{partner}"


# --- configuration and servers ---------------------------------------------------------


def member(partner: str, *roles: str) -> dict[str, Any]:
    return {"partner": partner, "roles": list(roles)}


def two_mode_config(
    pki: DemoPki,
    data_dir: Path,
    *,
    blind_uploaders: Sequence[str] = BRANDS,
    server: Mapping[str, Any] | None = None,
    **policy: Any,
) -> dict[str, Any]:
    """The TOML data of a server with SHARED (shared secret) and BLIND (double-blind).

    Every brand uploads and analyses in SHARED; in BLIND only `blind_uploaders` are
    members (uploader and analyst), so a test can add a brand later. Exact counts, k = 10,
    minimum size 10, as `tests.support.config_data`, and up to 20 exact reports per
    dataset version.
    """
    # Every test question is asked of both modes, some twice: a quota of exact releases
    # larger than the questions, so that none is refused for differencing.
    policy = {"exact_releases_per_dataset_version": 20, **policy}
    data = config_data(pki, data_dir, server=server, **policy)
    shared = data["collaborations"][0]
    blind = copy.deepcopy(shared)
    blind["id"] = BLIND
    blind["key_check_value"] = key_check_value(SECRET, BLIND)
    blind["matching"] = "double_blind"
    blind["members"] = [member(b, "uploader", "analyst") for b in blind_uploaders]
    blind["members"].append(member("ledger", "auditor"))
    data["collaborations"].append(blind)
    return data


def write_toml(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_bytes(tomli_w.dumps(dict(data)).encode())
    return path


@dataclass
class CallHooks:
    """Called with a call's method as it arrives (before the server identifies and audits
    it), once its unary answer is ready (audited, not yet sent), and when it has ended:
    a test can hold a call at any of these points, or wait for one."""

    arriving: Callable[[str], None] = lambda method: None
    answering: Callable[[str], None] = lambda method: None
    ended: Callable[[str], None] = lambda method: None


def _hooked(handler: Any, method: str, hooks: CallHooks) -> Any:
    kinds = {
        "unary_unary": grpc.unary_unary_rpc_method_handler,
        "unary_stream": grpc.unary_stream_rpc_method_handler,
        "stream_unary": grpc.stream_unary_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }
    for attribute, make_handler in kinds.items():
        behavior = getattr(handler, attribute)
        if behavior is None:
            continue
        if attribute.endswith("_stream"):

            def streamed(request: Any, context: Any, inner: Any = behavior) -> Iterator[Any]:
                try:
                    yield from inner(request, context)
                finally:
                    hooks.ended(method)

            wrapped: Any = streamed
        else:

            def answered(request: Any, context: Any, inner: Any = behavior) -> Any:
                try:
                    response = inner(request, context)
                    hooks.answering(method)
                    return response
                finally:
                    hooks.ended(method)

            wrapped = answered
        return make_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


@contextmanager
def serving(
    pki: DemoPki, data: dict[str, Any], *, hooks: CallHooks | None = None
) -> Iterator[RunningServer]:
    """`tests.support.running_server` for a whole configuration's data, with call hooks."""
    config = parse_config(data, base_dir=Path(data["server"]["data_dir"]))
    clean_room = CleanRoom(config)
    metrics = CallMetrics()
    audit = audit_interceptor(clean_room, metrics)
    if hooks is not None:
        audited, held = audit.intercept_service, hooks

        def intercept(continuation: Any, details: grpc.HandlerCallDetails) -> Any:
            held.arriving(details.method)
            handler = audited(continuation, details)
            return None if handler is None else _hooked(handler, details.method, held)

        audit.intercept_service = intercept  # type: ignore[method-assign]
    grpc_server, port = build_server(clean_room, interceptor=audit)
    running = RunningServer(pki, config, clean_room, grpc_server, port, audit, metrics)
    try:
        yield running
    finally:
        running.stop()


def reconfigure(running: RunningServer, data: dict[str, Any]) -> None:
    """Applies a changed configuration to a running server, as its SIGHUP reload does."""
    running.clean_room.reconfigure(parse_config(data, base_dir=Path(data["server"]["data_dir"])))


def calls_counted(metrics: CallMetrics, method: str) -> int:
    """How many calls of a MaskingService method the server handled, any status."""
    total = 0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "cleanroom_calls_total" and sample.labels.get("method") == method:
                total += int(sample.value)
    return total


def partner_environment(connection: Connection, home: Path) -> dict[str, str]:
    """The environment of a `cleanroom-partner` process of a brand, its home its own."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GRPC_", "CLEANROOM_"))},
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "CLEANROOM_SERVER": connection.target,
        "CLEANROOM_CERT": str(connection.certificate),
        "CLEANROOM_KEY": str(connection.private_key),
        "CLEANROOM_CA": str(connection.ca_certificate),
        "CLEANROOM_SERVER_NAME": "localhost",
    }


def partner_command(*arguments: str) -> list[str]:
    """The command line of `cleanroom-partner ARGUMENTS` with this interpreter."""
    return [sys.executable, "-m", "partners", *arguments]


# --- audiences ---------------------------------------------------------------------------


@dataclass(frozen=True)
class People:
    """A universe of people: each has an email digest, a phone digest and a tier."""

    email: Matrix
    phone: Matrix

    @classmethod
    def random(cls, rng: np.random.Generator, count: int) -> People:
        return cls(
            rng.integers(0, 256, size=(count, 32), dtype=np.uint8),
            rng.integers(0, 256, size=(count, 32), dtype=np.uint8),
        )


@dataclass(frozen=True)
class Audience:
    """One brand's customer list: which people, whose phone it knows, their tiers."""

    brand: str
    people: People
    rows: np.ndarray[Any, np.dtype[np.int64]]  # indices into the universe
    has_phone: np.ndarray[Any, np.dtype[np.bool_]]
    tiers: tuple[str, ...]

    @classmethod
    def drawn(cls, brand: str, people: People, rng: np.random.Generator, count: int) -> Audience:
        rows = rng.choice(len(people.email), size=count, replace=False)
        has_phone = rng.random(count) < 0.6
        has_phone[0] = True
        tiers = tuple(str(t) for t in rng.choice(TIERS, size=count))
        return cls(brand, people, rows, has_phone, tiers)

    def digests(self, identifier_type: str) -> Matrix:
        """The digests of one type present in the list, in row order."""
        matrix = getattr(self.people, identifier_type)[self.rows]
        return matrix if identifier_type == "email" else matrix[self.has_phone]

    def file(self, folder: Path, collaboration: str) -> Path:
        """The digests file `prepare` would write for `collaboration`."""
        folder.mkdir(parents=True, exist_ok=True)
        return write_digest_file(
            folder / f"{self.brand}-{collaboration}.parquet",
            {
                "email": digest_array(self.people.email[self.rows]),
                "phone": digest_array(self.people.phone[self.rows], list(self.has_phone)),
            },
            {SEGMENT: list(self.tiers)},
            collaboration=collaboration,
            kcv=key_check_value(SECRET, collaboration),
        )


def email_digests(collaboration: str, emails: Sequence[str]) -> Matrix:
    """The digests of normalized emails in a collaboration (SPEC section 2)."""
    from partners.preparation.digest import digest_normalized

    values = digest_normalized(type_key(SECRET, collaboration, "email"), list(emails))
    return np.frombuffer(b"".join(values), dtype=np.uint8).reshape(-1, 32)


# --- the group, as the omniscient tests see it ---------------------------------------


def product(scalars: Iterable[bytes]) -> bytes:
    result = ONE
    for scalar in scalars:
        result = group.multiply_scalars(result, scalar)
    return result


def as_scalar(value: bytes) -> bytes | None:
    """A 32-byte value read as a little-endian scalar, reduced; None for zero."""
    number = int.from_bytes(value, "little") % ORDER
    return number.to_bytes(32, "little") if number else None


def rows_of(matrix: Matrix) -> set[bytes]:
    return {bytes(row) for row in matrix}


def forms(digests: Mapping[str, Matrix], keys: Mapping[str, bytes]) -> dict[str, set[bytes]]:
    """Every form of the digests: themselves and `k_S · P(d)` for every set S of brands.

    Keys are labels (`digest`, `P`, `acme+corvid`, ...); values the sets of encodings.
    """
    found: dict[str, set[bytes]] = {"digest": set()}
    brands = sorted(keys)
    for size in range(len(brands) + 1):
        for chosen in itertools.combinations(brands, size):
            label = "+".join(chosen) or "P"
            scalar = product(keys[b] for b in chosen)
            found[label] = set()
            for identifier_type, matrix in digests.items():
                if len(matrix):
                    found[label] |= rows_of(group.mask_digests(scalar, matrix, identifier_type))
    for matrix in digests.values():
        found["digest"] |= rows_of(matrix)
    return found


def element_columns(table: pa.Table) -> dict[str, Matrix]:
    """The non-null 32-byte values of every fixed_size_binary(32) column of a table."""
    columns: dict[str, Matrix] = {}
    for name in table.column_names:
        column = table.column(name)
        if column.type != pa.binary(32):
            continue
        values = [v for v in column.to_pylist() if v is not None]
        columns[name] = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(-1, 32)
    return columns


# --- the data directory -------------------------------------------------------------------


def catalog_values(database: Path) -> list[tuple[str, str, Any]]:
    """Every value of every table of a SQLite file: (table, column, value)."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        values: list[tuple[str, str, Any]] = []
        for table in tables:
            cursor = connection.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            for row in cursor:
                values += [(table, name, value) for name, value in zip(names, row, strict=True)]
        return values
    finally:
        connection.close()


def catalog_mask_set(data_dir: Path, collaboration: str, dataset: str) -> set[str]:
    """The partners of a dataset's mask set as the catalog stores it (any table with a
    `mask_set` column, keyed by collaboration and dataset)."""
    connection = sqlite3.connect(f"file:{data_dir / 'cleanroom.sqlite3'}?mode=ro", uri=True)
    try:
        tables = [
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if "mask_set" in {c[1] for c in connection.execute(f'PRAGMA table_info("{name}")')}
        ]
        assert tables, "no table of the catalog holds mask sets"
        found: set[str] = set()
        for table in tables:
            query = f'SELECT mask_set FROM "{table}" WHERE collaboration = ? AND dataset = ?'
            for (value,) in connection.execute(query, (collaboration, dataset)):
                found |= words(str(value)) - {"partners"}
        return found
    finally:
        connection.close()


def stored_files_are_named_by_the_catalog(data_dir: Path) -> None:
    """No scratch file under tmp/, and every file under datasets/ is one the catalog names."""
    assert sorted((data_dir / "tmp").iterdir()) == [], "scratch files left behind"
    values = catalog_values(data_dir / "cleanroom.sqlite3")
    named = {str(v) for _, _, v in values if isinstance(v, str)}
    for path in (data_dir / "datasets").rglob("*"):
        if path.is_file():
            assert path.name in named, f"an orphan file: {path.name}"
    for table, column, value in values:  # and every file the catalog names is there
        if column == "file_name" and value:
            assert (data_dir / "datasets" / str(value)).is_file(), (table, value)
        if column == "mask_set" and value:  # a brand's mask in a set at most once
            members = json.loads(str(value))
            assert len(members) == len(set(members)), (table, members)


# --- reports -----------------------------------------------------------------------------


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _count(count: overlap_report_pb2.ReleasedCount) -> tuple[Any, ...]:
    value = count.value if count.HasField("value") else None
    return (value, count.suppression_reason)


def figures(report: overlap_report_pb2.OverlapReport) -> dict[str, Any]:
    """What a report released, without the names that differ between collaborations."""
    return {
        "base": _short(report.base_dataset),
        "others": [_short(o) for o in report.other_datasets],
        "segment": report.segment_column,
        "sizes": sorted((_short(s.dataset), _count(s.row_count)) for s in report.dataset_sizes),
        "cells": sorted(
            (
                c.segment,
                tuple(sorted(_short(d) for d in c.matched_datasets)),
                _count(c.base_row_count),
            )
            for c in report.membership_cells
        ),
        "pairs": sorted(
            (
                _short(p.dataset),
                _short(p.matched_dataset),
                _count(p.matched_row_count),
                p.match_rate if p.HasField("match_rate") else None,
            )
            for p in report.pairwise_overlaps
        ),
        "released": report.released_count,
        "suppressed": report.suppressed_count,
        "withheld": sorted(report.withheld_segments),
    }


# --- the two collaborations' datasets and reports -------------------------------


QUESTIONS = (  # base, others, segment column
    ("acme", ("brightmart",), None),
    ("acme", ("brightmart", "corvid"), None),
    ("brightmart", ("corvid", "acme"), SEGMENT),
    ("corvid", ("acme",), SEGMENT),
)


def dataset_id(brand: str) -> str:
    return f"{brand}-crm"


def audiences(seed: int, sizes: dict[str, int]) -> dict[str, Audience]:
    rng = np.random.default_rng(seed)
    people = People.random(rng, 2400)
    return {brand: Audience.drawn(brand, people, rng, size) for brand, size in sizes.items()}


def upload_shared(running: Any, lists: dict[str, Audience], folder: Path) -> None:
    for brand, audience in lists.items():
        running.client(brand).upload(audience.file(folder, SHARED), dataset_id=dataset_id(brand))


def upload_blind(running: Any, audience: Audience, key: bytes, folder: Path) -> None:
    dataset = running.client(audience.brand).upload(
        audience.file(folder, BLIND), dataset_id=dataset_id(audience.brand), blind_key=key
    )
    assert dataset.mask_set == [partner_name(audience.brand)]


def mask_everything(running: Any, keys: dict[str, bytes], journals: Path) -> int:
    """Every brand takes its pending hops (the toolkit's API) until none is left.

    Returns how many rounds it took; a hop queue that never empties fails the test.
    """
    from partners import work

    for round_ in range(1, 2 * len(keys) + 2):
        pending = False
        for brand, key in keys.items():
            client = running.client(brand)
            if list(client.list_masking_hops(parent(BLIND))):
                pending = True
                work(client, BLIND, key, journal=journals / brand)
        if not pending:
            return round_
    raise AssertionError("masking hops still pending after every brand took them repeatedly")


def assert_stored_exactly(
    room: CleanRoom, lists: Mapping[str, Audience], keys: Mapping[str, bytes]
) -> None:
    """Every double-blind dataset stores exactly K · P(d), once per digest.

    K is the product of every uploader's key: a hop applied twice or lost would leave a
    different scalar, and a row lost or repeated a different multiset.
    """
    whole_key = product(keys.values())
    records = {
        r.name.dataset: r for r in room.catalog.datasets(BLIND, owner=None, after="", limit=1000)
    }
    for brand, audience in lists.items():
        stored = element_columns(room.files.open(records[dataset_id(brand)].file_name))
        assert set(TYPES) <= set(stored), (brand, list(stored))
        for identifier_type in TYPES:
            expected = group.mask_digests(
                whole_key, audience.digests(identifier_type), identifier_type
            )
            assert len(stored[identifier_type]) == len(expected), (brand, identifier_type)
            assert rows_of(stored[identifier_type]) == rows_of(expected), (brand, identifier_type)
            copy = stored.get(f"{identifier_type}.sorted")  # the layout's sorted copy, if any
            assert copy is None or rows_of(copy) == rows_of(expected), (brand, identifier_type)


def assert_same_reports(
    running: Any, questions: Sequence[tuple[str, Sequence[str], str | None]]
) -> None:
    for base, others, segment in questions:
        client = running.client(base)
        reports = [
            client.create_report(
                parent(collaboration),
                base=dataset_in(collaboration, dataset_id(base)),
                others=[dataset_in(collaboration, dataset_id(o)) for o in others],
                segment_column=segment,
            )
            for collaboration in (SHARED, BLIND)
        ]
        shared, blind = (figures(r) for r in reports)
        assert blind == shared, (base, others, segment)
        assert shared["released"] > 0


# --- a brand made of the bare stubs ----------------------------------------------------


def ipc_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def read_payloads(payloads: Sequence[bytes]) -> pa.Table:
    tables = [ipc.open_stream(pa.py_buffer(p)).read_all() for p in payloads]
    return pa.concat_tables(tables) if tables else pa.table({})


def masked(table: pa.Table, key: bytes) -> pa.Table:
    """A hop's result: every element times `key`, the rows shuffled afresh (CSPRNG)."""
    columns: dict[str, pa.Array] = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if column.type == pa.binary(32):
            values = column.to_pylist()
            present = [v for v in values if v is not None]
            matrix = np.frombuffer(b"".join(present), dtype=np.uint8).reshape(-1, 32)
            multiplied = iter(group.multiply(key, matrix)) if present else iter(())
            column = pa.array(
                [None if v is None else bytes(next(multiplied)) for v in values], pa.binary(32)
            )
        columns[name] = column
    order = np.random.default_rng(secrets.randbits(128)).permutation(table.num_rows)
    return pa.table(columns).take(pa.array(order))


@dataclass
class Delivery:
    """One attempt at a hop as a brand received it."""

    hop: masking_service_pb2.MaskingHop
    attempt_id: str
    checksum: str
    payloads: list[bytes]
    first_message: bytes

    @property
    def table(self) -> pa.Table:
        return read_payloads(self.payloads)

    def elements(self) -> set[bytes]:
        found: set[bytes] = set()
        for matrix in element_columns(self.table).values():
            found |= rows_of(matrix)
        return found


def result_messages(
    name: str, attempt_id: str, table: pa.Table, *, chunks: int = 2
) -> list[masking_service_pb2.CompleteMaskingHopRequest]:
    """A hop's completion: the header, then `chunks` Arrow IPC streams of the rows."""
    bounds = np.linspace(0, table.num_rows, chunks + 1).astype(int)
    payloads = [ipc_stream(table.slice(a, b - a)) for a, b in itertools.pairwise(bounds)]
    checksum = hashlib.sha256(b"".join(payloads)).hexdigest()
    header = masking_service_pb2.MaskingHopResult(
        name=name, attempt_id=attempt_id, row_count=table.num_rows, checksum=checksum
    )
    return [
        masking_service_pb2.CompleteMaskingHopRequest(result=header),
        *(masking_service_pb2.CompleteMaskingHopRequest(record_batches=p) for p in payloads),
    ]


@dataclass
class HopWorker:
    """A brand that takes its hops through the bare stubs, and remembers all it received."""

    brand: str
    key: bytes
    connection: Connection
    deliveries: list[Delivery] = field(default_factory=list)
    sent: list[set[bytes]] = field(default_factory=list)
    results: list[pa.Table] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.channel = self.connection.channel()
        self.stub = masking_service_pb2_grpc.MaskingServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def hops(self, collaboration: str) -> list[masking_service_pb2.MaskingHop]:
        found: list[masking_service_pb2.MaskingHop] = []
        token = ""
        while True:
            response = self.stub.ListMaskingHops(
                masking_service_pb2.ListMaskingHopsRequest(
                    parent=parent(collaboration), page_token=token
                ),
                timeout=30,
            )
            found += response.masking_hops
            token = response.next_page_token
            if not token:
                return found

    def start(self, name: str, *, messages: int | None = None) -> Delivery:
        """Starts an attempt and reads its rows (only `messages` messages, if given)."""
        call = self.stub.StartMaskingHop(
            masking_service_pb2.StartMaskingHopRequest(name=name), timeout=60
        )
        first = next(call)
        assert first.WhichOneof("payload") == "attempt", first
        delivery = Delivery(
            first.attempt.masking_hop,
            first.attempt.attempt_id,
            first.attempt.checksum,
            [],
            first.SerializeToString(),
        )
        self.deliveries.append(delivery)
        for message in call:
            assert message.WhichOneof("payload") == "record_batches", message
            delivery.payloads.append(message.record_batches)
            if messages is not None and len(delivery.payloads) >= messages:
                call.cancel()
                break
        if messages is None:
            received = hashlib.sha256(b"".join(delivery.payloads)).hexdigest()
            assert received == delivery.checksum, "the attempt's checksum does not match"
        return delivery

    def result(self, delivery: Delivery) -> pa.Table:
        table = masked(delivery.table, self.key)
        self.results.append(table)
        for matrix in element_columns(table).values():
            self.sent.append(rows_of(matrix))
        return table

    def complete(
        self, delivery: Delivery, table: pa.Table | None = None
    ) -> masking_service_pb2.CompleteMaskingHopResponse:
        table = self.result(delivery) if table is None else table
        messages = result_messages(delivery.hop.name, delivery.attempt_id, table)
        response: masking_service_pb2.CompleteMaskingHopResponse = self.stub.CompleteMaskingHop(
            iter(messages), timeout=60
        )
        return response

    def take_all(self, collaboration: str) -> int:
        """Takes every hop pending for the brand once; returns how many it applied."""
        done = 0
        for hop in self.hops(collaboration):
            self.complete(self.start(hop.name))
            done += 1
        return done


def rpc_error_bytes(error: grpc.RpcError) -> list[bytes]:
    """What an error carries to the caller: its message and trailing metadata."""
    found = [(error.details() or "").encode()]
    for _key, value in error.trailing_metadata() or ():
        found.append(value if isinstance(value, bytes) else value.encode())
    return found


def words(text: str) -> set[str]:
    """The names in a text (partner and dataset ids), whatever separates them."""
    return set(re.split(r"[^A-Za-z0-9_-]+", text)) - {""}


def reason_of(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call (its status code's name if it has none)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return str(error.code().name)


def state_of(dataset: dataset_pb2.Dataset) -> tuple[str, list[str], list[str]]:
    """A dataset's matching state, mask set (sorted) and pending maskers (sorted)."""
    return (
        dataset_pb2.MatchingState.Name(dataset.matching_state),
        sorted(dataset.mask_set),
        sorted(dataset.pending_maskers),
    )
