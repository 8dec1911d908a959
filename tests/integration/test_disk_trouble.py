"""A full disk gives a clear refusal and corrupts nothing.

The server runs in its own process with a file size limit (RLIMIT_FSIZE), so writes past
it fail as on a full disk (Python ignores SIGXFSZ, so the write returns EFBIG): a real
server, real files, a real failure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cleanroom.demo.deployment import free_loopback_port, loopback_connection
from cleanroom.tls.pki import DemoPki
from partners.client import CleanRoomClient
from partners.errors import LimitError
from tests.support import (
    COLLABORATION,
    dataset_name,
    digest_array,
    random_digests,
    write_config,
    write_digest_file,
)

LIMIT = 3 * 1024 * 1024  # bytes any one file of the server may reach


# The server's own process sets the limit before it starts (no preexec_fn with threads).
LIMITED_SERVER = (
    "import resource, runpy, sys;"
    f"resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT}, {LIMIT}));"
    "sys.argv = ['cleanroom', *sys.argv[1:]];"
    "runpy.run_module('cleanroom', run_name='__main__')"
)


def test_a_full_disk_refuses_the_upload_and_keeps_what_was_committed(
    pki: DemoPki, tmp_path: Path
) -> None:
    port = free_loopback_port()
    config = write_config(
        tmp_path / "cleanroom.toml", pki, tmp_path / "data", listen=f"127.0.0.1:{port}"
    )
    command = [sys.executable, "-c", LIMITED_SERVER, "serve", "--config", str(config)]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        client = CleanRoomClient(loopback_connection(pki, "acme", port))
        client.wait_until_ready(30)
        rng = np.random.default_rng(1)
        small = write_digest_file(
            tmp_path / "small.parquet", {"email": digest_array(random_digests(rng, 1000))}
        )
        large = write_digest_file(
            tmp_path / "large.parquet", {"email": digest_array(random_digests(rng, 200_000))}
        )
        committed = client.upload(small, dataset_id="acme-small")
        with pytest.raises(LimitError) as refused:
            client.upload(large, dataset_id="acme-large")
        assert refused.value.code == "RESOURCE_EXHAUSTED"
        assert refused.value.reason == "STORAGE_FULL"
        assert "data directory is full" in refused.value.message
        # Nothing half-written is visible, what was committed is intact, the server serves on.
        assert [d.name for d in client.list_datasets(f"collaborations/{COLLABORATION}")] == [
            committed.name
        ]
        assert client.get_dataset(dataset_name("acme-small")).checksum == committed.checksum
        assert list((tmp_path / "data" / "tmp").iterdir()) == []
        client.close()
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
    assert "INTERNAL" not in log.read_text()
    check = subprocess.run(
        [sys.executable, "-m", "cleanroom", "audit", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
