"""The service unit and the container image: what they must say, and systemd's own check.

`docker build` needs a container engine, which this test does not assume (the checks of
the Dockerfile here are what holds without one); `systemd-analyze verify` runs wherever
systemd is installed, and CI installs it when missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "systemd" / "cleanroom.service"
DOCKERFILE = ROOT / "Dockerfile"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def test_the_unit_reloads_with_sighup_and_is_hardened() -> None:
    settings = unit_settings()
    assert settings["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["Service.Environment"] == ["CLEANROOM_CONFIG=/etc/cleanroom/cleanroom.toml"]
    assert settings["Service.UMask"] == ["0077"]
    assert settings["Service.StateDirectoryMode"] == ["0700"]
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():  # fmt: skip
        assert settings[f"Service.{key}"] == [value], key


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        assert os.environ.get("CI") != "true", "CI must install systemd (see .ci/run)"
        pytest.skip("systemd-analyze is not installed here")
    # The unit names the installed command; point it at this environment's for the check.
    unit = tmp_path / "cleanroom.service"
    command = Path(sys.executable).parent / "cleanroom"
    unit.write_text(
        UNIT.read_text(encoding="utf-8").replace("/opt/cleanroom/bin/cleanroom", str(command))
    )
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_the_image_runs_as_a_non_root_user_with_a_data_volume_and_the_ops_port() -> None:
    instructions = [
        line.split(None, 1)
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith((" ", "#"))
    ]
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    by_name: dict[str, list[str]] = {}
    for op, argument in final_stage:
        by_name.setdefault(op, []).append(argument)
    assert by_name["USER"] == ["10001:10001"]
    assert by_name["VOLUME"] == ['["/var/lib/cleanroom"]']
    assert "9464" in by_name["EXPOSE"][0].split()
    assert "/healthz" in by_name["HEALTHCHECK"][0] + DOCKERFILE.read_text(encoding="utf-8")
    assert by_name["ENTRYPOINT"] == ['["cleanroom"]']
    assert (ROOT / ".dockerignore").read_text(encoding="utf-8").count(".venv") == 1
