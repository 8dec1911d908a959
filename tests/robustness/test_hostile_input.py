"""Hostile input: generated requests to every RPC never get INTERNAL, never crash the server,
and every refusal says what was wrong (a message and one ErrorInfo with an UPPER_SNAKE reason).

Hypothesis generates the requests, derandomized so that every run sends the same ones:
extreme and malformed field values, invalid resource names, path traversal and SQL
fragments in ids, names, filters and page tokens, broken Arrow batches and streams, from
callers of every role. One in-process server (`running_server`) serves the module.

Each property test checks every answer as it comes, collects what breaks a rule, and
fails at its end with the smallest request of each kind of failure: one bug does not hide
another, and every run sends the same number of requests (the module sends at least
5,000; the last tests count them, match them against the query logs, and check the disk).

Byte-level corruption of Arrow batches runs against a second server in a subprocess
(`python -m cleanroom serve`): a crash in Arrow's native code there fails a test, where
in-process it would take pytest down with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import operator
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pytest
import tomli_w
from google.protobuf import text_format, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from pyarrow import ipc

from cleanroom.demo.deployment import free_loopback_port
from cleanroom.names import SERVER_LOG
from cleanroom.proofs.signed_note import NoteVerifier
from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    overlap_report_pb2,
    partner_service_pb2,
    partner_service_pb2_grpc,
    report_service_pb2,
    report_service_pb2_grpc,
)
from partners.audit.verify import AuditorState, verify_log
from partners.client import CleanRoomClient, Connection
from partners.errors import ServerError
from tests.support import (
    COLLABORATION,
    KCV,
    LOG_SIGNER,
    RunningServer,
    config_data,
    digest_array,
    files_under,
    random_digests,
    running_server,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
# The smallest `server.max_upload_message_bytes` the configuration allows, so that an
# oversized message stays cheap; gRPC's receive limit is 64 KiB above it (service/server.py).
MESSAGE_LIMIT = 64 * 1024
RECEIVE_LIMIT = MESSAGE_LIMIT + 64 * 1024
REASON = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")
DOMAIN = "cleanroom.v1"
MARKER = "cleanroom-escape-5e1f"  # what path traversal attempts would create
CALLERS = ("acme", "ledger", "outsider", "operator", "stranger")
TIMEOUT = 30.0
MIN_REQUESTS = 5000
SERVICES = {
    **dict.fromkeys(("UploadDataset", "GetDataset", "ListDatasets", "DeleteDataset"), "PartnerService"),
    "ListSharedDatasets": "PartnerService",
    **dict.fromkeys(("CreateOverlapReport", "GetOverlapReport", "ListOverlapReports", "GetPrivacyBudget"), "ReportService"),
    **dict.fromkeys(("ListAuditEvents", "GetAuditCheckpoint", "GetAuditInclusionProof", "GetAuditConsistencyProof"), "AuditService"),
}  # fmt: skip
STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    "PartnerService": partner_service_pb2_grpc.PartnerServiceStub,
    "ReportService": report_service_pb2_grpc.ReportServiceStub,
    "AuditService": audit_service_pb2_grpc.AuditServiceStub,
}


def fuzz(max_examples: int, **overrides: Any) -> settings:
    """Hypothesis settings of this module: derandomized (the same requests every run)."""
    return settings(
        max_examples=max_examples, deadline=None, derandomize=True, database=None, **overrides
    )


# Hostile values ----------------------------------------------------------------------------

SQL = (
    "' OR 1=1 --", "'; DROP TABLE datasets; --", "1; DROP TABLE audit_events", '" OR ""="',
    "' UNION SELECT entry FROM audit_events --", "%", "_", "%_%", "\\", "*",
)  # fmt: skip
TRAVERSAL = (
    "..", "../", f"../../{MARKER}", f"..%2f..%2f{MARKER}", f"%2e%2e%2f{MARKER}", f"/tmp/{MARKER}",
    "/etc/passwd", f"..\\..\\{MARKER}", f"....//{MARKER}", f"./{MARKER}", f"~/{MARKER}",
    f"file:///tmp/{MARKER}", f"{COLLABORATION}/../../{MARKER}",
)  # fmt: skip
ODD = (
    "", " ", "\x00", "a\x00b", "acme-base\x00", "\n\r\t", "SPRING-LAUNCH", f"{COLLABORATION} ",
    f"\u202e{COLLABORATION}", "\uff53\uff50\uff52\uff49\uff4e\uff47", "\U0001f642", "a-", "9a",
    "a" * 63, "a" * 64, "\u00e9" * 10,
)  # fmt: skip
IDS = (
    COLLABORATION, "acme-base", "brightmart-base", "corvid-base", "another-room", "email",
    "tier", "r-0000000000000000", SERVER_LOG,
)  # fmt: skip
# Above gRPC's 8 KiB (soft) and 16 KiB (hard) limits on a response's metadata once echoed.
LONG = st.builds(
    operator.mul,
    st.sampled_from(("a", "%", "/", "\x00", "é", "../")),
    st.sampled_from((2_500, 20_000)),
)
PIECES = st.sampled_from(SQL + TRAVERSAL + ODD + IDS)
TEXT = st.one_of(
    PIECES, PIECES, PIECES, st.text(max_size=30), st.builds(operator.add, PIECES, PIECES), LONG
)
INT32 = st.one_of(
    st.sampled_from((0, 1, -1, 50, 1000, 1001, 2**31 - 1, -(2**31))),
    st.integers(-(2**31), 2**31 - 1),
)
INT64 = st.one_of(
    st.sampled_from((0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63))),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-3, 3000),
)
TIMESTAMPS = st.one_of(
    st.none(),
    st.builds(timestamp_pb2.Timestamp, seconds=INT64, nanos=INT32),
    st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.integers(-62135596800, 253402300799),
        nanos=st.integers(0, 999_999_999),
    ),
)


def ids() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(IDS), TEXT)


def parents() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from((PARENT, f"collaborations/{SERVER_LOG}", f"{PARENT}/", f"/{PARENT}")),
        st.builds("collaborations/{}".format, ids()),
        TEXT,
    )


def resource_names(collection: str, known: Sequence[str]) -> st.SearchStrategy[str]:
    """Names of a collection: valid, invalid, traversing, injecting, and existing ones."""
    return st.one_of(
        TEXT,
        st.builds(
            "collaborations/{}/{}/{}".format,
            ids(),
            st.sampled_from((collection, "datasets", "overlapReports", "", "..")),
            ids(),
        ),
        st.builds(f"{PARENT}/{collection}/{{}}".format, ids()),
        st.builds(
            "{}{}".format, st.sampled_from(known), st.sampled_from(("/", "/..", "\x00", "/x"))
        ),
        st.sampled_from(known),
    )


def page_token(kind: str, parent: str, position: object) -> str:
    data = json.dumps([kind, parent, position]).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def page_tokens(kind: str, parent: str) -> st.SearchStrategy[str]:
    """Empty, hostile text, random base64, and tokens of this listing with hostile positions."""
    positions = st.one_of(
        INT64,
        st.integers(-(2**80), 2**80),
        st.text(max_size=20),
        st.floats(),
        st.none(),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
    )
    return st.one_of(
        st.just(""),
        TEXT,
        st.binary(max_size=48).map(lambda b: base64.urlsafe_b64encode(b).decode()),
        st.builds(
            page_token,
            st.sampled_from((kind, kind, "datasets", "overlapReports", "auditEvents", "")),
            st.sampled_from((parent, parent, PARENT, f"collaborations/{SERVER_LOG}", "")),
            positions,
        ),
        st.sampled_from(("e30", "W10", "IiI", "bnVsbA", "WzEsMiwzXQ", "=", "====")),
    )


def listings(
    make: Callable[..., Any], kind: str, parent: st.SearchStrategy[str], **fields: Any
) -> st.SearchStrategy[Any]:
    """List requests whose page tokens are often ones of the same listing and parent."""
    return parent.flatmap(
        lambda p: st.builds(
            make, parent=st.just(p), page_size=INT32, page_token=page_tokens(kind, p), **fields
        )
    )


# Arrow payloads ----------------------------------------------------------------------------

TYPES = ("email", "phone")
SEGMENT = "tier"
TIERS = ("gold", "silver", None)
WIRE = pa.schema([pa.field(t, pa.binary(32)) for t in TYPES] + [pa.field(SEGMENT, pa.string())])
Columns = dict[str, pa.Array]


def ipc_stream(
    schema: pa.Schema, *batches: pa.RecordBatch, compression: str | None = None
) -> bytes:
    """One chunk: a whole Arrow IPC stream (schema, then the batches)."""
    sink = pa.BufferOutputStream()
    options = ipc.IpcWriteOptions(compression=compression)
    with ipc.new_stream(sink, schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def tiers(rows: int) -> pa.Array:
    return pa.array([TIERS[i % len(TIERS)] for i in range(rows)], pa.string())


def good_columns(rng: np.random.Generator, rows: int) -> Columns:
    """Columns of the wire schema: random digests of both types, a short segment label."""
    return {**{t: digest_array(random_digests(rng, rows)) for t in TYPES}, SEGMENT: tiers(rows)}


def good_batch(rng: np.random.Generator, rows: int) -> pa.RecordBatch:
    return pa.record_batch(list(good_columns(rng, rows).values()), schema=WIRE)


def not_utf8(rows: int) -> pa.Array:
    """A string column whose values are not UTF-8 (Arrow's light validation lets it by)."""
    offsets = np.arange(0, 2 * rows + 1, 2, dtype=np.int32).tobytes()
    return pa.Array.from_buffers(
        pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(b"\xff\xfe" * rows)]
    )


def binary32(values: list[bytes]) -> pa.Array:
    return pa.array(values, pa.binary(32))


# Each changes the good columns of a chunk in one way: wrong schemas, wrong types, extra or
# missing columns, values that are not digests or not segment labels.
COLUMN_CHANGES: dict[str, Callable[[Columns, np.random.Generator, int], Columns]] = {
    "reordered": lambda c, _, n: {"phone": c["phone"], "email": c["email"], SEGMENT: c[SEGMENT]},
    "digest_16_bytes": lambda c, r, n: {**c, "email": pa.array([r.bytes(16) for _ in range(n)], pa.binary(16))},
    "digest_large_binary": lambda c, _, n: {**c, "email": c["email"].cast(pa.large_binary())},
    "digest_as_hex_text": lambda c, r, n: {**c, "email": pa.array([r.bytes(32).hex() for _ in range(n)])},
    "digest_as_int": lambda c, _, n: {**c, "email": pa.array(range(n), pa.int64())},
    "digest_nested": lambda c, r, n: {**c, "email": pa.array([[r.bytes(32)] for _ in range(n)])},
    "extra_column": lambda c, _, n: {**c, "zip": tiers(n)},
    "missing_column": lambda c, _, n: {"email": c["email"], SEGMENT: c[SEGMENT]},
    "renamed_column": lambda c, _, n: {"EMAIL": c["email"], "phone": c["phone"], SEGMENT: c[SEGMENT]},
    "segment_as_int": lambda c, _, n: {**c, SEGMENT: pa.array(range(n), pa.int32())},
    "segment_dictionary": lambda c, _, n: {**c, SEGMENT: c[SEGMENT].dictionary_encode()},
    "digest_dictionary": lambda c, _, n: {**c, "email": c["email"].dictionary_encode()},
    "digest_struct": lambda c, _, n: {**c, "email": pa.StructArray.from_arrays([c["email"]], ["d"])},
    "segment_list": lambda c, _, n: {**c, SEGMENT: pa.array([["gold", "silver"]] * n)},
    "segment_large_string": lambda c, _, n: {**c, SEGMENT: c[SEGMENT].cast(pa.large_string())},
    "segment_not_utf8": lambda c, _, n: {**c, SEGMENT: not_utf8(n)},
    "segment_too_long": lambda c, _, n: {**c, SEGMENT: pa.array(["x" * 65] * n)},
    "segment_nul_and_unicode": lambda c, _, n: {**c, SEGMENT: pa.array(["\x00🙂' OR 1=1 --"] * n)},
    "row_without_digest": lambda c, _, n: {**{t: pa.nulls(n, pa.binary(32)) for t in TYPES}, SEGMENT: c[SEGMENT]},
    "text_digests": lambda c, _, n: {**c, "email": binary32([b"alice@example.com".ljust(32)] * n)},
    "constant_digests": lambda c, _, n: {**c, "phone": binary32([b"\x07" * 32] * n)},
}  # fmt: skip


def with_dictionary_batch(stream: bytes) -> bytes:
    """A stream with a dictionary batch spliced in after its schema (which has no dictionary)."""
    labels = pa.schema([pa.field(SEGMENT, pa.dictionary(pa.int8(), pa.string()))])
    other = ipc_stream(labels, pa.record_batch([tiers(3).dictionary_encode()], schema=labels))
    dictionary = list(ipc.MessageReader.open_stream(pa.py_buffer(other)))[1]
    first, *rest = list(ipc.MessageReader.open_stream(pa.py_buffer(stream)))
    parts = [first, dictionary, *rest]
    return b"".join(m.serialize().to_pybytes() for m in parts) + b"\xff\xff\xff\xff\0\0\0\0"


def repeated(batch: pa.RecordBatch, rows: int) -> pa.RecordBatch:
    """A batch of `rows` copies of the first row of `batch`: compresses to almost nothing."""
    return (
        pa.concat_tables([pa.Table.from_batches([batch.slice(0, 1)])] * rows)
        .combine_chunks()
        .to_batches()[0]
    )


def chunk(kind: str, rows: int, seed: int) -> tuple[bytes, int]:
    """A chunk of one kind (valid, or broken in one way) and how many wire-schema rows it holds."""
    rng = np.random.default_rng(seed)
    rows = max(rows, 1)
    good = good_batch(rng, rows)
    if kind in COLUMN_CHANGES:
        columns = COLUMN_CHANGES[kind](good_columns(rng, rows), rng, rows)
        batch = pa.record_batch(list(columns.values()), names=list(columns))
        return ipc_stream(batch.schema, batch), rows if batch.schema.equals(WIRE) else 0
    if kind == "segment_too_many_values":
        labels = pa.array([f"v{i}" for i in range(101)])
        return ipc_stream(
            WIRE,
            pa.record_batch([*list(good_columns(rng, 101).values())[:-1], labels], schema=WIRE),
        ), 101
    whole = ipc_stream(WIRE, good)
    payloads: dict[str, Callable[[], tuple[bytes, int]]] = {
        "valid": lambda: (whole, rows),
        "zero_rows": lambda: (ipc_stream(WIRE, good_batch(rng, 0)), 0),
        "schema_only": lambda: (ipc_stream(WIRE), 0),
        "two_batches": lambda: (ipc_stream(WIRE, good, good_batch(rng, rows)), 2 * rows),
        "two_streams": lambda: (whole + ipc_stream(WIRE, good_batch(rng, rows)), rows),
        "garbage_after": lambda: (whole + rng.bytes(17), rows),
        "empty": lambda: (b"", 0),
        "random_bytes": lambda: (rng.bytes(int(rng.integers(1, 600))), 0),
        "continuation_then_random": lambda: (b"\xff" * 4 + rng.bytes(int(rng.integers(0, 200))), 0),
        "truncated": lambda: (whole[: int(rng.integers(1, len(whole)))], 0),
        "oversized": lambda: (rng.bytes(RECEIVE_LIMIT + 1024), 0),
        "just_over_limit": lambda: (rng.bytes(MESSAGE_LIMIT + 16), 0),
        "compressed_zstd": lambda: (ipc_stream(WIRE, good, compression="zstd"), 0),
        "compressed_lz4": lambda: (ipc_stream(WIRE, good, compression="lz4"), 0),
        "compressed_bomb": lambda: (ipc_stream(WIRE, repeated(good, 20_000), compression="zstd"), 0),
        "dictionary_batch_spliced": lambda: (with_dictionary_batch(whole), 0),
        "batch_then_compressed": lambda: (
            ipc_stream(WIRE, good) + ipc_stream(WIRE, good, compression="zstd"), rows
        ),
    }  # fmt: skip
    return payloads[kind]()


CHUNK_KINDS = (
    "valid", "valid", "valid", "valid", "zero_rows", "schema_only", "two_batches", "two_streams",
    "garbage_after", "empty", "random_bytes", "continuation_then_random", "truncated",
    "oversized", "just_over_limit", "segment_too_many_values", "compressed_zstd",
    "compressed_lz4", "compressed_bomb", "batch_then_compressed", "dictionary_batch_spliced",
    *COLUMN_CHANGES,
)  # fmt: skip
CHUNKS = st.tuples(st.sampled_from(CHUNK_KINDS), st.integers(0, 40), st.integers(0, 2**32 - 1))


def header(
    dataset_id: str,
    *,
    row_count: int,
    checksum: str,
    parent: str = PARENT,
    types: Sequence[str] = TYPES,
    segments: Sequence[str] = (SEGMENT,),
    kcv: str = KCV,
) -> partner_service_pb2.UploadDatasetRequest:
    return partner_service_pb2.UploadDatasetRequest(
        header=partner_service_pb2.DatasetUploadHeader(
            parent=parent,
            dataset_id=dataset_id,
            identifier_types=list(types),
            segment_columns=list(segments),
            key_check_value=kcv,
            row_count=row_count,
            checksum=checksum,
        )
    )


def chunk_message(payload: bytes) -> partner_service_pb2.UploadDatasetRequest:
    return partner_service_pb2.UploadDatasetRequest(record_batches=payload)


def sha256(chunks: Sequence[bytes]) -> str:
    return hashlib.sha256(b"".join(chunks)).hexdigest()


# Checking answers --------------------------------------------------------------------------

_LONG_QUOTED = re.compile(r'"((?:[^"\\]|\\.){40})((?:[^"\\]|\\.)+)"')


def describe(messages: Sequence[Any]) -> str:
    """A short, readable form of a request (long strings and bytes elided)."""
    parts = []
    for message in messages:
        if isinstance(message, bytes):
            parts.append(f"raw {message[:60]!r}{'...' if len(message) > 60 else ''}")
            continue
        text = text_format.MessageToString(message, as_one_line=True)
        parts.append(
            _LONG_QUOTED.sub(lambda m: f'"{m.group(1)}..." (+{len(m.group(2))} chars)', text)
        )
    joined = " | ".join(parts) or "(no messages)"
    return joined if len(joined) < 700 else joined[:700] + "..."


def size_of(messages: Sequence[Any]) -> int:
    return sum(len(m) if isinstance(m, bytes) else m.ByteSize() for m in messages)


@dataclass
class Finding:
    """One kind of broken rule, with the smallest request that showed it."""

    rpc: str
    problem: str
    caller: str
    request: str
    size: int
    count: int = 1


class InternalErrorCauses(logging.Handler):
    """What the in-process server logged for each INTERNAL incident: exception and place."""

    def __init__(self) -> None:
        super().__init__()
        self.causes: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None and record.args:
            incident = str(record.args[0] if isinstance(record.args, tuple) else "")
            error = record.exc_info[1]
            frames = [
                f for f in traceback.extract_tb(record.exc_info[2]) if "/cleanroom/" in f.filename
            ]
            where = frames[-1] if frames else None
            place = f" at {Path(where.filename).name} line {where.lineno}" if where else ""
            self.causes[incident] = f"{type(error).__name__}{place}: {str(error)[:160]}"


INCIDENT = re.compile(r"Internal error ([0-9a-f]{12})")


@dataclass
class Findings:
    """Broken rules seen in answers, one entry per kind, each with its smallest request."""

    causes: dict[str, str] = field(default_factory=dict)
    found: dict[tuple[str, str], Finding] = field(default_factory=dict)

    def check(
        self,
        rpc: str,
        caller: str,
        messages: Sequence[Any],
        error: grpc.RpcError,
        *,
        over_limit: bool = False,
    ) -> None:
        """Notes every rule a refusal breaks: the code, its message, its one ErrorInfo."""
        call: Any = error  # every RpcError of a call is also a grpc.Call
        code: grpc.StatusCode = call.code()
        details = call.details() or ""

        def note(kind: str, problem: str) -> None:
            self.note(rpc, f"{code.name}: {kind}", problem, caller=caller, messages=messages)

        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            incident = INCIDENT.search(details)
            cause = self.causes.get(incident.group(1), "") if incident else ""
            summary = cause.partition(":")[0] or INCIDENT.sub("Internal error", details)[:60]
            note(f"never allowed ({summary})", cause or details[:300])
            return
        if over_limit and code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return  # gRPC's own receive limit refuses it, before any servicer: no ErrorInfo
        if not details.strip():
            note("empty message", "the refusal has no message")
        try:
            status = rpc_status.from_call(call)
        except ValueError as mismatch:
            note("unreadable status", f"{mismatch}; details: {details[:300]}")
            return
        if status is None:
            note("no ErrorInfo", f"no google.rpc.Status at all; details: {details[:300]}")
            return
        infos = []
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                infos.append(info)
        if len(infos) != 1:
            note("ErrorInfo count", f"{len(infos)} ErrorInfo details, not one: {details[:200]}")
            return
        (info,) = infos
        if not REASON.fullmatch(info.reason):
            note("bad reason", f"reason {info.reason!r} is not UPPER_SNAKE")
        if info.domain != DOMAIN:
            note("bad domain", f"domain {info.domain!r}, not {DOMAIN!r}")
        if not status.message.strip():
            note("empty message", "the google.rpc.Status has no message")

    def note(
        self,
        rpc: str,
        kind: str,
        problem: str,
        *,
        caller: str,
        messages: Sequence[Any],
        example: str | None = None,
    ) -> None:
        size = size_of(messages)
        found = self.found.get((rpc, kind))
        if found is not None:
            found.count += 1
            if found.size <= size:
                return
        request = example or describe(messages)
        count = found.count if found else 1
        self.found[(rpc, kind)] = Finding(rpc, f"{kind}: {problem}", caller, request, size, count)

    def assert_none(self) -> None:
        findings, self.found = list(self.found.values()), {}
        report = "\n".join(
            f"- {f.rpc} {f.problem}\n    {f.count} requests; smallest, by {f.caller}: {f.request}"
            for f in findings
        )
        assert not findings, f"{len(findings)} kinds of broken rules:\n{report}"


@dataclass(repr=False)
class Room:
    """The module's server, a channel per caller, and what the tests sent and saw."""

    server: RunningServer
    sandbox: Path
    channels: dict[str, grpc.Channel]
    known_datasets: tuple[str, ...]
    known_report: str
    findings: Findings
    baseline_events: int = 0
    sandbox_before: dict[str, tuple[int, int]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    expected_events: int = 0
    next_dataset: int = 0

    def __repr__(self) -> str:
        return f"Room({sum(self.requests.values())} requests sent)"

    def stub(self, caller: str, rpc: str) -> Any:
        return getattr(STUBS[SERVICES[rpc]](self.channels[caller]), rpc)

    def new_dataset_id(self) -> str:
        self.next_dataset += 1
        return f"acme-fz-{self.next_dataset}"  # ids are named under their owner

    def call(self, rpc: str, caller: str, request: Any) -> Any:
        """Sends one request (an upload: a list of messages) and checks the answer."""
        messages = list(request) if rpc == "UploadDataset" else [request]
        largest = max((m.ByteSize() for m in messages), default=0)
        over_limit = largest > RECEIVE_LIMIT
        self.requests[rpc] += 1
        # A unary request over the limit never reaches the server's handlers; a stream
        # does (its handler starts before the first message), so it is logged.
        if rpc == "UploadDataset" or not over_limit:
            self.expected_events += 1
        try:
            if rpc == "UploadDataset":
                return self.stub(caller, rpc)(iter(messages), timeout=TIMEOUT)
            return self.stub(caller, rpc)(request, timeout=TIMEOUT)
        except grpc.RpcError as error:
            self.findings.check(rpc, caller, messages, error, over_limit=over_limit)
            return None

    def call_raw(self, rpc: str, caller: str, payloads: Sequence[bytes]) -> None:
        """Sends messages as raw bytes, whatever they decode to."""
        path = f"/cleanroom.v1.{SERVICES[rpc]}/{rpc}"
        channel = self.channels[caller]
        self.requests[rpc] += 1
        try:
            if rpc == "UploadDataset":
                channel.stream_unary(path)(iter(payloads), timeout=TIMEOUT)
            else:
                channel.unary_unary(path)(payloads[0], timeout=TIMEOUT)
        except grpc.RpcError as error:
            self.findings.check(rpc, caller, payloads, error)

    def assert_no_findings(self) -> None:
        self.findings.assert_none()

    def serving(self) -> bool:
        """Whether the server still answers a health check (counted, not in the query logs)."""
        response = health_pb2_grpc.HealthStub(self.channels["acme"]).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def event_count(self) -> int:
        assert self.server.interceptor.drain(30)
        log = self.server.clean_room.audit_log
        return log.size(COLLABORATION) + log.size(SERVER_LOG)


def snapshot(directory: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under `directory` outside `skip`, with its size and modification time."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file() and skip not in p.parents
    }


def seed_datasets(server: RunningServer, work: Path) -> tuple[str, ...]:
    """Three brands' datasets with planted overlaps, one with a segment column."""
    rng = np.random.default_rng(7)
    pool = random_digests(rng, 90)
    acme = write_digest_file(
        work / "acme.parquet",
        {"email": digest_array(pool[:60]), "phone": digest_array(random_digests(rng, 60))},
        {SEGMENT: [TIERS[i % 2] for i in range(60)]},
    )
    brightmart = write_digest_file(
        work / "brightmart.parquet",
        {"email": digest_array(pool[30:90]), "phone": digest_array(random_digests(rng, 60))},
    )
    corvid = write_digest_file(
        work / "corvid.parquet",
        {"email": digest_array(np.concatenate([pool[:20], pool[70:90], random_digests(rng, 20)]))},
    )
    names = []
    for brand, path in (("acme", acme), ("brightmart", brightmart), ("corvid", corvid)):
        names.append(server.client(brand).upload(path, dataset_id=f"{brand}-base").name)
    return tuple(names)


@pytest.fixture(scope="module", autouse=True)
def quiet_grpc_deserializer() -> Iterator[None]:
    """gRPC logs a traceback for every request it cannot decode; the findings say it once."""
    logger = logging.getLogger("grpc._common")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="module")
def room(pki: DemoPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    sandbox = tmp_path_factory.mktemp("hostile")
    (sandbox / "bait.txt").write_text("nothing may change this file\n")
    data_dir = sandbox / "data"
    with running_server(
        pki, data_dir, server={"max_upload_message_bytes": MESSAGE_LIMIT}
    ) as server:
        known = seed_datasets(server, tmp_path_factory.mktemp("hostile-work"))
        report = server.client("acme").create_report(PARENT, base=known[0], others=[known[1]])
        channels = {caller: server.connection(caller).channel() for caller in CALLERS}
        causes = InternalErrorCauses()
        server_logger = logging.getLogger("cleanroom.service.calls")
        server_logger.addHandler(causes)
        room = Room(server, sandbox, channels, known, report.name, Findings(causes.causes))
        room.baseline_events = room.event_count()
        room.sandbox_before = snapshot(sandbox, data_dir)
        try:
            yield room
        finally:
            server_logger.removeHandler(causes)
            for channel in channels.values():
                channel.close()


# Properties, RPC by RPC ----------------------------------------------------------------------


def rpc_of(request: Any) -> str:
    return type(request).__name__.removesuffix("Request")


def test_undecodable_messages_to_every_rpc_are_refused_and_logged(room: Room) -> None:
    """Bytes that are no protobuf of the request, or whose strings are not UTF-8."""
    before = room.event_count()
    garbage = st.sampled_from(
        (
            b"\x0a\x02\xc3\x28",  # field 1: a string that is not UTF-8
            b"\x0a\x05ab",  # field 1: a length past the end
            b"\x12\xff\xff\xff\xff\x0f",  # field 2: a length of 4 GiB
            b"\x0a\x02\xff\xfe\x10\x01",
            b"\xff",
            b"\x80" * 10 + b"\x01",  # a tag longer than a varint may be
        )
    )
    whole_header = header("fz-raw", row_count=1, checksum="0" * 64).SerializeToString()
    sent = 0

    @fuzz(40)
    @given(
        caller=st.sampled_from(CALLERS),
        payload=st.one_of(garbage, st.binary(max_size=64)),
        garbage_header=st.booleans(),
        first=garbage,
    )
    def probe(caller: str, payload: bytes, garbage_header: bool, first: bytes) -> None:
        nonlocal sent
        for rpc in SERVICES:
            if rpc == "UploadDataset":
                room.call_raw(rpc, caller, [first] if garbage_header else [whole_header, payload])
            else:
                room.call_raw(rpc, caller, [payload])
            sent += 1

    probe()
    added = room.event_count() - before
    room.expected_events += added  # the events it left; the rule is checked here, not later
    if added != sent:
        problem = f"{sent} requests left {added} events in the query logs"
        room.findings.note(
            "(every RPC)", "not logged", problem, caller="all", messages=[], example="above"
        )
    assert room.serving()
    room.assert_no_findings()


def test_dataset_rpcs_refuse_hostile_names_parents_and_page_tokens(room: Room) -> None:
    names = resource_names("datasets", room.known_datasets)
    protected = set(room.known_datasets)  # the seeded datasets stay for the other tests
    requests = st.tuples(
        st.builds(partner_service_pb2.GetDatasetRequest, name=names),
        st.builds(
            partner_service_pb2.DeleteDatasetRequest,
            name=names.map(lambda n: f"{n}-x" if n in protected else n),
        ),
        listings(partner_service_pb2.ListDatasetsRequest, "datasets", parents()),
        listings(partner_service_pb2.ListSharedDatasetsRequest, "sharedDatasets", parents()),
    )

    @fuzz(500)
    @given(caller=st.sampled_from(CALLERS), requests=requests)
    def probe(caller: str, requests: tuple[Any, ...]) -> None:
        for request in requests:
            room.call(rpc_of(request), caller, request)

    probe()
    assert room.serving()
    room.assert_no_findings()


def test_audit_rpcs_refuse_hostile_filters_sizes_and_page_tokens(room: Room) -> None:
    audit_parents = st.one_of(st.sampled_from((PARENT, f"collaborations/{SERVER_LOG}")), parents())
    methods = st.one_of(
        # The last, escaped for LIKE, is above SQLite's 50,000-byte pattern limit.
        st.sampled_from(
            ("", "ListAuditEvents", "/cleanroom.v1.PartnerService/UploadDataset", "%" * 30_000)
        ),
        TEXT,
    )
    requests = st.tuples(
        listings(
            audit_service_pb2.ListAuditEventsRequest,
            "auditEvents",
            audit_parents,
            start_time=TIMESTAMPS,
            end_time=TIMESTAMPS,
            method=methods,
            caller=st.one_of(st.sampled_from(("", "partners/acme")), TEXT),
            start_index=INT64,
            end_index=INT64,
        ),
        st.builds(
            audit_service_pb2.GetAuditCheckpointRequest, parent=audit_parents, tree_size=INT64
        ),
        st.builds(
            audit_service_pb2.GetAuditInclusionProofRequest,
            parent=audit_parents,
            index=INT64,
            tree_size=INT64,
        ),
        st.builds(
            audit_service_pb2.GetAuditConsistencyProofRequest,
            parent=audit_parents,
            first_tree_size=INT64,
            second_tree_size=INT64,
        ),
    )

    @fuzz(320)
    @given(caller=st.sampled_from(("ledger", "ledger", "operator", *CALLERS)), requests=requests)
    def probe(caller: str, requests: tuple[Any, ...]) -> None:
        for request in requests:
            room.call(rpc_of(request), caller, request)

    probe()
    assert room.serving()
    room.assert_no_findings()


def test_report_rpcs_refuse_hostile_questions_names_and_page_tokens(room: Room) -> None:
    datasets = resource_names("datasets", room.known_datasets)
    question = st.builds(
        overlap_report_pb2.OverlapReport,
        base_dataset=st.one_of(st.just(room.known_datasets[0]), datasets),
        other_datasets=st.lists(datasets, max_size=9),
        segment_column=st.one_of(st.sampled_from(("", SEGMENT, "email")), TEXT),
    )
    budgets = st.one_of(
        st.just(f"{PARENT}/privacyBudget"),
        st.builds("{}/privacyBudget".format, parents()),
        st.builds("{}/{}".format, parents(), TEXT),
        st.sampled_from(("privacyBudget", "/privacyBudget", f"{PARENT}/privacyBudget/..")),
        TEXT,
    )
    requests = st.tuples(
        st.builds(
            report_service_pb2.CreateOverlapReportRequest,
            parent=st.one_of(st.just(PARENT), parents()),
            overlap_report=question,
        ),
        st.builds(
            report_service_pb2.GetOverlapReportRequest,
            name=resource_names("overlapReports", (room.known_report,)),
        ),
        listings(
            report_service_pb2.ListOverlapReportsRequest,
            "overlapReports",
            st.one_of(st.just(PARENT), parents()),
        ),
        st.builds(report_service_pb2.GetPrivacyBudgetRequest, name=budgets),
    )

    @fuzz(300)
    @given(caller=st.sampled_from(("acme", "acme", *CALLERS)), requests=requests)
    def probe(caller: str, requests: tuple[Any, ...]) -> None:
        for request in requests:
            room.call(rpc_of(request), caller, request)

    probe()
    assert room.serving()
    room.assert_no_findings()


def test_upload_headers_with_hostile_fields_are_refused(room: Room) -> None:
    headers = st.builds(
        partner_service_pb2.DatasetUploadHeader,
        parent=st.one_of(st.just(PARENT), parents()),
        dataset_id=st.one_of(st.just(""), ids()),  # "": a fresh valid id
        identifier_types=st.lists(
            st.one_of(st.sampled_from(("email", "phone", "maid", "loyalty_id")), TEXT), max_size=5
        ),
        segment_columns=st.lists(
            st.one_of(st.sampled_from((SEGMENT, "email", "region")), TEXT), max_size=4
        ),
        key_check_value=st.one_of(st.just(KCV), st.sampled_from(("0" * 16, KCV.upper())), TEXT),
        row_count=INT64,
        checksum=st.one_of(st.sampled_from(("0" * 64, "F" * 64)), TEXT),
    )
    chunks = st.lists(
        st.tuples(st.sampled_from(("valid", "zero_rows")), st.integers(0, 20), st.integers(0, 99)),
        max_size=2,
    )

    @fuzz(500)
    @given(caller=st.sampled_from(("acme", "acme", "acme", *CALLERS)), first=headers, chunks=chunks)
    def probe(
        caller: str, first: partner_service_pb2.DatasetUploadHeader, chunks: list[Any]
    ) -> None:
        first.dataset_id = first.dataset_id or room.new_dataset_id()
        messages = [partner_service_pb2.UploadDatasetRequest(header=first)]
        messages += [chunk_message(chunk(*c)[0]) for c in chunks]
        room.call("UploadDataset", caller, messages)

    probe()
    assert room.serving()
    room.assert_no_findings()


HEADER_EXTREMES: dict[str, dict[str, Any]] = {
    "2000_segment_columns": {"segments": [f"s{i}" for i in range(2000)]},
    "17_segment_columns": {"segments": [f"s{i}" for i in range(17)]},
    "2000_identifier_types": {"types": ["email"] * 2000},
    "identifier_type_with_escape": {"types": ["email\x1b[2J"]},
    "segment_with_markup": {"segments": ["[conceal]tier"]},
    "segment_64_chars": {"segments": ["s" * 64]},
    "id_64_chars": {"dataset_id": "a" * 64},
    "id_with_newline": {"dataset_id": "acme\nforged"},
    "row_count_max": {"row_count": 2**63 - 1},
    "row_count_min": {"row_count": -(2**63)},
    "kcv_with_escape": {"kcv": "\x1b[2J" + KCV[4:]},
    "kcv_long": {"kcv": KCV * 1000},
}


@pytest.mark.parametrize("extreme", sorted(HEADER_EXTREMES))
def test_upload_header_extremes_are_refused_or_bounded(room: Room, extreme: str) -> None:
    fields: dict[str, Any] = {"dataset_id": room.new_dataset_id(), "row_count": 10}
    fields.update(HEADER_EXTREMES[extreme])
    dataset_id, row_count = fields.pop("dataset_id"), fields.pop("row_count")
    first = header(dataset_id, row_count=row_count, checksum="0" * 64, **fields)
    payload, _ = chunk("valid", 10, 1)
    room.call("UploadDataset", "acme", [first, chunk_message(payload)])
    assert room.serving()
    room.assert_no_findings()
    events = room.server.events("/cleanroom.v1.PartnerService/UploadDataset")
    logged = events[-1].entry().decode()
    assert len(logged) < 4000, f"{extreme}: a {len(logged)}-byte event"
    assert "\\u001b" not in logged, logged
    assert "\\n" not in logged.replace("\\\\n", ""), logged


# A stream shorter than declared ("more", "huge") holds the server 0.5 s before its refusal
# (partner_servicer.py tells a short stream from a cancelled one so): a few suffice.
DECLARED = ("exact",) * 16 + ("fewer", "more", "zero", "negative", "huge")
CHECKSUMS = ("right", "right", "right", "wrong", "upper", "short")
SHAPES = ("normal",) * 12 + (
    "no_messages", "header_only", "header_twice", "chunk_first", "empty_message",
)  # fmt: skip


def upload_messages(
    dataset_id: str, payloads: list[bytes], rows: int, stream: tuple[str, str, str]
) -> list[partner_service_pb2.UploadDatasetRequest]:
    """An upload stream of `payloads`: its header declares rows and checksum as `stream` says."""
    declared, checksum, shape = stream
    row_count = {
        "exact": rows, "fewer": rows - 1, "more": rows + 1, "zero": 0, "negative": -rows - 1,
        "huge": 2**63 - 1,
    }[declared]  # fmt: skip
    right = sha256(payloads)
    checksums = {"right": right, "wrong": sha256([b"x", *payloads]), "upper": right.upper()}
    first = header(dataset_id, row_count=row_count, checksum=checksums.get(checksum, right[:63]))
    body = [chunk_message(p) for p in payloads]
    return {
        "normal": [first, *body],
        "no_messages": [],
        "header_only": [first],
        "header_twice": [first, first, *body],
        "chunk_first": [*body, first],
        "empty_message": [first, partner_service_pb2.UploadDatasetRequest(), *body],
    }[shape]


def test_upload_streams_of_malformed_or_mismatched_batches_are_refused(room: Room) -> None:
    @fuzz(450)
    @given(
        caller=st.sampled_from(("acme", "acme", "acme", "acme", *CALLERS)),
        chunks=st.lists(CHUNKS, max_size=4),
        stream=st.tuples(
            st.sampled_from(DECLARED), st.sampled_from(CHECKSUMS), st.sampled_from(SHAPES)
        ),
    )
    def probe(
        caller: str, chunks: list[tuple[str, int, int]], stream: tuple[str, str, str]
    ) -> None:
        built = [chunk(*c) for c in chunks]
        payloads = [payload for payload, _ in built]
        rows = sum(r for _, r in built)
        messages = upload_messages(room.new_dataset_id(), payloads, rows, stream)
        room.call("UploadDataset", caller, messages)

    probe()
    assert room.serving()
    room.assert_no_findings()


# The rules found broken, one request each ---------------------------------------------------


def refusal(
    call: Callable[[], Any],
) -> tuple[grpc.StatusCode, str, error_details_pb2.ErrorInfo | None]:
    """The code, message and ErrorInfo of a call that must be refused."""
    with pytest.raises(grpc.RpcError) as refused:
        call()
    error: Any = refused.value
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        status = None
    info = None
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        detail.Unpack(info)
    return error.code(), error.details() or "", info


def test_timestamps_outside_the_protobuf_range_are_invalid_arguments(room: Room) -> None:
    audit = audit_service_pb2_grpc.AuditServiceStub(room.channels["ledger"])
    for start, end in [
        (timestamp_pb2.Timestamp(seconds=2**62), None),
        (None, timestamp_pb2.Timestamp(seconds=-(2**62))),
        (None, timestamp_pb2.Timestamp(seconds=0, nanos=-1)),
    ]:
        request = audit_service_pb2.ListAuditEventsRequest(
            parent=PARENT, start_time=start, end_time=end
        )
        room.requests["ListAuditEvents"] += 1
        room.expected_events += 1
        code, message, info = refusal(lambda r=request: audit.ListAuditEvents(r, timeout=TIMEOUT))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{code.name}: {message}"
        assert info is not None, message
        assert info.metadata.get("field") in {"start_time", "end_time"}, message


def test_page_tokens_with_positions_past_int64_are_invalid_page_tokens(room: Room) -> None:
    audit = audit_service_pb2_grpc.AuditServiceStub(room.channels["ledger"])
    reports = report_service_pb2_grpc.ReportServiceStub(room.channels["acme"])
    calls = [
        (
            "ListAuditEvents",
            lambda: audit.ListAuditEvents(
                audit_service_pb2.ListAuditEventsRequest(
                    parent=PARENT, page_token=page_token("auditEvents", PARENT, 2**63)
                ),
                timeout=TIMEOUT,
            ),
        ),
        (
            "ListOverlapReports",
            lambda: reports.ListOverlapReports(
                report_service_pb2.ListOverlapReportsRequest(
                    parent=PARENT, page_token=page_token("overlapReports", PARENT, -(2**70))
                ),
                timeout=TIMEOUT,
            ),
        ),
    ]
    for rpc, call in calls:
        room.requests[rpc] += 1
        room.expected_events += 1
        code, message, info = refusal(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{rpc}: {code.name} {message}"
        assert info is not None, f"{rpc}: {message}"
        assert info.reason == "INVALID_PAGE_TOKEN", f"{rpc}: {message}"


def test_a_method_filter_longer_than_sqlite_allows_in_like_is_not_an_internal_error(
    room: Room,
) -> None:
    audit = audit_service_pb2_grpc.AuditServiceStub(room.channels["ledger"])
    # Escaped for LIKE, 30,000 '%' become 60,000 bytes: above SQLite's 50,000-byte limit.
    request = audit_service_pb2.ListAuditEventsRequest(parent=PARENT, method="%" * 30_000)
    room.requests["ListAuditEvents"] += 1
    room.expected_events += 1
    try:
        audit.ListAuditEvents(request, timeout=TIMEOUT)  # matching nothing is a fine answer
    except grpc.RpcError as error:
        call: Any = error
        assert call.code() == grpc.StatusCode.INVALID_ARGUMENT, (
            f"{call.code().name}: {call.details()}"
        )


# Echoed in the message and in ErrorInfo, percent-encoded in one trailer and base64-encoded
# in the other, each is past gRPC's 16 KiB hard limit on the metadata a client accepts.
@pytest.mark.parametrize("dataset_id", ["a" * 20_000, "\u00e9" * 2_000], ids=["ascii", "accents"])
def test_a_long_name_is_refused_with_an_error_info_a_default_client_can_read(
    room: Room, dataset_id: str
) -> None:
    stub = partner_service_pb2_grpc.PartnerServiceStub(room.channels["acme"])
    name = f"{PARENT}/datasets/{dataset_id}"
    room.requests["GetDataset"] += 1
    room.expected_events += 1
    code, message, info = refusal(
        lambda: stub.GetDataset(partner_service_pb2.GetDatasetRequest(name=name), timeout=TIMEOUT)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{code.name}: {message[:300]}"
    assert info is not None, message[:300]
    assert info.reason == "INVALID_ID", message[:300]


def test_an_undecodable_request_is_invalid_argument_and_logged(room: Room) -> None:
    before = room.event_count()
    garbage = room.channels["acme"].unary_unary("/cleanroom.v1.PartnerService/GetDataset")
    room.requests["GetDataset"] += 1
    code, message, info = refusal(lambda: garbage(b"\x0a\x02\xc3\x28", timeout=TIMEOUT))
    added = room.event_count() - before
    room.expected_events += added
    assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{code.name}: {message}"
    assert info is not None
    assert added == 1


@pytest.mark.parametrize("kind", ["truncated", "random_bytes", "continuation_then_random"])
def test_a_chunk_that_is_no_whole_arrow_stream_is_a_malformed_record_batch(
    room: Room, kind: str
) -> None:
    stub = partner_service_pb2_grpc.PartnerServiceStub(room.channels["acme"])
    payloads = {
        "truncated": ipc_stream(WIRE, good_batch(np.random.default_rng(1), 20))[:-100],
        "random_bytes": b"\xff\xff\xff\xff\x00\x00\x00\x80" + bytes(40),
        "continuation_then_random": b"\xff\xff\xff\xff\xff\xff\xff\xff" + bytes(40),
    }
    messages = [
        header(room.new_dataset_id(), row_count=20, checksum=sha256([payloads[kind]])),
        chunk_message(payloads[kind]),
    ]
    room.requests["UploadDataset"] += 1
    room.expected_events += 1
    code, message, info = refusal(lambda: stub.UploadDataset(iter(messages), timeout=TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{code.name}: {message}"
    assert info is not None, message
    assert info.reason == "MALFORMED_RECORD_BATCH", message


def test_segment_values_that_are_not_utf8_are_refused(room: Room) -> None:
    stub = partner_service_pb2_grpc.PartnerServiceStub(room.channels["acme"])
    rng = np.random.default_rng(2)
    batch = pa.record_batch(
        [digest_array(random_digests(rng, 12)) for _ in TYPES] + [not_utf8(12)], schema=WIRE
    )
    payload = ipc_stream(WIRE, batch)
    messages = [
        header(room.new_dataset_id(), row_count=12, checksum=sha256([payload])),
        chunk_message(payload),
    ]
    room.requests["UploadDataset"] += 1
    room.expected_events += 1
    code, message, info = refusal(lambda: stub.UploadDataset(iter(messages), timeout=TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{code.name}: {message}"
    assert info is not None, message
    assert REASON.fullmatch(info.reason), info.reason


# Byte-level corruption, against a server in a subprocess -------------------------------------


@dataclass(repr=False)
class ServerProcess:
    """`python -m cleanroom serve` on a free loopback port, started again if it died."""

    pki: DemoPki
    root: Path
    process: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None
    requests: int = 0

    def __repr__(self) -> str:
        return f"ServerProcess({self.requests} requests)"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def start(self) -> None:
        self.close_channel()
        port = free_loopback_port()
        config = self.root / "cleanroom.toml"
        data = config_data(
            self.pki, self.root / "data", server={"max_upload_message_bytes": MESSAGE_LIMIT}
        )
        data["server"]["listen"] = f"127.0.0.1:{port}"
        config.write_bytes(tomli_w.dumps(data).encode())
        cwd = self.root / "cwd"  # so that a relative path the server wrote would show here
        cwd.mkdir(exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cleanroom", "serve", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                # A segfault prints the Python stack it happened in.
                env={**os.environ, "COLUMNS": "200", "PYTHONFAULTHANDLER": "1"},
            )
        files = self.pki.partners["acme"]
        self.channel = Connection(
            target=f"127.0.0.1:{port}",
            certificate=files.certificate,
            private_key=files.private_key,
            ca_certificate=self.pki.ca.certificate,
            server_name="localhost",
        ).channel()
        deadline = time.monotonic() + 60
        while not self.answers_health_check():
            assert self.process.poll() is None, f"the server exited: {self.log_tail()}"
            assert time.monotonic() < deadline, f"the server did not start: {self.log_tail()}"
            time.sleep(0.05)

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()

    def alive(self) -> bool:
        running = self.process is not None and self.process.poll() is None
        return running and self.answers_health_check()

    def answers_health_check(self) -> bool:
        try:
            response = health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.RpcError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def log_tail(self) -> str:
        status = self.process.poll() if self.process else None
        lines = [line.rstrip() for line in self.log.read_text(errors="replace").splitlines()]
        fatal = [i for i, line in enumerate(lines) if line.startswith("Fatal Python error")]
        if fatal:  # faulthandler's report: the error and the stack of the thread it hit
            current = next(i for i in range(fatal[-1], len(lines)) if "Current thread" in lines[i])
            end = lines.index("", current)
            shown = [lines[fatal[-1]], *lines[current:end]]
        else:
            shown = lines[-30:]
        return f"exit status {status}; its log:\n" + "\n".join(shown)

    def upload(self, messages: Sequence[Any]) -> grpc.RpcError | None:
        self.requests += 1
        stub = partner_service_pb2_grpc.PartnerServiceStub(self.channel)
        try:
            stub.UploadDataset(iter(messages), timeout=TIMEOUT)
        except grpc.RpcError as error:
            return error
        return None

    def close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def stop(self) -> None:
        self.close_channel()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)


@pytest.fixture(scope="module")
def server_process(
    pki: DemoPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    process = ServerProcess(pki, tmp_path_factory.mktemp("hostile-process"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def seeded_stream(seed: int, rows: int) -> tuple[bytes, np.ndarray[Any, Any]]:
    """A valid chunk of `rows` rows, and the offsets of its segment column."""
    batch = good_batch(np.random.default_rng(seed), rows)
    offsets = np.frombuffer(batch.column(SEGMENT).buffers()[1], dtype=np.int32)
    return ipc_stream(WIRE, batch), offsets[: rows + 1]


def corrupted_upload(dataset_id: str, payload: bytes, rows: int) -> list[Any]:
    """A header that matches the corrupted chunk's checksum and its intended rows."""
    return [
        header(dataset_id, row_count=rows, checksum=sha256([payload])),
        chunk_message(payload),
    ]


def test_segment_offsets_past_their_data_are_refused_without_crashing_the_server(
    server_process: ServerProcess,
) -> None:
    server_process.ensure_running()
    rows = 31  # the last label is not null (every third is), so its bytes are read
    good, offsets = seeded_stream(3, rows)
    at = good.index(offsets.tobytes())  # where the segment column's offsets are in the stream
    broken = offsets.copy()
    broken[-1] = 1 << 30  # the last label ends a gigabyte past the column's data
    payload = good[:at] + broken.tobytes() + good[at + len(broken.tobytes()) :]
    error: Any = server_process.upload(corrupted_upload("offsets-past-data", payload, rows))
    assert server_process.alive(), f"the upload crashed the server: {server_process.log_tail()}"
    assert error is not None, "a chunk with broken offsets was stored"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


def test_bit_flipped_arrow_batches_are_refused_without_crashing_the_server(
    server_process: ServerProcess,
) -> None:
    rows = 4
    good, offsets = seeded_stream(4, rows)
    # Flips land anywhere, but mostly in Arrow's structures rather than in digest bytes: the
    # record batch's metadata (buffer offsets and lengths) and the segment column's offsets.
    batch_message = [m.start() for m in re.finditer(b"\xff\xff\xff\xff", good)][1]
    metadata_bytes = int.from_bytes(good[batch_message + 4 : batch_message + 8], "little")
    at = good.index(offsets.tobytes())
    positions = st.one_of(
        st.integers(0, len(good) - 1),
        st.integers(batch_message, batch_message + 8 + metadata_bytes - 1),
        st.integers(at, at + len(offsets.tobytes()) - 1),
    )
    values = st.one_of(st.sampled_from((0x00, 0xFF, 0x7F, 0x80, 0x01)), st.integers(0, 255))
    findings = Findings()
    count = 0

    # No shrinking: each crash costs a restart; the first crashing input is the report.
    @fuzz(150, phases=(Phase.explicit, Phase.generate))
    @given(flips=st.lists(st.tuples(positions, values), min_size=1, max_size=3))
    def probe(flips: list[tuple[int, int]]) -> None:
        nonlocal count
        server_process.ensure_running()
        payload = bytearray(good)
        for position, value in flips:
            payload[position] = value
        count += 1
        messages = corrupted_upload(f"flip-{count}", bytes(payload), rows)
        error = server_process.upload(messages)
        assert server_process.alive(), (
            f"flipping bytes {flips} (position, new value) of a valid {len(good)}-byte chunk"
            f" crashed the server: {server_process.log_tail()}"
        )
        if error is not None:  # else the flips hit digest bytes only: a valid upload
            findings.check("UploadDataset", "acme", messages, error)

    probe()
    findings.assert_none()


# The module as a whole ----------------------------------------------------------------------


def test_at_least_5000_requests_reached_every_rpc(
    room: Room, server_process: ServerProcess
) -> None:
    total = sum(room.requests.values()) + server_process.requests
    assert total >= MIN_REQUESTS, f"only {total} requests: {dict(room.requests)}"
    assert set(room.requests) == set(SERVICES), dict(room.requests)
    thin = {rpc: n for rpc, n in room.requests.items() if n < 100}
    assert not thin, f"RPCs that got fewer than 100 requests: {thin}"


def test_every_request_left_exactly_one_event(room: Room) -> None:
    assert room.serving()
    added = room.event_count() - room.baseline_events
    assert added == room.expected_events


def test_nothing_was_written_outside_the_data_directory(
    room: Room, server_process: ServerProcess
) -> None:
    assert list((server_process.root / "cwd").iterdir()) == []
    assert {p.name for p in server_process.root.iterdir()} == {
        "cleanroom.toml", "server.log", "data", "cwd",
    }  # fmt: skip
    data_dir = room.server.data_dir
    assert room.server.interceptor.drain(30)
    assert snapshot(room.sandbox, data_dir) == room.sandbox_before
    for place in (
        Path("/tmp"),
        Path.cwd(),
        Path.cwd().parent,
        room.sandbox,
        room.sandbox.parent,
        Path.home(),
    ):
        assert not (place / MARKER).exists(), place / MARKER
    assert not list(room.sandbox.parent.rglob(f"*{MARKER}*"))
    assert {p.name for p in data_dir.iterdir()} <= {
        "LOCK", "cleanroom.sqlite3", "cleanroom.sqlite3-wal", "cleanroom.sqlite3-shm", "datasets", "tmp",
    }  # fmt: skip
    assert files_under(data_dir / "tmp") == []
    catalog = room.server.clean_room.catalog.dataset_file_names()
    stored = files_under(data_dir / "datasets")
    pattern = re.compile(rf"{COLLABORATION}--[a-z][a-z0-9-]{{0,62}}--[0-9a-f]{{32}}\.arrow")
    assert all(pattern.fullmatch(p.name) for p in stored), [p.name for p in stored]
    assert {p.name for p in stored} == catalog


def test_the_query_logs_still_verify(room: Room, tmp_path: Path) -> None:
    verifier = NoteVerifier(LOG_SIGNER.verifier_key)
    for partner, parent in (("ledger", PARENT), ("operator", f"collaborations/{SERVER_LOG}")):
        with CleanRoomClient(room.server.connection(partner), timeout=120) as client:
            try:
                verdict = verify_log(client, parent, verifier, AuditorState(tmp_path / partner))
            except ServerError as error:
                pytest.fail(f"{parent}: the auditor cannot read the log: {error}")
        assert verdict.ok, f"{parent}: index {verdict.first_bad_index}: {verdict.problem}"
        assert verdict.events_checked > 0
