"""Double-blind matching from the brands' command line, as subprocesses, against the real server.

Three brands make their blind keys, upload masked and shuffled rows, take each other's
masking hops with `blind work`, and get the report a shared-secret collaboration gives on
the same digests. A result left in the journal by an interrupted run is sent again, one
whose attempt was superseded is dropped and the hop taken afresh, and one the server had
applied already is dropped: no hop is applied twice, none is lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cleanroom.config import parse_config
from cleanroom.ops.metrics import CallMetrics
from cleanroom.service.server import audit_interceptor, build_server
from cleanroom.tls.pki import DemoPki
from cleanroom.usecases.clean_room import CleanRoom
from cleanroom.v1 import dataset_pb2, overlap_report_pb2
from partners.masking import rows as masking_rows
from partners.masking.hops import work
from partners.masking.journal import HopJournal, JournalEntry
from partners.masking.keys import read_blind_key
from partners.preparation.digest import key_check_value, write_secret
from tests.support import (
    COLLABORATION,
    SECRET,
    RunningServer,
    config_data,
    digest_array,
    random_digests,
    running_server,
    write_digest_file,
)

BOUND = 300  # seconds a command may run: a bound, not what the test checks
PARENT = f"collaborations/{COLLABORATION}"
# Who holds which persons of a pool: overlaps of 75, 50 and 45 (the policy's k is 10).
HOLDINGS = {"acme": range(0, 150), "brightmart": range(75, 225), "corvid": range(100, 220)}
MASKING = dataset_pb2.MATCHING_STATE_MASKING
MATCHABLE = dataset_pb2.MATCHING_STATE_MATCHABLE


@pytest.fixture
def blind_server(pki: DemoPki, tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(
        pki, tmp_path / "blind-data", collaboration={"matching": "double_blind"}
    ) as running:
        yield running


def cli(server: RunningServer, partner: str, *args: str, code: int = 0) -> str:
    """Runs `cleanroom-partner` as a brand would, in a process of its own."""
    connection = server.connection(partner)
    env = {
        **os.environ,
        "CLEANROOM_SERVER": connection.target,
        "CLEANROOM_CERT": str(connection.certificate),
        "CLEANROOM_KEY": str(connection.private_key),
        "CLEANROOM_CA": str(connection.ca_certificate),
        "CLEANROOM_SERVER_NAME": "localhost",
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [sys.executable, "-m", "partners", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=BOUND,
        check=False,
    )
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout + result.stderr


def digest_files(tmp_path: Path) -> dict[str, Path]:
    """Each brand's digests file: emails for all, phones for some, acme's split by tier."""
    pool = random_digests(np.random.default_rng(18), 300)
    phones = random_digests(np.random.default_rng(19), 300)
    files = {}
    for brand, persons in HOLDINGS.items():
        ids = list(persons)
        columns = {
            "email": digest_array(pool[ids]),
            "phone": digest_array(phones[ids], [i % 3 == 0 for i in ids]),
        }
        segments = {"tier": ["gold" if i % 2 else "silver" for i in ids]} if brand == "acme" else {}
        files[brand] = write_digest_file(tmp_path / f"{brand}.parquet", columns, segments)
    return files


def keys_for(server: RunningServer, tmp_path: Path) -> dict[str, Path]:
    keys = {}
    for brand in HOLDINGS:
        keys[brand] = tmp_path / f"{brand}.blindkey"
        out = cli(server, brand, "blind-key", f"--collaboration={COLLABORATION}",
                  f"--out={keys[brand]}")  # fmt: skip
        assert read_blind_key(keys[brand]).hex() not in out
    return keys


def comparable(report: overlap_report_pb2.OverlapReport) -> list[object]:
    """What a report says, without its name, creator or time."""
    return [
        sorted((s.dataset, s.row_count.SerializeToString()) for s in report.dataset_sizes),
        sorted(c.SerializeToString() for c in report.membership_cells),
        sorted(p.SerializeToString() for p in report.pairwise_overlaps),
        report.released_count,
        report.suppressed_count,
    ]


def test_three_brands_mask_each_others_datasets_and_get_the_shared_secret_report(
    blind_server: RunningServer, server: RunningServer, tmp_path: Path
) -> None:
    files, keys = digest_files(tmp_path), keys_for(blind_server, tmp_path)
    for brand in ("acme", "brightmart", "corvid"):
        out = cli(blind_server, brand, "upload", str(files[brand]), f"--dataset-id={brand}-crm",
                  f"--blind-key={keys[brand]}")  # fmt: skip
        assert "rows shuffled" in out
        server.client(brand).upload(files[brand], dataset_id=f"{brand}-crm")

    acme = blind_server.client("acme").get_dataset(f"{PARENT}/datasets/acme-crm")
    assert acme.matching_state == MASKING
    assert list(acme.mask_set) == ["partners/acme"]
    assert sorted(acme.pending_maskers) == ["partners/brightmart", "partners/corvid"]
    listed = cli(blind_server, "acme", "datasets", "list", f"--collaboration={COLLABORATION}")
    assert "masking: waits for brightmart, corvid" in listed

    journals = {brand: tmp_path / f"{brand}-hops" for brand in HOLDINGS}
    for brand in ("brightmart", "corvid", "acme"):
        out = cli(blind_server, brand, "blind", "work", f"--blind-key={keys[brand]}",
                  f"--journal={journals[brand]}")  # fmt: skip
        assert "masked 2 datasets" in out, out
        assert not list(journals[brand].glob("*.hop"))
    out = cli(blind_server, "acme", "blind", "work", f"--blind-key={keys['acme']}",
              f"--journal={journals['acme']}")  # fmt: skip
    assert "no masking hop was waiting" in out

    for brand in HOLDINGS:
        dataset = blind_server.client(brand).get_dataset(f"{PARENT}/datasets/{brand}-crm")
        assert dataset.matching_state == MATCHABLE, brand
        assert sorted(dataset.mask_set) == sorted(f"partners/{b}" for b in HOLDINGS)
        assert not dataset.pending_maskers
    listed = cli(blind_server, "acme", "datasets", "list", f"--collaboration={COLLABORATION}")
    assert "matchable" in listed

    base, others = f"{PARENT}/datasets/acme-crm", [f"{PARENT}/datasets/{b}-crm" for b in
                                                   ("brightmart", "corvid")]  # fmt: skip
    # Exact mode allows one report per dataset version: the one split by tier.
    blind = blind_server.client("acme").create_report(
        PARENT, base=base, others=others, segment_column="tier"
    )
    shared = server.client("acme").create_report(
        PARENT, base=base, others=others, segment_column="tier"
    )
    assert blind.membership_cells
    assert comparable(blind) == comparable(shared)
    released = {
        (
            p.dataset.rsplit("/", 1)[-1],
            p.matched_dataset.rsplit("/", 1)[-1],
        ): p.matched_row_count.value
        for p in blind.pairwise_overlaps
        if p.matched_row_count.HasField("value")
    }
    # The others are suppressed (complementary suppression), alike in both modes.
    assert released == {("acme-crm", "brightmart-crm"): 75, ("brightmart-crm", "corvid-crm"): 120}


def test_an_upload_without_the_key_or_with_another_collaborations_key_is_refused(
    blind_server: RunningServer, tmp_path: Path
) -> None:
    files = digest_files(tmp_path)
    out = cli(blind_server, "acme", "upload", str(files["acme"]), "--dataset-id=acme-crm", code=1)
    assert "MATCHING_MODE_MISMATCH" in out
    other = tmp_path / "other.blindkey"
    cli(blind_server, "acme", "blind-key", "--collaboration=autumn-sale", f"--out={other}")
    out = cli(blind_server, "acme", "upload", str(files["acme"]), "--dataset-id=acme-crm",
              f"--blind-key={other}", code=2)  # fmt: skip
    assert "BLIND_KEY_OF_ANOTHER_COLLABORATION" in out
    out = cli(blind_server, "acme", "blind", "work", f"--blind-key={other}",
              f"--collaboration={COLLABORATION}", f"--journal={tmp_path / 'hops'}", code=2)  # fmt: skip
    assert "BLIND_KEY_OF_ANOTHER_COLLABORATION" in out


def test_the_journal_resends_drops_superseded_and_applied_results_and_never_applies_twice(
    blind_server: RunningServer, tmp_path: Path
) -> None:
    files, keys = digest_files(tmp_path), keys_for(blind_server, tmp_path)
    for brand in ("acme", "brightmart"):
        cli(blind_server, brand, "upload", str(files[brand]), f"--dataset-id={brand}-crm",
            f"--blind-key={keys[brand]}")  # fmt: skip
    brightmart = blind_server.client("brightmart")
    key = read_blind_key(keys["brightmart"])
    hops = {h.dataset.rsplit("/", 1)[-1]: h for h in brightmart.list_masking_hops(PARENT)}
    assert set(hops) == {"acme-crm"}
    hop = hops["acme-crm"]

    # A run that computed its result and stopped before sending it: the next one sends it.
    journal = HopJournal(tmp_path / "hops")
    attempt, received = brightmart.start_masking_hop(hop.name)
    types = list(attempt.masking_hop.identifier_types)
    result = masking_rows.shuffled(masking_rows.multiply_elements(received, key, types))
    entry = JournalEntry(hop.name, attempt.attempt_id, attempt.checksum, result)
    journal.write(entry)
    out = cli(blind_server, "brightmart", "blind", "work", f"--blind-key={keys['brightmart']}",
              f"--journal={journal.directory}")  # fmt: skip
    assert "1 sent again from the journal" in out
    assert not journal.hops(PARENT)
    dataset = blind_server.client("acme").get_dataset(f"{PARENT}/datasets/acme-crm")
    assert list(dataset.mask_set) == ["partners/acme", "partners/brightmart"]

    # The same result once more, as if the run had died before removing it: dropped.
    journal.write(entry)
    summary = work(brightmart, COLLABORATION, key, journal=journal.directory)
    assert (summary.applied, summary.already_applied) == ((), 1)
    assert not journal.hops(PARENT)
    dataset = blind_server.client("acme").get_dataset(f"{PARENT}/datasets/acme-crm")
    assert list(dataset.mask_set) == ["partners/acme", "partners/brightmart"]
    assert dataset.matching_state == MASKING  # corvid's hop remains

    # Corvid's result of an attempt that a newer one superseded: dropped, the hop redone.
    corvid = blind_server.client("corvid")
    corvid_key = read_blind_key(keys["corvid"])
    corvid_hops = sorted(h.name for h in corvid.list_masking_hops(PARENT))
    assert len(corvid_hops) == 2
    old, old_rows = corvid.start_masking_hop(corvid_hops[0])
    stale = masking_rows.shuffled(masking_rows.multiply_elements(
        old_rows, corvid_key, list(old.masking_hop.identifier_types)))  # fmt: skip
    corvid.start_masking_hop(corvid_hops[0])  # a newer attempt, never completed
    corvid_journal = HopJournal(tmp_path / "corvid-hops")
    corvid_journal.write(JournalEntry(corvid_hops[0], old.attempt_id, old.checksum, stale))
    summary = work(corvid, PARENT, corvid_key, journal=corvid_journal.directory)
    assert summary.superseded == 1
    assert sorted(summary.applied) == corvid_hops
    assert summary.resent == 0
    assert not corvid_journal.hops(PARENT)

    # Acme's hop of brightmart's dataset is the last one: then both are matchable.
    cli(blind_server, "acme", "blind", "work", f"--blind-key={keys['acme']}",
        f"--journal={tmp_path / 'acme-hops'}")  # fmt: skip
    for brand in ("acme", "brightmart"):
        dataset = blind_server.client(brand).get_dataset(f"{PARENT}/datasets/{brand}-crm")
        assert dataset.matching_state == MATCHABLE, brand
    report = blind_server.client("acme").create_report(
        PARENT, base=f"{PARENT}/datasets/acme-crm", others=[f"{PARENT}/datasets/brightmart-crm"]
    )
    assert report.pairwise_overlaps[0].matched_row_count.value == 75


def test_blind_work_every_keeps_taking_hops_until_ctrl_c(
    blind_server: RunningServer, tmp_path: Path
) -> None:
    files, keys = digest_files(tmp_path), keys_for(blind_server, tmp_path)
    cli(blind_server, "acme", "upload", str(files["acme"]), "--dataset-id=acme-crm",
        f"--blind-key={keys['acme']}")  # fmt: skip
    connection = blind_server.connection("brightmart")
    env = {
        **os.environ,
        "CLEANROOM_SERVER": connection.target,
        "CLEANROOM_CERT": str(connection.certificate),
        "CLEANROOM_KEY": str(connection.private_key),
        "CLEANROOM_CA": str(connection.ca_certificate),
        "CLEANROOM_SERVER_NAME": "localhost",
        "CLEANROOM_BLIND_KEY": str(keys["brightmart"]),
        "XDG_STATE_HOME": str(tmp_path / "state"),  # the default journal's home
        "PYTHONUNBUFFERED": "1",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "partners", "blind", "work", "--every=1s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert worker.stdout is not None
        seen: list[str] = []
        for line in worker.stdout:  # the worker's own output is the synchronization
            seen.append(line)
            if "no masking hop was waiting" in line:
                break
        text = "".join(seen)
        assert "masked 1 dataset (150 rows)" in text, text
        assert "masking (spring-launch): 300 of 300 values done" in text, text  # lines, no bar
        worker.send_signal(signal.SIGINT)
        rest, _ = worker.communicate(timeout=BOUND)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(BOUND)
        if worker.stdout is not None:
            worker.stdout.close()
    assert worker.returncode == 130, text + rest
    assert "stopped" in rest
    assert str(tmp_path / "state" / "cleanroom-partner" / "hops") in " ".join(rest.split())
    dataset = blind_server.client("acme").get_dataset(f"{PARENT}/datasets/acme-crm")
    assert list(dataset.mask_set) == ["partners/acme", "partners/brightmart"]


def test_only_uploaders_take_hops(blind_server: RunningServer, tmp_path: Path) -> None:
    key = tmp_path / "ledger.blindkey"
    cli(blind_server, "ledger", "blind-key", f"--collaboration={COLLABORATION}", f"--out={key}")
    out = cli(blind_server, "ledger", "blind", "work", f"--blind-key={key}",
              f"--journal={tmp_path / 'hops'}", code=1)  # fmt: skip
    assert "PERMISSION_DENIED" in out


def test_a_file_masked_by_prepare_is_uploaded_as_it_is(
    blind_server: RunningServer, tmp_path: Path
) -> None:
    keys = keys_for(blind_server, tmp_path)
    source = tmp_path / "acme.csv"
    source.write_text("email\n" + "".join(f"p{i}@example.com\n" for i in range(40)))
    secret = tmp_path / "secret"
    write_secret(secret, SECRET)
    masked = tmp_path / "masked.parquet"
    cli(blind_server, "acme", "prepare", str(source), str(masked),
        f"--collaboration={COLLABORATION}", f"--secret-file={secret}", "--column=email=email",
        f"--blind-key={keys['acme']}")  # fmt: skip
    out = cli(blind_server, "acme", "upload", str(masked), "--dataset-id=twice",
              f"--blind-key={keys['acme']}", code=2)  # fmt: skip
    assert "DIGESTS_ALREADY_MASKED" in out
    out = cli(blind_server, "acme", "upload", str(masked), "--dataset-id=acme-crm")
    assert "rows shuffled" in out
    dataset = blind_server.client("acme").get_dataset(f"{PARENT}/datasets/acme-crm")
    assert dataset.row_count == 40
    assert list(dataset.mask_set) == ["partners/acme"]


class _Renames:
    """Linux inotify on a folder: blocks until a file is renamed into it (no polling)."""

    IN_MOVED_TO = 0x00000080

    def __init__(self, folder: Path) -> None:
        import ctypes

        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init()
        assert self._fd >= 0, ctypes.get_errno()
        watch = self._libc.inotify_add_watch(self._fd, bytes(folder), self.IN_MOVED_TO)
        assert watch >= 0, ctypes.get_errno()

    def wait(self, seconds: float) -> bool:
        import select

        ready, _, _ = select.select([self._fd], [], [], seconds)
        return bool(ready)

    def close(self) -> None:
        os.close(self._fd)


def test_a_worker_killed_after_journaling_loses_nothing_and_applies_nothing_twice(
    blind_server: RunningServer, tmp_path: Path
) -> None:
    files, keys = digest_files(tmp_path), keys_for(blind_server, tmp_path)
    for brand in ("acme", "brightmart"):
        cli(blind_server, brand, "upload", str(files[brand]), f"--dataset-id={brand}-crm",
            f"--blind-key={keys[brand]}")  # fmt: skip
    journal = tmp_path / "brightmart-hops"
    journal.mkdir(mode=0o700)
    renames = _Renames(journal)
    connection = blind_server.connection("brightmart")
    env = {
        **os.environ,
        "CLEANROOM_SERVER": connection.target,
        "CLEANROOM_CERT": str(connection.certificate),
        "CLEANROOM_KEY": str(connection.private_key),
        "CLEANROOM_CA": str(connection.ca_certificate),
        "CLEANROOM_SERVER_NAME": "localhost",
    }
    args = [sys.executable, "-m", "partners", "blind", "work", f"--blind-key={keys['brightmart']}",
            f"--journal={journal}"]  # fmt: skip
    worker = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert renames.wait(BOUND), "the worker never journaled a result"
        worker.send_signal(signal.SIGKILL)  # the result is on disk; it may or may not be sent
        worker.wait(BOUND)
    finally:
        renames.close()
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == -signal.SIGKILL
    rerun = cli(blind_server, "brightmart", "blind", "work", f"--blind-key={keys['brightmart']}",
                f"--journal={journal}")  # fmt: skip
    assert "masked 1 dataset" in rerun or "no masking hop was waiting" in rerun
    assert not list(journal.glob("*.hop"))
    cli(blind_server, "acme", "blind", "work", f"--blind-key={keys['acme']}",
        f"--journal={tmp_path / 'acme-hops'}")  # fmt: skip
    acme = blind_server.client("acme").get_dataset(f"{PARENT}/datasets/acme-crm")
    assert list(acme.mask_set) == ["partners/acme", "partners/brightmart"]
    assert acme.matching_state == MASKING  # corvid's hop is pending, untouched
    hops = list(blind_server.client("corvid").list_masking_hops(PARENT))
    assert len(hops) == 2
    cli(blind_server, "corvid", "blind", "work", f"--blind-key={keys['corvid']}",
        f"--journal={tmp_path / 'corvid-hops'}")  # fmt: skip
    report = blind_server.client("acme").create_report(
        PARENT, base=f"{PARENT}/datasets/acme-crm", others=[f"{PARENT}/datasets/brightmart-crm"]
    )
    assert report.pairwise_overlaps[0].matched_row_count.value == 75


@pytest.fixture
def two_rooms(pki: DemoPki, tmp_path: Path) -> Iterator[RunningServer]:
    """A server with two double-blind collaborations of the same brands."""
    data = config_data(pki, tmp_path / "two-data", collaboration={"matching": "double_blind"})
    second = {**data["collaborations"][0], "id": "autumn-sale"}
    second["key_check_value"] = key_check_value(SECRET, "autumn-sale")
    data["collaborations"].append(second)
    config = parse_config(data, base_dir=tmp_path / "two-data")
    clean_room = CleanRoom(config)
    metrics = CallMetrics()
    interceptor = audit_interceptor(clean_room, metrics)
    grpc_server, port = build_server(clean_room, interceptor=interceptor)
    running = RunningServer(pki, config, clean_room, grpc_server, port, interceptor, metrics)
    try:
        yield running
    finally:
        running.stop()


def test_one_worker_takes_the_hops_of_every_collaboration_it_has_a_key_of(
    two_rooms: RunningServer, tmp_path: Path
) -> None:
    pool = random_digests(np.random.default_rng(20), 60)
    keys: dict[tuple[str, str], Path] = {}
    for room in (COLLABORATION, "autumn-sale"):
        for brand in ("acme", "brightmart"):
            keys[brand, room] = tmp_path / f"{brand}-{room}.blindkey"
            cli(two_rooms, brand, "blind-key", f"--collaboration={room}",
                f"--out={keys[brand, room]}")  # fmt: skip
        digests = write_digest_file(
            tmp_path / f"{room}.parquet", {"email": digest_array(pool)},
            collaboration=room, kcv=key_check_value(SECRET, room),
        )  # fmt: skip
        cli(two_rooms, "acme", "upload", str(digests), "--dataset-id=acme-crm",
            f"--blind-key={keys['acme', room]}")  # fmt: skip
    both = [f"--blind-key={keys['brightmart', room]}" for room in (COLLABORATION, "autumn-sale")]
    out = cli(two_rooms, "brightmart", "blind", "work", *both, f"--journal={tmp_path / 'hops'}")
    assert f"{COLLABORATION}: masked 1 dataset (60 rows)" in out
    assert "autumn-sale: masked 1 dataset (60 rows)" in out
    for room in (COLLABORATION, "autumn-sale"):
        dataset = two_rooms.client("acme").get_dataset(f"collaborations/{room}/datasets/acme-crm")
        assert list(dataset.mask_set) == ["partners/acme", "partners/brightmart"]
    # Two keys of one collaboration: refused before any call.
    twice = [f"--blind-key={keys['brightmart', COLLABORATION]}",
             f"--blind-key={keys['acme', COLLABORATION]}"]  # fmt: skip
    out = cli(two_rooms, "brightmart", "blind", "work", *twice, code=2)
    assert "DUPLICATE_BLIND_KEY" in out
    # --collaboration picks one of the keys.
    out = cli(two_rooms, "brightmart", "blind", "work", *both, "--collaboration=autumn-sale",
              f"--journal={tmp_path / 'hops'}")  # fmt: skip
    assert "autumn-sale: no masking hop was waiting" in out
    assert COLLABORATION not in out
