"""The toolkit maps every gRPC status, with or without an ErrorInfo, to one exception class.

The errors are built as gRPC builds them on a client (code, details, and the trailing
`grpc-status-details-bin` that carries the google.rpc.Status).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from partners import errors
from partners.client import _map_rpc_error


class _CallError(grpc.RpcError):
    """A failed call as a client sees it (grpc's own class is private)."""

    def __init__(self, code: grpc.StatusCode, details: str, reason: str | None) -> None:
        self._code, self._details, self._trailers = code, details, ()
        if reason is not None:
            info = any_pb2.Any()
            info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="cleanroom.v1"))
            status = status_pb2.Status(
                code=getattr(code_pb2, code.name), message=details, details=[info]
            )
            self._trailers = rpc_status.to_status(status).trailing_metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailers


EXPECTED = {
    "CANCELLED": errors.UnavailableError,
    "UNKNOWN": errors.ServerBugError,
    "INVALID_ARGUMENT": errors.InvalidRequestError,
    "DEADLINE_EXCEEDED": errors.UnavailableError,
    "NOT_FOUND": errors.NotFoundError,
    "ALREADY_EXISTS": errors.ConflictError,
    "PERMISSION_DENIED": errors.AccessDeniedError,
    "RESOURCE_EXHAUSTED": errors.LimitError,  # without an ErrorInfo: gRPC's size limit
    "FAILED_PRECONDITION": errors.PrivacyRuleError,
    "ABORTED": errors.ConflictError,
    "OUT_OF_RANGE": errors.InvalidRequestError,
    "UNIMPLEMENTED": errors.UnsupportedError,
    "INTERNAL": errors.ServerBugError,
    "UNAVAILABLE": errors.UnavailableError,
    "DATA_LOSS": errors.ServerBugError,
    "UNAUTHENTICATED": errors.AccessDeniedError,
}


def test_every_status_code_has_its_class() -> None:
    assert set(EXPECTED) == {c.name for c in grpc.StatusCode} - {"OK"}


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_a_status_without_error_info_maps_by_its_code(code: str) -> None:
    error = _map_rpc_error(_CallError(grpc.StatusCode[code], "went wrong", None))
    assert type(error) is EXPECTED[code]
    assert (error.code, error.reason, error.message) == (code, code, "went wrong")


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        ("RESOURCE_EXHAUSTED", "PRIVACY_BUDGET_EXHAUSTED", errors.PrivacyRuleError),
        ("RESOURCE_EXHAUSTED", "DAILY_REPORT_LIMIT", errors.PrivacyRuleError),
        ("RESOURCE_EXHAUSTED", "SERVER_BUSY", errors.LimitError),
        ("RESOURCE_EXHAUSTED", "TOO_MANY_CALLS", errors.LimitError),
        ("RESOURCE_EXHAUSTED", "TOO_MANY_UPLOADS", errors.LimitError),
        ("RESOURCE_EXHAUSTED", "MESSAGE_TOO_LARGE", errors.LimitError),
        ("RESOURCE_EXHAUSTED", "STORAGE_FULL", errors.LimitError),
        ("DEADLINE_EXCEEDED", "UPLOAD_IDLE_TIMEOUT", errors.LimitError),
        ("DEADLINE_EXCEEDED", "UPLOAD_TOO_SLOW", errors.LimitError),
        ("DEADLINE_EXCEEDED", "UPLOAD_TOO_LONG", errors.LimitError),
        ("FAILED_PRECONDITION", "KEY_CHECK_MISMATCH", errors.PrivacyRuleError),
        ("UNAVAILABLE", "STORAGE_READ_ONLY", errors.UnavailableError),
    ],
)
def test_a_status_with_error_info_maps_by_its_reason(
    code: str, reason: str, kind: type[errors.ServerError]
) -> None:
    error = _map_rpc_error(_CallError(grpc.StatusCode[code], "refused", reason))
    assert type(error) is kind
    assert (error.code, error.reason) == (code, reason)


def test_a_client_deadline_names_the_server_and_the_timeout() -> None:
    error = _map_rpc_error(
        _CallError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", None),
        target="clean.example:443",
        timeout=7.0,
    )
    assert type(error) is errors.UnavailableError
    assert error.reason == "CALL_TIMED_OUT"
    assert error.message.startswith("clean.example:443 did not answer within 7 s.")
