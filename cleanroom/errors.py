"""The errors of the clean room's domain, free of gRPC.

Every refusal carries an UPPER_SNAKE `reason`, a message that says what was wrong and
what to do, and `metadata` with every value the message names (SPEC section 7). The
service layer maps each class to one gRPC status code in `cleanroom.service.status`.
"""

from __future__ import annotations

MAX_MESSAGE_CHARS = 500
MAX_VALUE_CHARS = 100


def clip(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with an ellipsis if it is longer."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def escaped(text: str) -> str:
    r"""`text` as one printable line: safe to log.

    Every character that is not printable (controls, bidi overrides, line separators) is
    written as its Python escape, e.g. `\x1b`.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown(value: str, limit: int = 60) -> str:
    """A value quoted for a message, cut short if long (it may be hostile input)."""
    return repr(clip(value, limit))


class CleanRoomError(Exception):
    """The root of every error the clean room raises on purpose.

    Attributes:
        reason: A stable UPPER_SNAKE identifier of the error, for machines.
        message: A sentence for people: what was wrong and what to do.
        metadata: Every value the message names, as strings.
    """

    def __init__(self, reason: str, message: str, **metadata: object) -> None:
        # Bounded: a refusal may echo hostile input, and gRPC trailers are small.
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = {key: clip(str(value), MAX_VALUE_CHARS) for key, value in metadata.items()}


class InvalidArgumentError(CleanRoomError):
    """The request itself is malformed: a bad name, field or value."""


class UnauthenticatedError(CleanRoomError):
    """The caller's certificate names no known partner."""


class PermissionDeniedError(CleanRoomError):
    """The caller may not do this, or may not know whether the resource exists."""


class NotFoundError(CleanRoomError):
    """The resource does not exist, and the caller may know that."""


class AlreadyExistsError(CleanRoomError):
    """A resource of that name exists already."""


class FailedPreconditionError(CleanRoomError):
    """A rule refuses the request in the current state (a privacy rule, a key check)."""


class ResourceExhaustedError(CleanRoomError):
    """A limit is reached: a budget, a quota, a size."""


class DeadlineExceededError(CleanRoomError):
    """A time limit of the server ended the call: a stalled, slow or too long upload."""


class UnavailableError(CleanRoomError):
    """The server cannot serve the request now (for example, its storage is read-only)."""


class CleanRoomInternalError(CleanRoomError):
    """A bug: something the clean room should never have let happen."""


class ConfigError(CleanRoomError):
    """The server's configuration file has a missing, unknown or bad value."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__("INVALID_CONFIG", f"{key}: {message}", key=key)
        self.key = key


class ConfigProblemsError(ConfigError):
    """Every problem of a configuration at once; `key` and `message` lead with the first.

    Attributes:
        problems: Each problem, naming its key, in the order of the file.
    """

    def __init__(self, problems: list[ConfigError]) -> None:
        first = problems[0]
        super().__init__(first.key, first.message.removeprefix(f"{first.key}: "))
        self.problems = list(problems)
        if len(problems) > 1:
            self.message = "\n".join(p.message for p in problems)
            self.args = (self.message,)
