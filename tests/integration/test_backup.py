"""`cleanroom backup` of a live data directory during uploads, and `cleanroom restore`."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from cleanroom.ops import backup
from cleanroom.tls.pki import DemoPki
from partners.errors import PartnerError
from tests.served import cleanroom_command, served, write_served_config
from tests.support import (
    COLLABORATION,
    dataset_name,
    digest_array,
    random_digests,
    running_server,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
BRANDS = ("acme", "brightmart")

pytestmark = pytest.mark.slow


def modes(directory: Path) -> dict[str, int]:
    found = {str(directory): stat.S_IMODE(directory.stat().st_mode)}
    found |= {str(p): stat.S_IMODE(p.stat().st_mode) for p in directory.rglob("*")}
    return found


def assert_owner_only(directory: Path) -> None:
    for path, mode in modes(directory).items():
        expected = 0o700 if Path(path).is_dir() else 0o600
        assert mode == expected, f"{path} has mode {mode:o}"


def test_a_backup_taken_during_uploads_restores_to_a_server_that_verifies(
    pki: DemoPki, tmp_path: Path
) -> None:
    config = write_served_config(tmp_path / "c.toml", pki, tmp_path / "data")
    acknowledged: dict[str, int] = {}
    stop, some = threading.Event(), threading.Event()
    rng = np.random.default_rng(5)
    files = []
    for i in range(40):
        rows = int(rng.integers(20, 60))
        files.append(
            (i, rows, write_digest_file(
                tmp_path / f"d{i}.parquet", {"email": digest_array(random_digests(rng, rows))}
            ))
        )  # fmt: skip
    with served(pki, config) as server:

        def uploads() -> None:
            for i, rows, path in files:
                if stop.is_set():
                    return
                brand = BRANDS[i % 2]
                try:
                    server.client(brand).upload(path, dataset_id=f"{brand}-{i}")
                except PartnerError:
                    return
                acknowledged[f"{brand}-{i}"] = rows
                if len(acknowledged) >= 4:
                    some.set()

        uploading = threading.Thread(target=uploads)
        uploading.start()
        assert some.wait(120)
        before = dict(acknowledged)
        backed = cleanroom_command(
            "backup", "--out", str(tmp_path / "backup"), env={"CLEANROOM_CONFIG": str(config)}
        )
        during = dict(acknowledged)
        stop.set()
        uploading.join(120)
        assert backed.returncode == 0, backed.stderr + backed.stdout
        assert_owner_only(tmp_path / "data")
    assert_owner_only(tmp_path / "backup")
    restored_dir = tmp_path / "restored"
    restored = cleanroom_command(
        "restore", "--config", str(config), "--from", str(tmp_path / "backup"),
        "--data-dir", str(restored_dir),
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr + restored.stdout
    assert_owner_only(restored_dir)
    checked = cleanroom_command(
        "audit", "check", "--config", str(config), "--data-dir", str(restored_dir)
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok" in checked.stdout
    # A second restore over it is refused: restore never mixes two directories.
    again = cleanroom_command(
        "restore", "--config", str(config), "--from", str(tmp_path / "backup"),
        "--data-dir", str(restored_dir),
    )  # fmt: skip
    assert again.returncode != 0
    assert "not an empty directory" in again.stderr
    with running_server(pki, restored_dir) as copy:
        listed = {
            d.name.rsplit("/", 1)[1]: d.row_count
            for brand in BRANDS
            for d in copy.client(brand).list_datasets(PARENT)
        }
        # Every upload acknowledged before the backup began is in it, whole; none is partial.
        assert before.items() <= listed.items()
        assert listed.items() <= {**during, **acknowledged}.items()
        acme = sorted(n for n in listed if n.startswith("acme"))
        brightmart = sorted(n for n in listed if n.startswith("brightmart"))
        report = copy.client("acme").create_report(
            PARENT, base=dataset_name(acme[0]), others=[dataset_name(brightmart[0])]
        )
        assert report.name


def test_restore_refuses_a_damaged_backup(pki: DemoPki, tmp_path: Path) -> None:
    config = write_served_config(tmp_path / "c.toml", pki, tmp_path / "data")
    with running_server(pki, tmp_path / "data") as server:
        path = write_digest_file(
            tmp_path / "a.parquet",
            {"email": digest_array(random_digests(np.random.default_rng(1), 30))},
        )
        server.client("acme").upload(path, dataset_id="acme-a")
    backed = cleanroom_command("backup", "--config", str(config), "--out", str(tmp_path / "b"))
    assert backed.returncode == 0, backed.stderr
    (dataset_file,) = (tmp_path / "b" / "datasets").iterdir()
    dataset_file.write_bytes(dataset_file.read_bytes()[:-1] + b"\0")
    restored = cleanroom_command(
        "restore", "--config", str(config), "--from", str(tmp_path / "b"),
        "--data-dir", str(tmp_path / "r"),
    )  # fmt: skip
    assert restored.returncode == 2
    assert "differs from the backup's manifest" in restored.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_a_dataset_deleted_between_the_snapshot_and_its_copy_makes_the_backup_start_over(
    pki: DemoPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_server(pki, tmp_path / "data") as server:
        rng = np.random.default_rng(2)
        for dataset_id in ("acme-1", "acme-2"):
            path = write_digest_file(
                tmp_path / f"{dataset_id}.parquet", {"email": digest_array(random_digests(rng, 30))}
            )
            server.client("acme").upload(path, dataset_id=dataset_id)
        snapshots: list[Path] = []
        take_snapshot = backup._snapshot

        def snapshot_then_delete(source: Path, target: Path) -> None:
            take_snapshot(source, target)
            snapshots.append(target)
            if len(snapshots) == 1:  # a deletion lands right after the first snapshot
                server.client("acme").delete_dataset(dataset_name("acme-1"))

        monkeypatch.setattr(backup, "_snapshot", snapshot_then_delete)
        copied = backup.backup_data_dir(server.data_dir, tmp_path / "b")
    assert len(snapshots) == 2
    assert copied.datasets == 1
    backup.restore_data_dir(tmp_path / "b", tmp_path / "restored")
    with running_server(pki, tmp_path / "restored") as copy:
        names = [d.name for d in copy.client("acme").list_datasets(PARENT)]
    assert names == [dataset_name("acme-2")]
