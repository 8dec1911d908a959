"""The partner toolkit's own distribution, alone in a fresh environment, against a real server.

A brand installs `cleanroom-partner` (built by `make toolkit`) without the server: the test
builds the wheel, installs it into a new virtual environment with nothing else, checks that
no server code or server dependency came with it, then prepares a customer file and uploads
it to the real server with that environment's `cleanroom-partner`.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from partners.preparation.digest import write_secret
from tests.support import COLLABORATION, SECRET, RunningServer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toolkit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment holding only the toolkit's wheel and its dependencies."""
    work = tmp_path_factory.mktemp("toolkit")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from build_toolkit import build
    finally:
        sys.path.pop(0)
    wheel = build(work / "dist")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        timeout=600,
    )
    return venv / "bin"


def test_the_toolkit_installs_without_the_server(toolkit: Path) -> None:
    probe = (
        "import importlib.util as u\n"
        "for name in ('scipy', 'opendp', 'pandas', 'cleanroom.usecases', 'cleanroom.service',"
        " 'cleanroom.matching', 'cleanroom.privacy', 'grpc_health'):\n"
        "    print(name, u.find_spec(name) is not None)\n"
    )
    # Run outside the repository, whose folders would otherwise be importable from the cwd.
    found = subprocess.run(
        [str(toolkit / "python"), "-c", probe],
        capture_output=True, text=True, check=True, cwd=toolkit,
    ).stdout.split("\n")  # fmt: skip
    assert [line for line in found if line.endswith("True")] == []
    help_text = subprocess.run(
        [str(toolkit / "cleanroom-partner"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "prepare" in help_text
    assert "upload" in help_text
    # Double-blind mode needs the group (cleanroom.group and libsodium) in the wheel too.
    key = toolkit.parent / "spring.blindkey"
    subprocess.run(
        [str(toolkit / "cleanroom-partner"), "blind-key", "--collaboration=spring-launch",
         f"--out={key}"], capture_output=True, text=True, check=True, cwd=toolkit,
    )  # fmt: skip
    assert key.read_text().startswith("cleanroom-blind-key/v1 spring-launch\n")


def test_prepare_and_upload_from_the_toolkit_alone(
    toolkit: Path, server: RunningServer, tmp_path: Path
) -> None:
    secret = tmp_path / "collaboration.secret"
    write_secret(secret, SECRET)
    source = tmp_path / "customers.csv"
    with source.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Email"])
        writer.writerows([f"person.{i}@example.com"] for i in range(200))
    digests = tmp_path / "digests.parquet"
    connection = server.connection("acme")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CLEANROOM_SERVER": connection.target,
        "CLEANROOM_CERT": str(connection.certificate),
        "CLEANROOM_KEY": str(connection.private_key),
        "CLEANROOM_CA": str(connection.ca_certificate),
        "CLEANROOM_SERVER_NAME": "localhost",
    }
    partner = str(toolkit / "cleanroom-partner")
    prepared = subprocess.run(
        [partner, "prepare", str(source), str(digests), "--collaboration", COLLABORATION,
         "--secret-file", str(secret), "--column", "Email=email"],
        check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    assert "wrote 200" in prepared.stdout
    uploaded = subprocess.run(
        [partner, "upload", str(digests), "--dataset-id", "acme-toolkit"],
        check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert uploaded.returncode == 0, uploaded.stderr
    assert f"uploaded collaborations/{COLLABORATION}/datasets/acme-toolkit: 200 rows" in (
        uploaded.stdout
    )
    (dataset,) = server.client("acme").list_datasets(f"collaborations/{COLLABORATION}")
    assert dataset.row_count == 200
