"""The server's own log: one structured event per line, JSON or text, on standard error.

Everything logs through the standard `logging` module, fields passed as `extra`; here
structlog renders each record as one line with an ISO 8601 UTC time, the level, the
logger and the event. gRPC's C core writes to file descriptor 2 itself, in its own
format (`E1201 12:00:00.000000 123 add_port.cc:83] ...`); `capture_native_stderr` turns
each of those lines into an event of the logger `grpc.core`, so the log stays parseable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from typing import Literal, TextIO

import structlog

LogFormat = Literal["json", "text"]
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# gRPC's C core (absl) lines: severity letter, MMDD, time, thread, file:line] message.
_NATIVE_LINE = re.compile(
    r"^(?P<severity>[DIWEF])\d{4} [\d:.]+\s+(?P<thread>\d+) (?P<source>[^\]\s]+)\] ?(?P<text>.*)$"
)
_NATIVE_LEVELS = {
    "D": logging.DEBUG,
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "F": logging.CRITICAL,
}
# What GRPC_VERBOSITY follows from the log level, unless the operator set it.
_GRPC_VERBOSITY = {"DEBUG": "INFO", "INFO": "ERROR", "WARNING": "ERROR", "ERROR": "ERROR"}


def grpc_verbosity(level: str) -> None:
    """Sets GRPC_VERBOSITY for `level`, unless already set; only works before gRPC loads."""
    os.environ.setdefault("GRPC_VERBOSITY", _GRPC_VERBOSITY[level])


def configure_logging(
    level: str = "INFO", log_format: LogFormat = "json", stream: TextIO | None = None
) -> None:
    """Sends every log record of the process to `stream` (standard error), one line each.

    Args:
        level: The lowest level logged: DEBUG adds every probe and health call and gRPC's
            own details; INFO logs each call of the clean room's services (the access log)
            and the server's life; WARNING only what an operator should look at (refused
            for storage trouble, busy, a bad reload); ERROR only failures (bugs).
        log_format: `json` (one JSON object a line) or `text` (key=value, for people).
        stream: Where lines go; standard error by default.
    """
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _inert,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _inert(
    _logger: object, _name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Control characters escaped in every text value: no line can rewrite the terminal.

    A certificate subject or a line of gRPC's C core may hold any character; JSON escapes
    them anyway, and the text format must not print them raw either. Tracebacks keep
    their newlines.
    """
    for key, value in event.items():
        if isinstance(value, str) and _CONTROL.search(value):
            event[key] = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return event


def capture_native_stderr() -> TextIO:
    """Routes what is written to file descriptor 2 (gRPC's C core) into the log.

    Descriptor 2 becomes a pipe read by a daemon thread; each line becomes one event of
    the logger `grpc.core` at the line's own severity. Returns a stream on the original
    standard error, where the log's handler should write (and `sys.stderr` now does).
    """
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    stream = os.fdopen(original, "w", buffering=1, encoding="utf-8", errors="replace")
    sys.stderr = stream
    pump = threading.Thread(target=_pump, args=(read_end,), name="native-stderr", daemon=True)
    pump.start()
    return stream


def _pump(read_end: int) -> None:
    core = logging.getLogger("grpc.core")
    with os.fdopen(read_end, "rb") as lines:
        for raw in lines:
            # This thread must outlive any bad line: if it stopped reading, the pipe would
            # fill and gRPC's next write to standard error would block the server.
            with contextlib.suppress(Exception):
                _emit(core, raw.decode("utf-8", "replace").rstrip("\n"))


def _emit(core: logging.Logger, line: str) -> None:
    if not line.strip():
        return
    match = _NATIVE_LINE.match(line)
    if match is None:
        core.warning(line, extra={"native": True})
        return
    core.log(
        _NATIVE_LEVELS[match["severity"]],
        match["text"],
        extra={"source": match["source"], "native_thread": int(match["thread"])},
    )
