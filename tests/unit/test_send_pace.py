"""A server stream whose client stops reading is ended by the limits of uploads."""

from __future__ import annotations

import threading

from cleanroom.errors import DeadlineExceededError
from cleanroom.service.idle import UploadPace, paced_sends


def test_a_send_that_the_client_never_takes_is_stopped_as_idle() -> None:
    stopped: list[DeadlineExceededError] = []
    fired = threading.Event()

    def stop(error: DeadlineExceededError) -> None:
        stopped.append(error)
        fired.set()

    sends = paced_sends(iter([b"a", b"b"]), UploadPace(idle_timeout=0.1), len, stop)
    assert next(sends) == b"a"  # handed to gRPC, which never asks for the next one
    assert fired.wait(30)
    sends.close()
    assert [e.reason for e in stopped] == ["UPLOAD_IDLE_TIMEOUT"]


def test_a_stream_read_to_its_end_is_never_stopped() -> None:
    stopped: list[DeadlineExceededError] = []
    sends = paced_sends(iter([b"a", b"b"]), UploadPace(idle_timeout=60), len, stopped.append)
    assert list(sends) == [b"a", b"b"]
    assert stopped == []
