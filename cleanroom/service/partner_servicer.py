"""PartnerService: datasets, for brands' data engineers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc

from cleanroom.errors import InvalidArgumentError
from cleanroom.names import CollaborationName, DatasetName
from cleanroom.paging import decode_token, next_page, page_size
from cleanroom.service import convert
from cleanroom.service.calls import current_call
from cleanroom.service.idle import IdleWatch
from cleanroom.usecases.datasets import Datasets
from cleanroom.v1 import partner_service_pb2 as pb
from cleanroom.v1 import partner_service_pb2_grpc as pb_grpc


class PartnerServicer(pb_grpc.PartnerServiceServicer):
    """Checks the caller, translates, calls `Datasets`, translates back."""

    def __init__(self, datasets: Datasets, *, idle_timeout: float = 60.0) -> None:
        self.datasets = datasets
        self.idle_timeout = idle_timeout

    def UploadDataset(  # noqa: N802 - gRPC's method name
        self, request_iterator: Iterator[pb.UploadDatasetRequest], context: grpc.ServicerContext
    ) -> pb.UploadDatasetResponse:
        """Receives a header, then chunks; commits only a complete, valid stream."""
        call = current_call()
        first = next(request_iterator, None)
        if first is None:
            raise InvalidArgumentError(
                "EMPTY_UPLOAD",
                "The upload stream was empty: send a header, then the record batches.",
                field="header",
            )
        header = convert.upload_header(first)
        call.names(header.dataset_name, collaboration=header.parent)
        call.summarize(
            dataset_id=header.dataset_id,
            identifier_types=list(header.identifier_types),
            segment_columns=list(header.segment_columns),
            declared_row_count=header.row_count,
            key_check_value=header.key_check_value,
        )
        terminated = threading.Event()
        context.add_callback(terminated.set)

        def stalled() -> None:
            call.event.outcome.reason = "UPLOAD_IDLE_TIMEOUT"
            call.event.outcome.message = f"No data for {self.idle_timeout:g} s: dropped."

        with (
            self.datasets.upload(call.caller, header) as upload,
            IdleWatch(context, self.idle_timeout, stalled) as watch,
        ):
            try:
                for message in request_iterator:
                    watch.touch()
                    upload.add_chunk(convert.upload_chunk(message))
                # A cancelled stream can end like a whole one a moment before gRPC marks
                # the call cancelled: wait for its end a while before calling it short,
                # and let a whole one settle before it becomes visible.
                ended = time.monotonic()
                if upload.rows != header.row_count and _gone(context, terminated, ended + 0.5):
                    return pb.UploadDatasetResponse()  # nobody listens; nothing was stored
                record = self.datasets.commit(
                    call.caller, upload, lambda: _gone(context, terminated, ended + 0.05)
                )
                if record is None:
                    return pb.UploadDatasetResponse()
            finally:
                call.summarize(chunks=upload.chunks, bytes=upload.bytes, rows=upload.rows)
        return pb.UploadDatasetResponse(dataset=convert.dataset(record))

    def GetDataset(  # noqa: N802 - gRPC's method name
        self, request: pb.GetDatasetRequest, context: grpc.ServicerContext
    ) -> pb.GetDatasetResponse:
        """Returns the description of one of the caller's datasets."""
        call = current_call()
        name = DatasetName.parse(request.name)
        call.names(name, collaboration=name.parent)
        return pb.GetDatasetResponse(dataset=convert.dataset(self.datasets.get(call.caller, name)))

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
            datasets=[convert.dataset(r) for r in records], next_page_token=token
        )

    def DeleteDataset(  # noqa: N802 - gRPC's method name
        self, request: pb.DeleteDatasetRequest, context: grpc.ServicerContext
    ) -> pb.DeleteDatasetResponse:
        """Deletes one of the caller's datasets."""
        call = current_call()
        name = DatasetName.parse(request.name)
        call.names(name, collaboration=name.parent)
        record = self.datasets.delete(call.caller, name)
        call.summarize(deleted_row_count=record.row_count)
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


def _gone(context: grpc.ServicerContext, terminated: threading.Event, deadline: float) -> bool:
    """Whether the client cancelled the call or went away, waiting for it until `deadline`."""
    if not context.is_active():
        return True
    return terminated.wait(max(0.0, deadline - time.monotonic()))
