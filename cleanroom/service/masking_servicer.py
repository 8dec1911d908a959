"""MaskingService: the masking hops of double-blind collaborations, for brands' toolkits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing

import grpc

from cleanroom.errors import DeadlineExceededError, InvalidArgumentError
from cleanroom.names import CollaborationName, MaskingHopName
from cleanroom.paging import decode_token, next_page, page_size
from cleanroom.privacy.coarse import size_range
from cleanroom.service import convert
from cleanroom.service.calls import AuditedCall, current_call
from cleanroom.service.idle import UploadPace, client_gone, paced, paced_sends
from cleanroom.service.partner_servicer import MESSAGE_LIMIT_METADATA
from cleanroom.usecases.hop_rows import MAX_CHUNK_BYTES
from cleanroom.usecases.masking import Masking
from cleanroom.v1 import masking_service_pb2 as pb
from cleanroom.v1 import masking_service_pb2_grpc as pb_grpc


class MaskingServicer(pb_grpc.MaskingServiceServicer):
    """Checks the caller, translates, calls `Masking`, translates back.

    Both streams run within the time limits of uploads, and each holds one of its
    brand's upload slots (the call interceptor counts them).
    """

    def __init__(
        self,
        masking: Masking,
        *,
        pace: UploadPace | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.masking = masking
        self.pace = pace or UploadPace()
        self.max_message_bytes = max_message_bytes

    def ListMaskingHops(  # noqa: N802 - gRPC's method name
        self, request: pb.ListMaskingHopsRequest, context: grpc.ServicerContext
    ) -> pb.ListMaskingHopsResponse:
        """Lists the hops pending for the caller's brand, a page at a time."""
        call = current_call()
        parent = CollaborationName.parse(request.parent)
        call.names(parent, collaboration=parent)
        limit = page_size(request.page_size, default=50)
        call.summarize(page_size=limit, continued=bool(request.page_token))
        after = decode_token(request.page_token, "maskingHops", str(parent), "")
        hops, token = next_page(
            self.masking.hops(call.caller, parent, after=after, limit=limit + 1),
            limit, "maskingHops", str(parent), lambda hop: hop.name.dataset,
        )  # fmt: skip
        call.summarize(masking_hops=len(hops))
        return pb.ListMaskingHopsResponse(
            masking_hops=[convert.masking_hop(h) for h in hops], next_page_token=token
        )

    def StartMaskingHop(  # noqa: N802 - gRPC's method name
        self, request: pb.StartMaskingHopRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StartMaskingHopResponse]:
        """Starts an attempt: its header first, then the blinded rows, at the client's pace."""
        call = current_call()
        name = MaskingHopName.parse(request.name)
        call.names(name, collaboration=name.parent)
        limit = min(self.max_message_bytes or MAX_CHUNK_BYTES, MAX_CHUNK_BYTES)
        attempt = self.masking.start(call.caller, name, max_chunk_bytes=limit)
        # Sizes in the log are coarse, as for uploads: auditors read it.
        call.summarize(
            attempt_id=attempt.attempt_id,
            rows=size_range(attempt.hop.row_count),
            chunks=len(attempt.chunks),
            bytes=size_range(attempt.bytes),
        )
        call.upload_bytes, call.upload_rows = attempt.bytes, attempt.hop.row_count
        yield pb.StartMaskingHopResponse(
            attempt=pb.MaskingHopAttempt(
                masking_hop=convert.masking_hop(attempt.hop),
                attempt_id=attempt.attempt_id,
                checksum=attempt.checksum,
            )
        )
        messages = (pb.StartMaskingHopResponse(record_batches=c) for c in attempt.chunks)
        yield from paced_sends(
            messages, self.pace, lambda m: len(m.record_batches), _stopper(call, context)
        )

    def CompleteMaskingHop(  # noqa: N802 - gRPC's method name
        self,
        request_iterator: Iterator[pb.CompleteMaskingHopRequest],
        context: grpc.ServicerContext,
    ) -> pb.CompleteMaskingHopResponse:
        """Receives a result header, then chunks; applies the hop only for a whole, valid one."""
        call = current_call()
        if self.max_message_bytes is not None:
            context.send_initial_metadata(((MESSAGE_LIMIT_METADATA, str(self.max_message_bytes)),))
        with closing(paced(request_iterator, self.pace, _payload_bytes)) as stream:
            return self._complete(call, stream, context)

    def _complete(
        self,
        call: AuditedCall,
        stream: Iterator[pb.CompleteMaskingHopRequest],
        context: grpc.ServicerContext,
    ) -> pb.CompleteMaskingHopResponse:
        first = next(stream, None)
        if first is None:
            raise InvalidArgumentError(
                "EMPTY_UPLOAD",
                "The stream was empty: send the `result` header, then the record batches.",
                field="result",
            )
        completion = convert.hop_completion(first)
        call.names(completion.name, collaboration=completion.name.parent)
        completion.check_form()
        call.summarize(
            attempt_id=completion.attempt_id, declared_rows=size_range(completion.row_count)
        )
        terminated = threading.Event()
        context.add_callback(terminated.set)
        with self.masking.complete(call.caller, completion) as result:
            try:
                for message in stream:
                    result.add_chunk(convert.hop_chunk(message))
                # As for uploads: a cancelled stream can end like a whole one.
                ended = time.monotonic()
                if result.rows != completion.row_count and client_gone(
                    context, terminated, ended + 0.5
                ):
                    return pb.CompleteMaskingHopResponse()  # nobody listens; nothing applied
                applied = self.masking.apply(
                    call.caller,
                    completion,
                    result,
                    lambda: client_gone(context, terminated, ended + 0.05),
                )
                if applied is None:
                    return pb.CompleteMaskingHopResponse()
            finally:
                call.upload_bytes, call.upload_rows = result.bytes, result.rows
                call.summarize(
                    chunks=result.chunks,
                    bytes=size_range(result.bytes),
                    rows=size_range(result.rows),
                )
        call.summarize(dataset_matchable=applied.matchable, masked_by=len(applied.mask_set))
        return pb.CompleteMaskingHopResponse(
            masking_hop=convert.masking_hop(applied.hop), dataset_matchable=applied.matchable
        )


def _payload_bytes(message: pb.CompleteMaskingHopRequest) -> int:
    """What a message adds to a stream's rate: its record batches' bytes."""
    return len(message.record_batches)


def _stopper(
    call: AuditedCall, context: grpc.ServicerContext
) -> Callable[[DeadlineExceededError], None]:
    """Ends a server stream whose client reads too slowly, its reason in the query log."""

    def stop(error: DeadlineExceededError) -> None:
        outcome = call.event.outcome
        outcome.status_code = grpc.StatusCode.DEADLINE_EXCEEDED.name
        outcome.reason, outcome.message = error.reason, error.message
        context.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leave it untyped

    return stop
