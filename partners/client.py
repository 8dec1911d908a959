"""The importable Python API of the partner toolkit: a mutually authenticated client.

Every server refusal becomes a `partners.errors.ServerError` subclass, mapped from the
gRPC status and its `ErrorInfo` in `_map_rpc_error`, the one place that knows gRPC errors.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pyarrow import ipc

from cleanroom.v1 import (
    audit_event_pb2,
    audit_service_pb2,
    audit_service_pb2_grpc,
    dataset_pb2,
    masking_service_pb2,
    masking_service_pb2_grpc,
    overlap_report_pb2,
    partner_service_pb2,
    partner_service_pb2_grpc,
    report_service_pb2,
    report_service_pb2_grpc,
    server_info_service_pb2,
    server_info_service_pb2_grpc,
)
from partners import errors
from partners.preparation.pipeline import DOUBLE_BLIND, read_digest_file

CHUNK_BYTES = 2 * 1024 * 1024  # well under gRPC's 4 MiB default message limit
DIGEST_BYTES = 32
# Room in a message for the protobuf framing around a chunk's bytes (a tag and a length).
FRAMING_BYTES = 64
# The response metadata in which the server tells an upload its message limit, in bytes.
MESSAGE_LIMIT_METADATA = "cleanroom-max-message-bytes"
CONNECT_SECONDS = 20.0
# The largest message the client takes: a masking hop's chunks are up to 4 MiB of rows,
# which gRPC's default receive limit (4 MiB for the whole message) would refuse.
RECEIVE_MESSAGE_BYTES = 8 * 1024 * 1024
# A masking hop's calls answer only once the server has multiplied every element (about
# 100 µs of a core each on a quiet machine): their deadline grows by this much an element.
HOP_SECONDS_PER_ELEMENT = 0.001
# Refusals for a limit of the server (its size, time, concurrency or storage limits), not
# for a privacy rule, though some share RESOURCE_EXHAUSTED with the privacy budget.
LIMIT_REASONS = frozenset(
    {
        "MESSAGE_TOO_LARGE",
        "SERVER_BUSY",
        "STORAGE_FULL",
        "TOO_MANY_CALLS",
        "TOO_MANY_UPLOADS",
        "UPLOAD_IDLE_TIMEOUT",
        "UPLOAD_TOO_LONG",
        "UPLOAD_TOO_SLOW",
    }
)
# Calls that change nothing, retried by gRPC with backoff while the server is UNAVAILABLE
# (restarting, or a connection dropped); uploads, reports and deletions are not retried.
IDEMPOTENT_CALLS = {
    "cleanroom.v1.PartnerService": ("GetDataset", "ListDatasets", "ListSharedDatasets"),
    "cleanroom.v1.ReportService": ("GetOverlapReport", "ListOverlapReports", "GetPrivacyBudget"),
    "cleanroom.v1.AuditService": (
        "ListAuditEvents",
        "GetAuditCheckpoint",
        "GetAuditInclusionProof",
        "GetAuditConsistencyProof",
    ),
    "cleanroom.v1.ServerInfoService": ("GetServerInfo",),
    "cleanroom.v1.MaskingService": ("ListMaskingHops",),
}
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
# gRPC stops retrying on a channel whose calls keep failing (a certificate the server
# refuses, a server that is down for good), so that only passing trouble costs retries.
RETRY_THROTTLING = {"maxTokens": 10, "tokenRatio": 0.5}

_ERRORS: dict[grpc.StatusCode, type[errors.ServerError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: errors.InvalidRequestError,
    grpc.StatusCode.UNAUTHENTICATED: errors.AccessDeniedError,
    grpc.StatusCode.PERMISSION_DENIED: errors.AccessDeniedError,
    grpc.StatusCode.NOT_FOUND: errors.NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: errors.ConflictError,
    grpc.StatusCode.ABORTED: errors.ConflictError,
    grpc.StatusCode.FAILED_PRECONDITION: errors.PrivacyRuleError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.PrivacyRuleError,
    grpc.StatusCode.UNAVAILABLE: errors.UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.UnavailableError,
    grpc.StatusCode.CANCELLED: errors.UnavailableError,
    grpc.StatusCode.UNIMPLEMENTED: errors.UnsupportedError,
    grpc.StatusCode.UNKNOWN: errors.ServerBugError,
    grpc.StatusCode.INTERNAL: errors.ServerBugError,
    grpc.StatusCode.DATA_LOSS: errors.ServerBugError,
}


def _map_rpc_error(
    error: grpc.RpcError, *, target: str | None = None, timeout: float | None = None
) -> errors.ServerError:
    """The toolkit error for a failed call, with the server's reason and metadata.

    `target` and `timeout`, when given, let a call that ran out of time say which server
    did not answer within how long.
    """
    code: grpc.StatusCode = error.code()
    reason, metadata, explained = code.name, {}, False
    try:
        status = rpc_status.from_call(cast(grpc.Call, error))  # every RpcError is a call
    except ValueError:  # a status that contradicts the call's: read the code alone
        status = None
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason, metadata, explained = info.reason, dict(info.metadata), True
    message = error.details() or code.name
    if reason in LIMIT_REASONS or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and not explained):
        # Without an ErrorInfo, RESOURCE_EXHAUSTED is gRPC's own message size limit.
        return errors.LimitError(code.name, reason, message, metadata)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and not explained and target and timeout:
        return errors.UnavailableError(
            code.name,
            "CALL_TIMED_OUT",
            f"{target} did not answer within {timeout:g} s. Retry, or allow more time with"
            " --timeout (CLEANROOM_TIMEOUT).",
            {"target": target, "timeout_seconds": f"{timeout:g}"},
        )
    kind = _ERRORS.get(code, errors.ServerBugError)
    return kind(code.name, reason, message, metadata)


@contextmanager
def _mapped_errors(target: str | None = None, timeout: float | None = None) -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as error:
        raise _map_rpc_error(error, target=target, timeout=timeout) from None


def _service_config() -> str:
    """The channel's service config: gRPC retries the idempotent calls with backoff."""
    names = [
        {"service": service, "method": method}
        for service, methods in IDEMPOTENT_CALLS.items()
        for method in methods
    ]
    return json.dumps(
        {
            "methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}],
            "retryThrottling": RETRY_THROTTLING,
        }
    )


@dataclass(frozen=True)
class Connection:
    """Where the server is and the files that prove who we are."""

    target: str
    certificate: Path
    private_key: Path
    ca_certificate: Path
    server_name: str | None = None

    def channel(self) -> grpc.Channel:
        """A channel over mutual TLS to the server."""
        try:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=self.ca_certificate.read_bytes(),
                private_key=self.private_key.read_bytes(),
                certificate_chain=self.certificate.read_bytes(),
            )
        except OSError as error:
            raise errors.InputError(
                "CERTIFICATE_FILE_UNREADABLE",
                f"Cannot read {error.filename}: {error.strerror}. Pass the files the operator"
                " gave you with --cert, --key and --ca (or CLEANROOM_CERT, CLEANROOM_KEY,"
                " CLEANROOM_CA).",
                {"path": str(error.filename)},
            ) from None
        options: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _service_config()),
            ("grpc.max_receive_message_length", RECEIVE_MESSAGE_BYTES),
        ]
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.secure_channel(self.target, credentials, options=options)


def _chunks(table: pa.Table, limit: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """The table as Arrow IPC streams of at most `limit` bytes, with their row counts.

    Chunks aim at half the limit (segment labels make rows uneven); one that still comes
    out larger is split in halves until it fits.
    """
    row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    rows_per_chunk = max(1, min(CHUNK_BYTES, limit // 2) // row_bytes)
    pending = list(reversed(table.to_batches(max_chunksize=rows_per_chunk)))
    while pending:
        batch = pending.pop()
        payload = _ipc_stream(table.schema, batch)
        if len(payload) > limit and batch.num_rows > 1:
            half = batch.num_rows // 2
            pending += [batch.slice(half), batch.slice(0, half)]
            continue
        yield batch.num_rows, payload


def _ipc_stream(schema: pa.Schema, batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


class _Chunking:
    """How an upload's table is cut into chunks, and the checksum of those chunks."""

    def __init__(self, table: pa.Table, limit: int) -> None:
        self.table = table
        self.limit = limit
        self.checksum = self._checksum()

    def fit(self, limit: int) -> None:
        """Cuts smaller chunks if the server's limit asks for them (the checksum follows)."""
        if limit < self.limit:
            self.limit = limit
            self.checksum = self._checksum()

    def _checksum(self) -> str:
        digest = hashlib.sha256()
        for _, chunk in _chunks(self.table, self.limit):
            digest.update(chunk)
        return digest.hexdigest()


def _message_limit(call: Any, timeout: float) -> int | None:
    """The message limit the server sent as the upload began (None if it did not say)."""
    got = threading.Event()
    metadata: list[Any] = []

    def read() -> None:
        metadata.extend(call.initial_metadata() or ())  # returns when sent, or the call ends
        got.set()

    threading.Thread(target=read, name="upload-limits", daemon=True).start()
    if not got.wait(timeout):
        return None  # a server too old to tell: the default chunks fit its default limit
    for key, value in metadata:
        if key == MESSAGE_LIMIT_METADATA and str(value).isdigit():
            return int(value)
    return None


def _upload_table(path: Path) -> tuple[pa.Table, Any]:
    """The digests file's table in the wire schema, and the file's description.

    The file is memory-mapped and its row groups are kept as the table's chunks: no copy
    is made of the digests until they are serialized into chunks.
    """
    info = read_digest_file(path)
    table = pq.read_table(path, memory_map=True)
    schema = pa.schema(
        [pa.field(t, pa.binary(DIGEST_BYTES)) for t in info.identifier_types]
        + [pa.field(s, pa.string()) for s in info.segment_columns]
    )
    return table.select(schema.names).cast(schema), info


def _bad_hop_stream(hop: str, what: str) -> errors.ServerBugError:
    """The error for an attempt's stream that is not what the protocol says."""
    return errors.ServerBugError(
        "DATA_LOSS",
        "MALFORMED_MASKING_HOP_ROWS",
        f"The server's stream for hop {hop} {what}; nothing was masked or sent back. Retry"
        " later, and tell the operator if it happens again.",
        {"masking_hop": hop},
    )


def _full_name(collaboration: str | None, collection: str, value: str) -> str:
    """A full resource name from a short id in the default collaboration, or the name itself."""
    if "/" in value or collaboration is None:
        return value
    return f"{_parent(collaboration)}/{collection}/{value}"


def _parent(collaboration: str) -> str:
    """`collaborations/ID` from an id; a name (anything with a `/`) is kept as it is."""
    return collaboration if "/" in collaboration else f"collaborations/{collaboration}"


class CleanRoomClient:
    """A partner's client of the clean room server. Use it as a context manager.

    With a default `collaboration`, every method that takes a resource name also takes a
    short id (`acme-customers` for `collaborations/ID/datasets/acme-customers`), and every
    `parent` may be the collaboration's id or left out.
    """

    def __init__(
        self,
        connection: Connection,
        *,
        timeout: float = 300.0,
        collaboration: str | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        """A client of the server at `connection`.

        Args:
            connection: Where the server is and who we are.
            timeout: Seconds each call may take (an upload: the whole upload).
            collaboration: The default collaboration, for short ids and left-out parents.
            connect_timeout: Seconds to wait for the first connection (TCP and the TLS
                handshake): the lesser of `timeout` and CONNECT_SECONDS unless given.
        """
        self.connection = connection
        self.collaboration = collaboration
        self.timeout = timeout
        self.connect_timeout = (
            connect_timeout if connect_timeout is not None else min(timeout, CONNECT_SECONDS)
        )
        self._channel = connection.channel()
        self._connected = False
        self._partners = partner_service_pb2_grpc.PartnerServiceStub(self._channel)
        self._reports = report_service_pb2_grpc.ReportServiceStub(self._channel)
        self._audit = audit_service_pb2_grpc.AuditServiceStub(self._channel)
        self._info = server_info_service_pb2_grpc.ServerInfoServiceStub(self._channel)
        self._masking = masking_service_pb2_grpc.MaskingServiceStub(self._channel)
        self._limits: server_info_service_pb2.ServerLimits | None = None

    @classmethod
    def from_profile(cls, profile: str | None = None, *, timeout: float = 300.0) -> Self:
        """A client for a connection profile of the partner config file (`partners.profiles`).

        The environment (CLEANROOM_SERVER, ..., CLEANROOM_COLLABORATION) wins over the
        profile, as on the command line; the profile is `profile`, else CLEANROOM_PROFILE,
        else the file's `default_profile`.

        Raises:
            InputError: If a setting is missing (MISSING_SETTING) or the profile is unknown.
        """
        from partners import profiles  # noqa: PLC0415 (only for this constructor)

        found = profiles.resolved({}, profiles.profile_name(profile))
        for key in ("server", "cert", "key", "ca"):
            if not found[key].value:
                raise errors.InputError(
                    "MISSING_SETTING",
                    f"No {key!r} is set: add it to the profile in {profiles.config_path()} or"
                    f" set {profiles.SETTINGS[key]}.",
                    {"setting": key},
                )
        connection = Connection(
            target=str(found["server"].value),
            certificate=Path(str(found["cert"].value)),
            private_key=Path(str(found["key"].value)),
            ca_certificate=Path(str(found["ca"].value)),
            server_name=found["server_name"].value,
        )
        return cls(connection, timeout=timeout, collaboration=found["collaboration"].value)

    def dataset_name(self, dataset: str) -> str:
        """The full name of a dataset given by name or by id in the default collaboration."""
        return _full_name(self.collaboration, "datasets", dataset)

    def report_name(self, report: str) -> str:
        """The full name of a report given by name or by id in the default collaboration."""
        return _full_name(self.collaboration, "overlapReports", report)

    def _parent_of(self, parent: str | None) -> str:
        if parent:
            return _parent(parent)
        if self.collaboration is None:
            raise errors.InputError(
                "NO_COLLABORATION",
                "No collaboration was given: pass it, or make the client with one"
                " (collaboration=, or a profile's collaboration).",
            )
        return _parent(self.collaboration)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        """Connects first (within the connect timeout), then maps the call's errors."""
        if not self._connected:
            self._connect()
        with _mapped_errors(self.connection.target, self.timeout):
            yield

    def _connect(self) -> None:
        """Waits for the first connection to succeed or fail, at most the connect timeout.

        A connection that fails (refused, or a TLS handshake that fails) lets the call go
        on and fail at once with gRPC's own UNAVAILABLE, which says why; only a server
        that never finishes connecting is reported here, by name.
        """
        settled = threading.Event()
        answered = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE)

        def watch(state: grpc.ChannelConnectivity) -> None:
            if state in answered:
                settled.set()

        self._channel.subscribe(watch, try_to_connect=True)
        try:
            if not settled.wait(self.connect_timeout):
                target = self.connection.target
                raise errors.UnavailableError(
                    "UNAVAILABLE",
                    "SERVER_NOT_ANSWERING",
                    f"{target} did not complete a connection within"
                    f" {self.connect_timeout:g} s (TCP and the TLS handshake): check --server"
                    " (CLEANROOM_SERVER) and that the server runs and is reachable.",
                    {"target": target, "connect_timeout_seconds": f"{self.connect_timeout:g}"},
                )
        finally:
            self._channel.unsubscribe(watch)
        self._connected = True

    def server_limits(self) -> server_info_service_pb2.ServerLimits | None:
        """What the server accepts (GetServerInfo), or None from a server too old to say."""
        if self._limits is None:
            try:
                with self._mapped():
                    response = self._info.GetServerInfo(
                        server_info_service_pb2.GetServerInfoRequest(), timeout=self.timeout
                    )
            except errors.UnsupportedError:
                return None
            self._limits = response.limits
        return self._limits

    def wait_until_ready(self, timeout: float) -> None:
        """Waits until the server accepts connections (for example, while it starts).

        Raises:
            UnavailableError: It did not within `timeout` seconds.
        """
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
            self._connected = True
        except grpc.FutureTimeoutError:
            raise errors.UnavailableError(
                "UNAVAILABLE",
                "SERVER_NOT_READY",
                f"{self.connection.target} did not accept a connection within {timeout:g} s.",
            ) from None

    def upload(
        self,
        digests: Path,
        *,
        dataset_id: str,
        progress: Callable[[int], None] | None = None,
        blind_key: bytes | None = None,
        masking_progress: Callable[[int], None] | None = None,
    ) -> dataset_pb2.Dataset:
        """Uploads a digests file written by `prepare` as a new dataset.

        Args:
            digests: The file `cleanroom-partner prepare` wrote.
            dataset_id: The new dataset's id within the file's collaboration.
            progress: Called with the number of rows of each chunk once it is sent.
            blind_key: For a double-blind collaboration, the brand's blind key: every digest
                `d` is sent as `k · P(d)` and the rows in a random order (SPEC section 8).
                A file masked by `prepare --blind-key` is sent as it is, without a key.
            masking_progress: With a blind key, called with the number of rows masked, once
                per identifier column.
        """
        table, info = _upload_table(digests)
        matching = partner_service_pb2.UPLOAD_MATCHING_SHARED_SECRET
        if info.matching == DOUBLE_BLIND:  # masked and shuffled by `prepare --blind-key`
            if blind_key is not None:
                from partners.masking.files import already_masked  # noqa: PLC0415

                raise already_masked(digests)
            matching = partner_service_pb2.UPLOAD_MATCHING_DOUBLE_BLIND
        elif blind_key is not None:
            from partners.masking import rows  # noqa: PLC0415 (libsodium only when masking)

            masked = rows.mask_digests(
                table, blind_key, info.identifier_types, progress=masking_progress
            )
            table = rows.shuffled(masked)
            matching = partner_service_pb2.UPLOAD_MATCHING_DOUBLE_BLIND

        def header(checksum: str) -> partner_service_pb2.UploadDatasetRequest:
            return partner_service_pb2.UploadDatasetRequest(
                header=partner_service_pb2.DatasetUploadHeader(
                    parent=f"collaborations/{info.collaboration_id}",
                    dataset_id=dataset_id,
                    identifier_types=info.identifier_types,
                    segment_columns=info.segment_columns,
                    key_check_value=info.key_check_value,
                    row_count=table.num_rows,
                    checksum=checksum,
                    matching=matching,
                )
            )

        response: partner_service_pb2.UploadDatasetResponse = self._stream_table(
            self._partners.UploadDataset,
            table,
            header,
            lambda chunk: partner_service_pb2.UploadDatasetRequest(record_batches=chunk),
            progress,
        )
        return response.dataset

    def _stream_table(
        self,
        method: Any,
        table: pa.Table,
        header: Callable[[str], Any],
        chunk: Callable[[bytes], Any],
        progress: Callable[[int], None] | None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Sends a table over a client-streaming call: a header, then its chunks.

        `header` makes the first message from the chunks' checksum; `chunk`, each later
        message from a chunk. Chunks fit the message limit the server tells as the call
        begins; `progress` is called with each chunk's rows once it is sent.
        """
        chunking = _Chunking(table, CHUNK_BYTES)
        started = threading.Event()
        calls: list[Any] = []

        def messages() -> Iterator[Any]:
            # The server tells its message limit as the call starts; the header's checksum
            # depends on the chunks, so they are sized before the header goes.
            started.wait()
            limit = _message_limit(calls[0], self.connect_timeout)
            if limit is not None:
                chunking.fit(limit - FRAMING_BYTES)
            yield header(chunking.checksum)
            for rows, payload in _chunks(table, chunking.limit):
                yield chunk(payload)
                if progress:
                    progress(rows)

        with self._mapped():
            calls.append(method.future(messages(), timeout=timeout or self.timeout))
            started.set()
            return calls[0].result()

    def get_dataset(self, name: str) -> dataset_pb2.Dataset:
        """A dataset of the caller's brand, by name."""
        request = partner_service_pb2.GetDatasetRequest(name=self.dataset_name(name))
        with self._mapped():
            return self._partners.GetDataset(request, timeout=self.timeout).dataset

    def _pages(self, method: Any, request: Any, items: str) -> Iterator[Any]:
        """Every item of a listing, page after page: `request` is sent with each token."""
        while True:
            with self._mapped():
                response = method(request, timeout=self.timeout)
            yield from getattr(response, items)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def list_datasets(self, parent: str | None = None) -> Iterator[dataset_pb2.Dataset]:
        """Every dataset of the caller's brand in a collaboration, page after page."""
        request = partner_service_pb2.ListDatasetsRequest(parent=self._parent_of(parent))
        yield from self._pages(self._partners.ListDatasets, request, "datasets")

    def list_shared_datasets(
        self, parent: str | None = None
    ) -> Iterator[dataset_pb2.SharedDataset]:
        """Every dataset shared in a collaboration (owner, types, segments; no sizes)."""
        request = partner_service_pb2.ListSharedDatasetsRequest(parent=self._parent_of(parent))
        yield from self._pages(self._partners.ListSharedDatasets, request, "shared_datasets")

    def delete_dataset(self, name: str) -> None:
        """Deletes a dataset of the caller's brand."""
        request = partner_service_pb2.DeleteDatasetRequest(name=self.dataset_name(name))
        with self._mapped():
            self._partners.DeleteDataset(request, timeout=self.timeout)

    def list_masking_hops(
        self, parent: str | None = None
    ) -> Iterator[masking_service_pb2.MaskingHop]:
        """Every masking hop that waits for the caller's brand in a collaboration."""
        request = masking_service_pb2.ListMaskingHopsRequest(parent=self._parent_of(parent))
        yield from self._pages(self._masking.ListMaskingHops, request, "masking_hops")

    def start_masking_hop(
        self, name: str, *, elements: int = 0, progress: Callable[[int], None] | None = None
    ) -> tuple[masking_service_pb2.MaskingHopAttempt, pa.Table]:
        """Starts a new attempt at a hop and receives its blinded rows.

        Every call is a new attempt, blinded afresh; only the newest can be completed.

        Args:
            name: The hop's name.
            elements: How many elements the hop carries (its rows times its types), which
                the server multiplies before it sends the first row: the call's deadline
                grows with them.
            progress: Called with the number of rows of each chunk once received.

        Returns:
            The attempt, and its rows (their chunks' checksum is the attempt's).

        Raises:
            ServerBugError: The rows were not what the attempt announced (DATA_LOSS).
        """
        request = masking_service_pb2.StartMaskingHopRequest(name=name)
        digest = hashlib.sha256()
        batches: list[pa.RecordBatch] = []
        schema: pa.Schema | None = None
        with self._mapped():
            stream: Any = self._masking.StartMaskingHop(
                request, timeout=self._hop_timeout(elements)
            )
            try:
                first = next(iter(stream), None)
                if first is None or first.WhichOneof("payload") != "attempt":
                    raise _bad_hop_stream(name, "did not begin with the attempt")
                attempt: masking_service_pb2.MaskingHopAttempt = first.attempt
                for message in stream:
                    if message.WhichOneof("payload") != "record_batches":
                        raise _bad_hop_stream(name, "sent a second attempt")
                    digest.update(message.record_batches)
                    try:
                        reader = ipc.open_stream(message.record_batches)
                        received = list(reader)
                    except pa.ArrowException:
                        raise _bad_hop_stream(name, "sent a chunk that is not Arrow IPC") from None
                    if schema is not None and not reader.schema.equals(schema):
                        raise _bad_hop_stream(name, "changed its schema between chunks")
                    schema = reader.schema
                    batches += received
                    if progress:
                        progress(sum(batch.num_rows for batch in received))
            finally:
                stream.cancel()  # a no-op once the stream ended; frees it on an error
        if digest.hexdigest() != attempt.checksum:
            raise _bad_hop_stream(name, "sent rows whose checksum is not the attempt's")
        if schema is None:
            schema = pa.schema(
                [pa.field(t, pa.binary(DIGEST_BYTES)) for t in attempt.masking_hop.identifier_types]
            )
        return attempt, pa.Table.from_batches(batches, schema=schema)

    def complete_masking_hop(
        self,
        name: str,
        *,
        attempt_id: str,
        rows: pa.Table,
        progress: Callable[[int], None] | None = None,
    ) -> masking_service_pb2.CompleteMaskingHopResponse:
        """Completes an attempt at a hop with its masked, shuffled rows.

        Args:
            name: The hop's name.
            attempt_id: The attempt's id, from `start_masking_hop`.
            rows: The attempt's rows, every element multiplied by the brand's blind key and
                the rows shuffled, with the columns the attempt sent.
            progress: Called with the number of rows of each chunk once it is sent.

        Raises:
            PrivacyRuleError: The attempt is no longer the hop's newest
                (MASKING_HOP_ATTEMPT_SUPERSEDED) or the hop was applied already
                (MASKING_HOP_ALREADY_APPLIED).
        """

        def header(checksum: str) -> masking_service_pb2.CompleteMaskingHopRequest:
            return masking_service_pb2.CompleteMaskingHopRequest(
                result=masking_service_pb2.MaskingHopResult(
                    name=name, attempt_id=attempt_id, row_count=rows.num_rows, checksum=checksum
                )
            )

        response: masking_service_pb2.CompleteMaskingHopResponse = self._stream_table(
            self._masking.CompleteMaskingHop,
            rows,
            header,
            lambda chunk: masking_service_pb2.CompleteMaskingHopRequest(record_batches=chunk),
            progress,
            timeout=self._hop_timeout(rows.num_rows * rows.num_columns),
        )
        return response

    def _hop_timeout(self, elements: int) -> float:
        """The deadline of a hop's call: the client's, and time for the server's pass."""
        return self.timeout + elements * HOP_SECONDS_PER_ELEMENT

    def create_report(
        self,
        parent: str | None = None,
        *,
        base: str,
        others: list[str],
        segment_column: str | None = None,
    ) -> overlap_report_pb2.OverlapReport:
        """Asks for an overlap report of `base` (the caller's) against `others`.

        Asking a question asked before returns the report released then, spending nothing
        (`create_report_response` tells which).
        """
        return self.create_report_response(
            parent, base=base, others=others, segment_column=segment_column
        ).overlap_report

    def create_report_response(
        self,
        parent: str | None = None,
        *,
        base: str,
        others: list[str],
        segment_column: str | None = None,
        validate_only: bool = False,
    ) -> report_service_pb2.CreateOverlapReportResponse:
        """Like `create_report`, with whether the report was a stored one (`reused`).

        With `validate_only`, a dry run: the response's `estimate` says what the report
        would cost and how accurate it would be, and nothing is computed or spent.
        """
        request = report_service_pb2.CreateOverlapReportRequest(
            parent=self._parent_of(parent),
            overlap_report=overlap_report_pb2.OverlapReport(
                base_dataset=self.dataset_name(base),
                other_datasets=[self.dataset_name(other) for other in others],
                segment_column=segment_column or "",
            ),
            validate_only=validate_only,
        )
        with self._mapped():
            return self._reports.CreateOverlapReport(request, timeout=self.timeout)

    def get_budget(self, parent: str | None = None) -> report_service_pb2.PrivacyBudget:
        """The collaboration's privacy budget: total, spent and remaining epsilon."""
        parent = self._parent_of(parent)
        request = report_service_pb2.GetPrivacyBudgetRequest(name=f"{parent}/privacyBudget")
        with self._mapped():
            return self._reports.GetPrivacyBudget(request, timeout=self.timeout).privacy_budget

    def get_report(self, name: str) -> overlap_report_pb2.OverlapReport:
        """A report released earlier to the caller's brand."""
        request = report_service_pb2.GetOverlapReportRequest(name=self.report_name(name))
        with self._mapped():
            return self._reports.GetOverlapReport(request, timeout=self.timeout).overlap_report

    def list_reports(self, parent: str | None = None) -> Iterator[overlap_report_pb2.OverlapReport]:
        """Every report released to the caller's brand in a collaboration, oldest first."""
        request = report_service_pb2.ListOverlapReportsRequest(parent=self._parent_of(parent))
        yield from self._pages(self._reports.ListOverlapReports, request, "overlap_reports")

    def list_audit_events(
        self,
        parent: str,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        method: str | None = None,
        caller: str | None = None,
        start_index: int = 0,
        end_index: int | None = None,
        page_size: int = 500,
    ) -> Iterator[audit_event_pb2.AuditEvent]:
        """The events of a collaboration's query log, oldest first, filtered.

        `caller` is a partner's id (`acme`) or its resource name (`partners/acme`).
        """
        if caller and "/" not in caller:
            caller = f"partners/{caller}"
        request = audit_service_pb2.ListAuditEventsRequest(
            parent=parent,
            page_size=page_size,
            method=method or "",
            caller=caller or "",
            start_index=start_index,
            end_index=end_index or 0,
        )
        if start_time:
            request.start_time.FromDatetime(start_time)
        if end_time:
            request.end_time.FromDatetime(end_time)
        yield from self._pages(self._audit.ListAuditEvents, request, "audit_events")

    def get_checkpoint(self, parent: str, tree_size: int = 0) -> str:
        """The log's signed checkpoint (a C2SP signed note): the latest, or of a size."""
        request = audit_service_pb2.GetAuditCheckpointRequest(parent=parent, tree_size=tree_size)
        with self._mapped():
            return self._audit.GetAuditCheckpoint(request, timeout=self.timeout).signed_note

    def get_witnessed_checkpoints(self, parent: str) -> tuple[str, list[str]]:
        """The latest checkpoint, and for each witness the latest one it cosigned."""
        request = audit_service_pb2.GetAuditCheckpointRequest(parent=parent)
        with _mapped_errors():
            response = self._audit.GetAuditCheckpoint(request, timeout=self.timeout)
        return response.signed_note, list(response.witnessed_notes)

    def add_cosignature(self, parent: str, tree_size: int, cosignature: str) -> str:
        """Gives the server a witness's cosignature line; returns the cosigned checkpoint."""
        request = audit_service_pb2.AddAuditCosignatureRequest(
            parent=parent, tree_size=tree_size, cosignature=cosignature
        )
        with _mapped_errors():
            return self._audit.AddAuditCosignature(request, timeout=self.timeout).cosigned_note

    def inclusion_proof(self, parent: str, index: int, tree_size: int) -> list[bytes]:
        """The RFC 9162 audit path of event `index` in the log of `tree_size` events."""
        request = audit_service_pb2.GetAuditInclusionProofRequest(
            parent=parent, index=index, tree_size=tree_size
        )
        with self._mapped():
            return list(self._audit.GetAuditInclusionProof(request, timeout=self.timeout).hashes)

    def consistency_proof(self, parent: str, first: int, second: int) -> list[bytes]:
        """The RFC 9162 proof that the log of size `second` extends that of size `first`."""
        request = audit_service_pb2.GetAuditConsistencyProofRequest(
            parent=parent, first_tree_size=first, second_tree_size=second
        )
        with self._mapped():
            response = self._audit.GetAuditConsistencyProof(request, timeout=self.timeout)
        return list(response.hashes)
