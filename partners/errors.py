"""The errors of the partner toolkit.

`PartnerError` is the root. Errors found on the brand's own machine (a bad file, a bad
mapping) are `InputError`; refusals from the server are mapped from their gRPC status and
`ErrorInfo` in one place, `partners.client._map_rpc_error`.
"""

from __future__ import annotations


class PartnerError(Exception):
    """The root of every error the partner toolkit raises on purpose.

    Attributes:
        reason: A stable UPPER_SNAKE identifier of the error, for machines.
        message: A sentence for people: what was wrong and what to do.
        metadata: Every value the message names, as strings.
    """

    def __init__(self, reason: str, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})


class InputError(PartnerError):
    """A file, column mapping, secret or option given to the toolkit is not usable."""


class ServerError(PartnerError):
    """The server refused or failed a call.

    Attributes:
        code: The gRPC status code name, for example `PERMISSION_DENIED`.
    """

    def __init__(
        self, code: str, reason: str, message: str, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(reason, message, metadata)
        self.code = code


class InvalidRequestError(ServerError):
    """The server found the request malformed (INVALID_ARGUMENT, OUT_OF_RANGE)."""


class AccessDeniedError(ServerError):
    """The caller is not known or may not do this (UNAUTHENTICATED, PERMISSION_DENIED)."""


class NotFoundError(ServerError):
    """The resource does not exist (NOT_FOUND)."""


class ConflictError(ServerError):
    """The resource exists already (ALREADY_EXISTS, ABORTED)."""


class PrivacyRuleError(ServerError):
    """A privacy rule or limit refused the request (FAILED_PRECONDITION, RESOURCE_EXHAUSTED)."""


class LimitError(ServerError):
    """A limit of the server refused the call: message size, time, concurrency or storage.

    RESOURCE_EXHAUSTED (SERVER_BUSY, TOO_MANY_CALLS, TOO_MANY_UPLOADS, MESSAGE_TOO_LARGE,
    STORAGE_FULL) or DEADLINE_EXCEEDED set by the server (UPLOAD_IDLE_TIMEOUT,
    UPLOAD_TOO_SLOW, UPLOAD_TOO_LONG). The metadata names the limit.
    """


class UnsupportedError(ServerError):
    """The server does not offer the call (UNIMPLEMENTED): it runs another version."""


class UnavailableError(ServerError):
    """The server could not be reached or did not answer in time."""


class ServerBugError(ServerError):
    """The server failed with INTERNAL or UNKNOWN: a bug to report to the operator."""
