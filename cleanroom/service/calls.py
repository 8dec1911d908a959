"""Every call, audited: identity from the client certificate, one query log event per call.

`CallInterceptor` wraps every method of the server. It identifies the caller, gives the
servicer an `AuditedCall` to describe the call in, maps domain errors to statuses, and
appends exactly one event to the query log when the call ends, however it ends.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import grpc

from cleanroom.audit.log import AuditEvent, AuditLog
from cleanroom.errors import (
    MAX_VALUE_CHARS,
    CleanRoomError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
    clip,
    escaped,
)
from cleanroom.names import SERVER_LOG, CollaborationName
from cleanroom.ops.metrics import CallMetrics, CallOutcome
from cleanroom.service.status import status_code, to_status
from cleanroom.storage.refusals import storage_refusal
from cleanroom.tls.pki import certificate_identities
from cleanroom.usecases.access import AccessPolicy, Caller

log = logging.getLogger(__name__)
# The access log: one event per call, apart so that operators can route or filter it.
access_log = logging.getLogger("cleanroom.calls")

if TYPE_CHECKING:
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:  # grpc's classes are not generic at run time
    _ServerInterceptor = grpc.ServerInterceptor

_CURRENT: contextvars.ContextVar[AuditedCall] = contextvars.ContextVar("audited_call")


class AuditedCall:
    """What the servicer tells the query log about the call under way."""

    def __init__(self, caller: Caller, method: str) -> None:
        self.caller = caller
        self.collaboration: CollaborationName | None = None
        self.event = AuditEvent(method=method, caller=caller.label)
        # The same id in the operator's log line and the query log's event ties them.
        self.request_id = uuid.uuid4().hex[:16]
        self.event.request_summary["request_id"] = self.request_id
        self.started = time.monotonic()
        # An upload's exact size, for the operator's metrics only: the query log, which
        # auditors read, holds it coarsened (README "Privacy model").
        self.upload_bytes = 0
        self.upload_rows = 0
        # Refuses the call before any work when the collaboration's log is unsound.
        self.guard: Callable[[CollaborationName], None] = lambda _: None

    def names(self, *resources: object, collaboration: CollaborationName | None = None) -> None:
        """Records the resources the call names, and the collaboration whose log gets it."""
        room = MAX_RESOURCES - len(self.event.resources)
        self.event.resources.extend(clip(str(r), MAX_VALUE_CHARS) for r in resources[:room])
        if collaboration is not None and self.collaboration is None:
            self.collaboration = collaboration
            self.guard(collaboration)

    def summarize(self, **summary: Any) -> None:
        """Adds request parameters to the event: never data, never identifiers.

        Strings and lists are bounded, so that hostile requests cannot bloat the log.
        """
        self.event.request_summary.update({k: _bounded(v) for k, v in summary.items()})


MAX_RESOURCES = 20


def _bounded(value: Any) -> Any:
    if isinstance(value, str):  # one printable line: a filter or name a caller sent
        return clip(escaped(value), MAX_VALUE_CHARS)
    if isinstance(value, list | tuple):
        return [_bounded(v) for v in value[:MAX_RESOURCES]]
    return value


def current_call() -> AuditedCall:
    """The audited call of the servicer method running on this thread."""
    return _CURRENT.get()


# The standard services stay outside the call limits, so that probes and tools answer
# while the clean room's own services are busy (they are still identified and logged).
UNLIMITED_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass(frozen=True)
class CallLimits:
    """What one caller, and all together, may run at once, and how large a message may be.

    Attributes:
        max_calls_per_partner: Calls of one caller (partner) at a time.
        max_uploads_per_partner: Streaming calls (uploads, masking hops) of one caller at
            a time.
        max_message_bytes: The largest request message handled; larger ones are refused
            with MESSAGE_TOO_LARGE (the transport lets somewhat larger ones through, so
            that the refusal carries an ErrorInfo).
    """

    max_calls_per_partner: int | None = None
    max_uploads_per_partner: int | None = None
    max_message_bytes: int | None = None


class CallInterceptor(_ServerInterceptor):
    """Identifies, audits and maps the errors of every call the server handles."""

    def __init__(
        self,
        access: AccessPolicy,
        audit_log: AuditLog,
        *,
        max_calls: int | None = None,
        metrics: CallMetrics | None = None,
        unaudited: tuple[str, ...] = (),
        limits: CallLimits | None = None,
    ) -> None:
        # `metrics` counts every call; calls of the `unaudited` services (health, reflection)
        # are counted and logged but not appended to the signed logs: probes would fill them.
        self.access = access
        self.audit_log = audit_log
        self.max_calls = max_calls
        self.metrics = metrics
        self.unaudited = unaudited
        self.limits = limits or CallLimits()
        self._identities: tuple[object, dict[bytes, Caller]] = (None, {})
        self._in_flight = 0
        self._running: Counter[tuple[str, str]] = Counter()  # (kind of limit, caller)
        self._idle = threading.Condition()

    def drain(self, timeout: float) -> bool:
        """Waits until no call is running (every event appended); False if time ran out.

        gRPC's stop returns before the handlers of cancelled calls have finished: the
        server waits here before it closes the database, so no event is lost.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wraps the method's handler so that each call runs inside `_audited`."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kinds = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        for attribute, make_handler in kinds.items():
            behavior = getattr(handler, attribute)
            if behavior is not None:
                requests = attribute.startswith("stream_")
                audited = self._audited_stream if attribute.endswith("_stream") else self._audited
                return make_handler(
                    audited(behavior, method, requests=requests),
                    request_deserializer=_tolerant(
                        handler.request_deserializer, self.limits.max_message_bytes
                    ),
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _audited(
        self, behavior: Callable[..., Any], method: str, *, requests: bool
    ) -> Callable[..., Any]:
        @functools.wraps(behavior)
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            with self._call(method, context, streaming=requests):
                return behavior(_decoded(request, requests), context)

        return run

    def _audited_stream(
        self, behavior: Callable[..., Any], method: str, *, requests: bool
    ) -> Callable[..., Any]:
        @functools.wraps(behavior)
        def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # A response stream moves data like an upload does: it holds an upload slot.
            with self._call(method, context, streaming=True):
                yield from behavior(_decoded(request, requests), context)

        return run

    @contextmanager
    def _call(
        self, method: str, context: grpc.ServicerContext, *, streaming: bool = False
    ) -> Iterator[AuditedCall]:
        """One call: the caller identified, its failure mapped, its event appended at the end."""
        auth = context.auth_context()
        pem = (auth.get("x509_pem_cert") or [b""])[0]
        pinned = self.access.pin()  # one configuration snapshot for the whole call
        call = AuditedCall(self._identify(cast(bytes, pem)), method)
        call.guard = functools.partial(self._guard, call.caller)
        token = _CURRENT.set(call)
        held: list[tuple[str, str]] = []
        if not method.startswith(UNLIMITED_SERVICES):
            held = [("all", ""), ("calls", call.caller.label)]
            if streaming:
                held.append(("uploads", call.caller.label))
        with self._idle:
            self._in_flight += 1
            self._running.update(held)
            busy = self._over_limit(held)
            if busy is not None:  # a refused call holds no slot: refusals cannot crowd out
                self._running.subtract(held)
                held = []
        try:
            if busy is not None:
                raise busy
            yield call
        except Exception as error:
            self._fail(call, context, error)
        finally:
            _CURRENT.reset(token)
            try:
                self._finish(call, context)
            finally:
                self._record(call)
                self.access.unpin(pinned)
                with self._idle:
                    self._in_flight -= 1
                    self._running.subtract(held)
                    self._idle.notify_all()

    def _over_limit(self, held: list[tuple[str, str]]) -> ResourceExhaustedError | None:
        """The refusal of a call that takes its caller or the server past a limit, if any."""
        limits = {
            "all": self.max_calls,
            "calls": self.limits.max_calls_per_partner,
            "uploads": self.limits.max_uploads_per_partner,
        }
        for kind, caller in reversed(held):  # the caller's own limits first: they say more
            limit = limits[kind]
            if limit is None or self._running[(kind, caller)] <= limit:
                continue
            if kind == "all":
                return ResourceExhaustedError(
                    "SERVER_BUSY",
                    f"The server is serving its {limit} calls at a time. Retry in a"
                    " moment, with backoff.",
                    max_calls=limit,
                )
            if kind == "calls":
                return ResourceExhaustedError(
                    "TOO_MANY_CALLS",
                    f"{caller} has {limit} calls running, the most one partner may run at"
                    " once. Wait for one to end, then retry.",
                    max_calls_per_partner=limit,
                )
            return ResourceExhaustedError(
                "TOO_MANY_UPLOADS",
                f"{caller} has {limit} uploads running, the most one partner may run at"
                " once. Wait for one to end, then retry.",
                max_uploads_per_partner=limit,
            )
        return None

    def _guard(self, caller: Caller, collaboration: CollaborationName) -> None:
        """UNAVAILABLE for a member naming a collaboration whose log the server refuses.

        Only members learn it: the others are refused for who they are, as before.
        """
        if self.access.collaboration(collaboration) and self.access.roles(caller, collaboration):
            self.audit_log.require_consistent(collaboration.collaboration)

    def _identify(self, pem: bytes) -> Caller:
        if not pem:
            return Caller("", (), None)
        # Cached per configuration: after a reload, certificates map to partners afresh.
        config = self.access.config
        cached_for, cache = self._identities
        if cached_for is not config:
            cache = {}
            self._identities = (config, cache)
        caller = cache.get(pem)
        if caller is None:
            identity = certificate_identities(pem)
            names = (*identity.dns_names, *identity.uri_names, *identity.ip_addresses)
            caller = Caller(identity.subject, names, config.partner_for(names))
            if len(cache) < 256:
                cache[pem] = caller
        return caller

    def _record(self, call: AuditedCall) -> None:
        """Counts the finished call and writes its line of the access log."""
        event, outcome = call.event, call.event.outcome
        seconds = time.monotonic() - call.started
        collaboration = call.collaboration.collaboration if call.collaboration else ""
        if self.metrics is not None:
            self.metrics.observe(
                CallOutcome(
                    method=event.method,
                    status=outcome.status_code,
                    reason=outcome.reason,
                    seconds=seconds,
                    partner=call.caller.partner.id if call.caller.partner else "unknown",
                    collaboration=collaboration if event.log != SERVER_LOG else "",
                    upload_bytes=call.upload_bytes,
                    upload_rows=call.upload_rows,
                )
            )
        if outcome.status_code == grpc.StatusCode.INTERNAL.name:
            level = logging.ERROR
        elif outcome.reason == "SERVER_BUSY" or outcome.status_code == "UNAVAILABLE":
            level = logging.WARNING
        elif event.method.startswith(self.unaudited):
            level = logging.DEBUG  # probes and reflection come often and say little
        else:
            level = logging.INFO
        access_log.log(
            level,
            "call",
            extra={
                "method": event.method,
                "caller": event.caller,
                "collaboration": collaboration,
                "status": outcome.status_code,
                "reason": outcome.reason,
                "duration_ms": round(seconds * 1000, 3),
                "request_id": call.request_id,
            },
        )

    def _fail(self, call: AuditedCall, context: grpc.ServicerContext, error: Exception) -> None:
        outcome = call.event.outcome
        if not context.is_active():
            # The client cancelled or went away: whatever failed after that is moot.
            outcome.status_code = grpc.StatusCode.CANCELLED.name
            outcome.message = outcome.message or "The client cancelled the call or went away."
            context.abort(grpc.StatusCode.CANCELLED, outcome.message)
        refusal = storage_refusal(error)
        if refusal is not None:
            log.warning("%s refused, storage trouble: %s", call.event.method, error)
            error = refusal
        if isinstance(error, CleanRoomError):
            outcome.status_code = status_code(error).name
            outcome.reason, outcome.message = error.reason, error.message
            context.abort_with_status(to_status(error))
        incident = uuid.uuid4().hex[:12]
        log.exception("internal error %s in %s", incident, call.event.method)
        outcome.status_code = grpc.StatusCode.INTERNAL.name
        outcome.reason = "INTERNAL_ERROR"
        outcome.message = f"Internal error {incident}: a bug; the operator's log has the details."
        context.abort(grpc.StatusCode.INTERNAL, outcome.message)

    def _finish(self, call: AuditedCall, context: grpc.ServicerContext) -> None:
        event = call.event
        if event.outcome.status_code == "OK":
            # A handler may set a status without raising (the health service does).
            # grpc-stubs predate ServicerContext.code() and .details() (grpcio 1.38).
            code = cast(Any, context).code()
            if code not in (None, grpc.StatusCode.OK):
                event.outcome.status_code = code.name
                details = cast(Any, context).details() or ""
                if isinstance(details, bytes):  # gRPC keeps details as it was given, or bytes
                    details = details.decode("utf-8", "replace")
                event.outcome.message = clip(str(details), MAX_VALUE_CHARS * 5)
            elif not context.is_active():
                event.outcome.status_code = grpc.StatusCode.CANCELLED.name
        if call.collaboration and self.access.collaboration(call.collaboration):
            event.log = call.collaboration.collaboration
            event.caller_roles = tuple(sorted(self.access.roles(call.caller, call.collaboration)))
        else:
            event.log = SERVER_LOG
        if event.method.startswith(self.unaudited):
            return  # counted in the metrics and the access log instead (SPEC section 6)
        if self.audit_log.inconsistency(event.log) is not None:
            event.log = SERVER_LOG  # never extended: the refusal goes to the server log
        try:
            self.audit_log.append(event)
        except UnavailableError as error:
            self._refuse_unsound_log(event, context, error)
        except Exception as error:
            # No call may succeed unlogged: fail it, and tell the operator why.
            log.exception("could not append to query log %s", event.log)
            if context.is_active():
                refusal = storage_refusal(error)
                if refusal:
                    context.abort_with_status(to_status(refusal))
                context.abort(
                    grpc.StatusCode.INTERNAL,
                    "The query log could not be written, so the call was refused; the"
                    " operator's log has the details.",
                )

    def _refuse_unsound_log(
        self, event: AuditEvent, context: grpc.ServicerContext, error: UnavailableError
    ) -> None:
        """The log turned out unsound just now: the call refused, its event in the server log."""
        if event.log != SERVER_LOG:
            event.outcome.status_code = grpc.StatusCode.UNAVAILABLE.name
            event.outcome.reason, event.outcome.message = error.reason, error.message
            event.log = SERVER_LOG
            with contextlib.suppress(CleanRoomError):  # refused either way
                self.audit_log.append(event)
        if context.is_active():
            context.abort_with_status(to_status(error))


class _Undecodable:
    """A request message that did not decode; refused inside the audited call."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


class _Oversized:
    """A request message larger than the server handles; refused inside the audited call."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit


def _tolerant(
    deserializer: Callable[[bytes], Any] | None, max_bytes: int | None = None
) -> Callable[[bytes], Any] | None:
    """The deserializer, returning `_Undecodable` instead of failing outside any call.

    gRPC answers a request that fails to decode with INTERNAL before the interceptor runs,
    unaudited; this way the call is refused as INVALID_ARGUMENT, and logged. A message
    over `max_bytes` is not decoded at all (`_Oversized`).
    """
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        if max_bytes is not None and len(data) > max_bytes:
            return _Oversized(len(data), max_bytes)
        try:
            return deserializer(data)
        except Exception as error:
            return _Undecodable(str(error))

    return decode


def _refuse_undecodable(message: Any) -> Any:
    if isinstance(message, _Oversized):
        raise ResourceExhaustedError(
            "MESSAGE_TOO_LARGE",
            f"A request message of {message.size} bytes is larger than the server's limit of"
            f" {message.limit} bytes (`server.max_upload_message_bytes`). Send smaller"
            " messages: `cleanroom-partner upload` sizes its chunks to the server's limit.",
            message_bytes=message.size,
            max_upload_message_bytes=message.limit,
        )
    if isinstance(message, _Undecodable):
        raise InvalidArgumentError(
            "MALFORMED_REQUEST",
            "The request is not a valid protobuf message of this method"
            f" ({clip(message.problem, 100)}). Send it with the cleanroom.v1 API's messages.",
        )
    return message


def _decoded(request: Any, streams: bool) -> Any:
    """The request (or request stream) with undecodable messages refused as they come."""
    if streams:
        return (_refuse_undecodable(m) for m in request)
    return _refuse_undecodable(request)
