"""The operator's log: one parseable line per event, inert text, gRPC's C-core lines parsed."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Iterator

import pytest

from cleanroom.ops import logs


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.configure_logging("DEBUG", "json", stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.captureWarnings(False)


def events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_traceback_stays_on_its_one_line(lines: io.StringIO) -> None:
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        logging.getLogger("cleanroom.x").exception("failed", extra={"request_id": "abc"})
    (event,) = events(lines)
    assert event["event"] == "failed"
    assert event["level"] == "error"
    assert event["request_id"] == "abc"
    assert "ZeroDivisionError" in str(event["exception"])


def test_control_characters_of_any_value_are_escaped(lines: io.StringIO) -> None:
    logging.getLogger("cleanroom.calls").info("call", extra={"caller": "CN=x\x1b[2J\x07"})
    (event,) = events(lines)
    assert event["caller"] == "CN=x\\x1b[2J\\x07"


def test_c_core_lines_become_events_at_their_severity(lines: io.StringIO) -> None:
    read_end, write_end = os.pipe()
    pump = threading.Thread(target=logs._pump, args=(read_end,))
    pump.start()
    with os.fdopen(write_end, "wb") as native:
        native.write(
            b"E1201 19:44:32.638692   28977 add_port.cc:83] Failed to add port to server\n"
            b"W1201 19:44:35.287957   29098 log.cc:102] Log level INFO is not suitable\n"
            b"something else entirely\n"
        )
    pump.join(10)
    error, warning, other = events(lines)
    assert (error["logger"], error["level"], error["event"]) == (
        "grpc.core", "error", "Failed to add port to server"
    )  # fmt: skip
    assert error["source"] == "add_port.cc:83"
    assert error["native_thread"] == 28977
    assert (warning["level"], warning["source"]) == ("warning", "log.cc:102")
    assert (other["level"], other["event"]) == ("warning", "something else entirely")


def test_the_text_format_is_one_line_per_event_with_a_utc_time() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.configure_logging("INFO", "text", stream)
        logging.getLogger("cleanroom.calls").info(
            "call", extra={"method": "/cleanroom.v1.ReportService/GetOverlapReport", "status": "OK"}
        )
        logging.getLogger("cleanroom.calls").debug("not at INFO")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)
    (line,) = stream.getvalue().splitlines()
    moment, rest = line.split(" ", 1)
    assert moment.endswith("Z")
    assert "T" in moment
    assert "call" in rest
    assert "status='OK'" in rest or "status=OK" in rest
