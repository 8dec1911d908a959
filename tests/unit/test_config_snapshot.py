"""A configuration is an immutable snapshot, and a call reads one snapshot from start to end."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cleanroom.config import parse_config
from cleanroom.usecases.access import AccessPolicy
from tests.unit.test_config import BASE, changed


def test_a_configuration_cannot_be_changed_in_place(tmp_path: Path) -> None:
    config = parse_config(BASE, base_dir=tmp_path)
    with pytest.raises(TypeError):
        config.partners["intruder"] = config.partners["acme"]  # type: ignore[index]
    with pytest.raises(TypeError):
        config.collaborations["spring"].members["acme"] = frozenset()  # type: ignore[index]


def test_a_call_keeps_the_snapshot_it_started_with_across_a_reload(tmp_path: Path) -> None:
    old = parse_config(BASE, base_dir=tmp_path)
    new = parse_config(changed("collaborations.0.policy.minimum_threshold", 99), base_dir=tmp_path)
    access = AccessPolicy(old)
    seen: list[int] = []
    started, reloaded = threading.Event(), threading.Event()

    def call() -> None:
        token = access.pin()
        try:
            started.set()
            reloaded.wait(10)
            seen.append(access.config.collaborations["spring"].policy.minimum_threshold)
        finally:
            access.unpin(token)
        seen.append(access.config.collaborations["spring"].policy.minimum_threshold)

    running = threading.Thread(target=call)
    running.start()
    started.wait(10)
    access.config = new
    assert access.config.collaborations["spring"].policy.minimum_threshold == 99
    reloaded.set()
    running.join(10)
    assert seen == [20, 99]  # the old snapshot until the call ended, the new one after
