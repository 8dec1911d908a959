"""PartnerService: datasets, for brands' data engineers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing

import grpc

from cleanroom.errors import InvalidArgumentError
from cleanroom.names import CollaborationName, DatasetName
from cleanroom.paging import decode_token, next_page, page_size
from cleanroom.privacy.coarse import size_range
from cleanroom.service import convert
from cleanroom.service.calls import AuditedCall, current_call
from cleanroom.service.idle import UploadPace, client_gone, paced
from cleanroom.usecases.datasets import Datasets
from cleanroom.v1 import partner_service_pb2 as pb
from cleanroom.v1 import partner_service_pb2_grpc as pb_grpc

# The response metadata in which an upload is told the server's message limit, in bytes.
MESSAGE_LIMIT_METADATA = "cleanroom-max-message-bytes"


class PartnerServicer(pb_grpc.PartnerServiceServicer):
    """Checks the caller, translates, calls `Datasets`, translates back."""

    def __init__(
        self,
        datasets: Datasets,
        *,
        pace: UploadPace | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.datasets = datasets
        self.pace = pace or UploadPace()
        self.max_message_bytes = max_message_bytes

    def UploadDataset(  # noqa: N802 - gRPC's method name
        self, request_iterator: Iterator[pb.UploadDatasetRequest], context: grpc.ServicerContext
    ) -> pb.UploadDatasetResponse:
        """Receives a header, then chunks; commits only a complete, valid stream.

        The stream is read within the server's time limits (`paced`), from its first
        message: a client that never sends its header holds nothing for long either.
        """
        call = current_call()
        if self.max_message_bytes is not None:
            # Before anything is read: the client sizes its chunks (and so the checksum
            # in its header) to this.
            context.send_initial_metadata(((MESSAGE_LIMIT_METADATA, str(self.max_message_bytes)),))
        with closing(paced(request_iterator, self.pace, _payload_bytes)) as stream:
            return self._upload(call, stream, context)

    def _upload(
        self,
        call: AuditedCall,
        stream: Iterator[pb.UploadDatasetRequest],
        context: grpc.ServicerContext,
    ) -> pb.UploadDatasetResponse:
        first = next(stream, None)
        if first is None:
            raise InvalidArgumentError(
                "EMPTY_UPLOAD",
                "The upload stream was empty: send a header, then the record batches.",
                field="header",
            )
        header = convert.upload_header(first)
        # The parent is a checked name already; the rest is checked before any of it is
        # logged, so that the collaboration's log holds no malformed id or column name.
        call.names(collaboration=header.parent)
        header.check_form()
        call.names(header.dataset_name)
        call.summarize(
            dataset_id=header.dataset_id,
            identifier_types=list(header.identifier_types),
            segment_columns=list(header.segment_columns),
            declared_rows=size_range(header.row_count),
            key_check_value=header.key_check_value,
            matching=header.matching.value,
        )
        terminated = threading.Event()
        context.add_callback(terminated.set)
        with self.datasets.upload(call.caller, header) as upload:
            try:
                for message in stream:
                    upload.add_chunk(convert.upload_chunk(message))
                # A cancelled stream can end like a whole one a moment before gRPC marks
                # the call cancelled: wait for its end a while before calling it short,
                # and let a whole one settle before it becomes visible.
                ended = time.monotonic()
                if upload.rows != header.row_count and client_gone(
                    context, terminated, ended + 0.5
                ):
                    return pb.UploadDatasetResponse()  # nobody listens; nothing was stored
                record = self.datasets.commit(
                    call.caller, upload, lambda: client_gone(context, terminated, ended + 0.05)
                )
                if record is None:
                    return pb.UploadDatasetResponse()
            finally:
                call.upload_bytes, call.upload_rows = upload.bytes, upload.rows
                # Sizes in the log are coarse: auditors read it (README "Privacy model").
                call.summarize(
                    chunks=upload.chunks,
                    bytes=size_range(upload.bytes),
                    rows=size_range(upload.rows),
                )
        return pb.UploadDatasetResponse(
            dataset=convert.dataset(record, self.datasets.status(record))
        )

    def GetDataset(  # noqa: N802 - gRPC's method name
        self, request: pb.GetDatasetRequest, context: grpc.ServicerContext
    ) -> pb.GetDatasetResponse:
        """Returns the description of one of the caller's datasets."""
        call = current_call()
        name = DatasetName.parse(request.name)
        call.names(name, collaboration=name.parent)
        record = self.datasets.get(call.caller, name)
        return pb.GetDatasetResponse(dataset=convert.dataset(record, self.datasets.status(record)))

    def ListDatasets(  # noqa: N802 - gRPC's method name
        self, request: pb.ListDatasetsRequest, context: grpc.ServicerContext
    ) -> pb.ListDatasetsResponse:
        """Lists the caller's datasets in a collaboration, a page at a time."""
        call = current_call()
        parent = CollaborationName.parse(request.parent)
        call.names(parent, collaboration=parent)
        limit = page_size(request.page_size, default=50)
        call.summarize(page_size=limit, continued=bool(request.page_token))
        after = decode_token(request.page_token, "datasets", str(parent), "")
        records, token = next_page(
            self.datasets.list(call.caller, parent, after=after, limit=limit + 1),
            limit, "datasets", str(parent), lambda record: record.name.dataset,
        )  # fmt: skip
        return pb.ListDatasetsResponse(
            datasets=[convert.dataset(r, self.datasets.status(r)) for r in records],
            next_page_token=token,
        )

    def DeleteDataset(  # noqa: N802 - gRPC's method name
        self, request: pb.DeleteDatasetRequest, context: grpc.ServicerContext
    ) -> pb.DeleteDatasetResponse:
        """Deletes one of the caller's datasets."""
        call = current_call()
        name = DatasetName.parse(request.name)
        call.names(name, collaboration=name.parent)
        record = self.datasets.delete(call.caller, name)
        call.summarize(deleted_rows=size_range(record.row_count))
        return pb.DeleteDatasetResponse()

    def ListSharedDatasets(  # noqa: N802 - gRPC's method name
        self, request: pb.ListSharedDatasetsRequest, context: grpc.ServicerContext
    ) -> pb.ListSharedDatasetsResponse:
        """Lists every dataset of a collaboration, without sizes, to its members."""
        call = current_call()
        parent = CollaborationName.parse(request.parent)
        call.names(parent, collaboration=parent)
        limit = page_size(request.page_size, default=50)
        call.summarize(page_size=limit, continued=bool(request.page_token))
        after = decode_token(request.page_token, "sharedDatasets", str(parent), "")
        records, token = next_page(
            self.datasets.list_shared(call.caller, parent, after=after, limit=limit + 1),
            limit, "sharedDatasets", str(parent), lambda record: record.name.dataset,
        )  # fmt: skip
        return pb.ListSharedDatasetsResponse(
            shared_datasets=[convert.shared_dataset(r) for r in records], next_page_token=token
        )


def _payload_bytes(message: pb.UploadDatasetRequest) -> int:
    """What a message adds to an upload's rate: its record batches' bytes."""
    return len(message.record_batches)
