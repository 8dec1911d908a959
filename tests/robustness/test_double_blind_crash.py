"""Crashes during masking hops (issue 18): nothing lost, nothing applied twice.

The server (a `cleanroom serve` process) is killed with SIGKILL while it streams a hop's
rows (StartMaskingHop), while a brand streams its result (CompleteMaskingHop), right
after the brand has sent all of it, and while the real `cleanroom-partner blind work`
sends its journaled result (a relay swallows it); a brand's `blind work` process is killed
after it has written its journal, while the server holds its CompleteMaskingHop before
reading it, and after the server has applied it but before the brand has its answer.
Every crash point is reached by waiting for an event, never by sleeping. After each crash the data directory holds no scratch or orphan file, every hop is
pending or applied exactly once, `blind work` resumes from its journal, and at the end
every dataset stores exactly `K · P(d)` and the reports equal the shared-secret mode's.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cleanroom.audit.check import check_logs
from cleanroom.audit.log import AuditFilter
from cleanroom.config import load_config
from cleanroom.demo.deployment import loopback_connection
from cleanroom.proofs.signed_note import NoteVerifier
from cleanroom.tls.pki import DemoPki
from cleanroom.usecases.clean_room import CleanRoom
from cleanroom.v1 import masking_service_pb2
from partners.client import CleanRoomClient, Connection
from tests.double_blind import (
    BLIND,
    MASKING_SERVICE,
    QUESTIONS,
    Audience,
    CallHooks,
    Delivery,
    HopWorker,
    assert_same_reports,
    assert_stored_exactly,
    audiences,
    dataset_id,
    dataset_in,
    hop_name,
    mask_everything,
    parent,
    partner_command,
    partner_environment,
    partner_name,
    reason_of,
    result_messages,
    serving,
    state_of,
    stored_files_are_named_by_the_catalog,
    two_mode_config,
    upload_blind,
    upload_shared,
    write_toml,
)
from tests.served import ServedProcess, served
from tests.support import BRANDS, LOG_SIGNER

pytestmark = pytest.mark.slow

SIZES = {"acme": 400, "brightmart": 1500, "corvid": 300}
EVERYONE = sorted(partner_name(b) for b in BRANDS)


def blind_keys(folder: Path) -> tuple[dict[str, bytes], dict[str, Path]]:
    """Each brand's blind key, and the file `blind work` reads it from."""
    from partners import new_blind_key, write_blind_key

    keys = {brand: new_blind_key() for brand in BRANDS}
    files = {brand: folder / f"{brand}.blind-key" for brand in BRANDS}
    folder.mkdir(parents=True, exist_ok=True)
    for brand, key in keys.items():
        write_blind_key(files[brand], key, collaboration=BLIND)
    return keys, files


def restarted(config: Path) -> None:
    """Opens the data directory as a restarting server does, then checks what is on disk."""
    room = CleanRoom(load_config(config))  # removes scratch and orphan files, as a restart does
    room.close()
    stored_files_are_named_by_the_catalog(load_config(config).server.data_dir)


def killed(server: ServedProcess) -> None:
    for client in server.clients.values():
        client.close()
    server.clients.clear()
    server.signal(signal.SIGKILL)
    assert server.process.wait(timeout=60) == -signal.SIGKILL


def state(server: ServedProcess, dataset: str) -> tuple[str, list[str], list[str]]:
    owner = dataset.rsplit("/", 1)[-1].removesuffix("-crm")
    return state_of(server.client(owner).get_dataset(dataset))


def blind_work(
    server_port: int, pki: DemoPki, brand: str, key_file: Path, home: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        partner_command("blind", "work", f"--blind-key={key_file}", f"--collaboration={BLIND}",
                        f"--journal={home / 'journal'}", "--quiet"),
        env=partner_environment(loopback_connection(pki, brand, server_port), home),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def held_messages(
    messages: list[masking_service_pb2.CompleteMaskingHopRequest],
    *,
    hold_before: int,
    asked: threading.Event,
    release: threading.Event,
) -> Iterator[masking_service_pb2.CompleteMaskingHopRequest]:
    """The messages, but the one at `hold_before` only once released (never, if the call
    dies first); `asked` is set when gRPC has taken every message before it."""
    for index, message in enumerate(messages):
        if index == hold_before:
            asked.set()
            if not release.wait(60):
                return
        yield message
    if hold_before >= len(messages):
        asked.set()


def complete_in_background(
    worker: HopWorker, messages: Iterator[masking_service_pb2.CompleteMaskingHopRequest]
) -> Any:
    return worker.stub.CompleteMaskingHop.future(messages, timeout=60)


def test_sigkill_of_the_server_during_hops(pki: DemoPki, tmp_path: Path) -> None:
    lists = audiences(31, SIZES)
    keys, key_files = blind_keys(tmp_path / "keys")
    config = write_toml(tmp_path / "cleanroom.toml", two_mode_config(pki, tmp_path / "data"))
    first, second = (hop_name(BLIND, dataset_id(b), "acme") for b in ("brightmart", "corvid"))
    with served(pki, config) as server:
        upload_shared(server, lists, tmp_path / "files")
        for brand in BRANDS:
            upload_blind(server, lists[brand], keys[brand], tmp_path / "files")
        acme = HopWorker("acme", keys["acme"], loopback_connection(pki, "acme", server.port))
        # 1. Killed while StartMaskingHop streams: the attempt began, its rows on the way.
        call = acme.stub.StartMaskingHop(
            masking_service_pb2.StartMaskingHopRequest(name=first), timeout=60
        )
        opening = next(call)
        assert opening.WhichOneof("payload") == "attempt"
        interrupted = opening.attempt.attempt_id
        killed(server)
        # The rows outgrow the flow-control window: the server was still sending. (Had it
        # sent them all, the attempt would simply never be completed: the same for the hop.)
        with contextlib.suppress(grpc.RpcError):
            list(call)
        acme.close()
    restarted(config)

    with served(pki, config) as server:
        acme = HopWorker("acme", keys["acme"], loopback_connection(pki, "acme", server.port))
        assert first in {h.name for h in acme.hops(BLIND)}
        brightmart = dataset_in(BLIND, dataset_id("brightmart"))
        assert state(server, brightmart)[1] == [partner_name("brightmart")]
        # 2. Killed while CompleteMaskingHop streams: header and a chunk sent, the rest held.
        delivery = acme.start(first)
        assert delivery.attempt_id != interrupted
        result = acme.result(delivery)
        messages = result_messages(first, delivery.attempt_id, result, chunks=3)
        asked, release = threading.Event(), threading.Event()
        future = complete_in_background(
            acme, held_messages(messages, hold_before=2, asked=asked, release=release)
        )
        assert asked.wait(60)
        killed(server)
        release.set()
        with pytest.raises(grpc.RpcError):
            future.result()
        acme.close()
    restarted(config)

    with served(pki, config) as server:
        acme = HopWorker("acme", keys["acme"], loopback_connection(pki, "acme", server.port))
        assert state(server, brightmart)[1] == [partner_name("brightmart")], "applied unfinished"
        assert first in {h.name for h in acme.hops(BLIND)}
        # The journal's way: the newest attempt survives the restart and takes its result
        # once; the older one is refused.
        stale = Delivery(delivery.hop, interrupted, "", [], b"")
        with pytest.raises(grpc.RpcError) as superseded:
            acme.complete(stale, result)
        assert reason_of(superseded.value) == "MASKING_HOP_ATTEMPT_SUPERSEDED"
        acme.complete(delivery, result)
        assert state(server, brightmart)[1] == sorted(
            [partner_name("brightmart"), partner_name("acme")]
        )
        with pytest.raises(grpc.RpcError) as again:
            acme.complete(delivery, result)
        assert reason_of(again.value) == "MASKING_HOP_ALREADY_APPLIED"
        # 3. Killed right after the brand sent its whole result, before it has the answer.
        delivery = acme.start(second)
        result = acme.result(delivery)
        messages = result_messages(second, delivery.attempt_id, result, chunks=2)
        asked, release = threading.Event(), threading.Event()
        future = complete_in_background(
            acme, held_messages(messages, hold_before=len(messages), asked=asked, release=release)
        )
        assert asked.wait(60)
        killed(server)
        release.set()
        with contextlib.suppress(grpc.RpcError):  # the answer died with the server; the hop
            future.result()  # may or may not be applied
        acme.close()
    restarted(config)

    with served(pki, config) as server:
        acme = HopWorker("acme", keys["acme"], loopback_connection(pki, "acme", server.port))
        corvid = dataset_in(BLIND, dataset_id("corvid"))
        applied = partner_name("acme") in state(server, corvid)[1]
        assert (second in {h.name for h in acme.hops(BLIND)}) != applied
        if applied:
            with pytest.raises(grpc.RpcError) as again:
                acme.complete(delivery, result)
            assert reason_of(again.value) == "MASKING_HOP_ALREADY_APPLIED"
        else:
            acme.complete(delivery, result)
        assert state(server, corvid)[1] == sorted([partner_name("corvid"), partner_name("acme")])
        acme.close()
        # The rest with the command line, as the brands run it, until no hop waits.
        for _round in range(len(BRANDS)):
            waiting = [b for b in BRANDS if list(server.client(b).list_masking_hops(parent(BLIND)))]
            for brand in waiting:
                done = blind_work(server.port, pki, brand, key_files[brand], tmp_path / brand)
                assert done.returncode == 0, done.stdout + done.stderr
        for brand in BRANDS:
            dataset = dataset_in(BLIND, dataset_id(brand))
            assert state(server, dataset) == ("MATCHING_STATE_MATCHABLE", EVERYONE, [])
        assert_same_reports(server, QUESTIONS)
    finished(config, lists, keys)


class HoldingProxy:
    """A TCP relay between a brand and the server (TLS passes through it untouched) that
    stops relaying the brand's bytes for good once `hold` is true: from then on the server
    hears nothing more from the brand, whatever it sends."""

    def __init__(self, port: int, hold: Callable[[], bool]) -> None:
        self.port, self.hold = port, hold
        self.held = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                brand, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.port))
                self.sockets += [brand, server]
                threading.Thread(
                    target=self._relay, args=(brand, server, True), daemon=True
                ).start()
                threading.Thread(
                    target=self._relay, args=(server, brand, False), daemon=True
                ).start()

    def _relay(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if upstream and (self.held.is_set() or self.hold()):
                    self.held.set()
                    continue  # swallowed: the server never gets it
                target.sendall(data)
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for end in self.sockets:
            with contextlib.suppress(OSError):
                end.close()


def journal_entries(journal: Path) -> list[Path]:
    return sorted(p for p in journal.rglob("*") if p.is_file() and p.name != ".lock")


def test_sigkill_of_the_server_while_blind_work_sends_its_result(
    pki: DemoPki, tmp_path: Path
) -> None:
    lists = audiences(33, SIZES)
    keys, key_files = blind_keys(tmp_path / "keys")
    config = write_toml(tmp_path / "cleanroom.toml", two_mode_config(pki, tmp_path / "data"))
    home = tmp_path / "acme"
    journal = home / "journal"
    command = partner_command("blind", "work", f"--blind-key={key_files['acme']}",
                              f"--collaboration={BLIND}", f"--journal={journal}", "--quiet")  # fmt: skip
    with served(pki, config) as server:
        upload_shared(server, lists, tmp_path / "files")
        for brand in BRANDS:
            upload_blind(server, lists[brand], keys[brand], tmp_path / "files")
        held = min(h.name for h in server.client("acme").list_masking_hops(parent(BLIND)))
        # The result is journaled before it is sent: from that moment the server hears
        # nothing more from the brand, and dies.
        proxy = HoldingProxy(server.port, lambda: bool(journal_entries(journal)))
        connection = loopback_connection(pki, "acme", server.port)
        relayed = Connection(proxy.address, connection.certificate, connection.private_key,
                             connection.ca_certificate, "localhost")  # fmt: skip
        process = subprocess.Popen(
            command, env=partner_environment(relayed, home),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert proxy.held.wait(120), "blind work never sent a result"
            killed(server)
        finally:
            proxy.close()
            output, _ = process.communicate(timeout=120)
        assert process.returncode != 0, output  # it says the server was gone
        assert len(journal_entries(journal)) == 1, output  # and keeps the result
    restarted(config)

    with served(pki, config) as server:
        dataset = held.rsplit("/maskingHops/", 1)[0]
        owner = dataset.rsplit("/", 1)[-1].removesuffix("-crm")
        assert state(server, dataset)[1] == [partner_name(owner)]
        again = subprocess.run(
            command, env=partner_environment(loopback_connection(pki, "acme", server.port), home),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert again.returncode == 0, again.stdout + again.stderr
        assert journal_entries(journal) == []
        assert state(server, dataset)[1] == sorted([partner_name(owner), partner_name("acme")])
        with CleanRoomClient(loopback_connection(pki, "ledger", server.port)) as auditor:
            events = [e for e in auditor.list_audit_events(parent(BLIND)) if held in e.resources]
        starts = [e for e in events if e.method == MASKING_SERVICE + "StartMaskingHop"]
        completions = [e for e in events if e.method == MASKING_SERVICE + "CompleteMaskingHop"]
        assert len(starts) == 1, "the journaled result was not sent again"
        assert [e.outcome.status_code for e in completions] == ["OK"]
        mask_everything(server, keys, tmp_path / "journals")
        assert_same_reports(server, QUESTIONS)
    finished(config, lists, keys)


def finished(config: Path, lists: dict[str, Audience], keys: dict[str, bytes]) -> None:
    """The stopped server's directory: exact elements, no stray file, a log that verifies."""
    loaded = load_config(config)
    room = CleanRoom(loaded)
    try:
        assert_stored_exactly(room, lists, keys)
    finally:
        room.close()
    stored_files_are_named_by_the_catalog(loaded.server.data_dir)
    results = check_logs(loaded.server.data_dir, NoteVerifier(LOG_SIGNER.verifier_key))
    assert all(r.ok for r in results), [r.problem for r in results if not r.ok]


class Hold:
    """Holds the first CompleteMaskingHop at one point of the call until released."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.reached, self.release, self.ended = (threading.Event() for _ in range(3))
        self.armed = True

    def hooks(self) -> CallHooks:
        return CallHooks(
            arriving=lambda method: self._at("arriving", method),
            answering=lambda method: self._at("answering", method),
            ended=self._ended,
        )

    def _at(self, where: str, method: str) -> None:
        if self.armed and where == self.where and method.endswith("/CompleteMaskingHop"):
            self.reached.set()
            assert self.release.wait(60)

    def _ended(self, method: str) -> None:
        if self.armed and method.endswith("/CompleteMaskingHop") and self.release.is_set():
            self.armed = False
            self.ended.set()


@pytest.mark.parametrize("where", ["arriving", "answering"])
def test_sigkill_of_blind_work_after_its_journal(pki: DemoPki, tmp_path: Path, where: str) -> None:
    lists = audiences(32, SIZES)
    keys, key_files = blind_keys(tmp_path / "keys")
    hold = Hold(where)
    home = tmp_path / "acme"
    journal = home / "journal"
    with serving(pki, two_mode_config(pki, tmp_path / "data"), hooks=hold.hooks()) as running:
        upload_shared(running, lists, tmp_path / "files")
        for brand in BRANDS:
            upload_blind(running, lists[brand], keys[brand], tmp_path / "files")
        hops = sorted(h.name for h in running.client("acme").list_masking_hops(parent(BLIND)))
        process = subprocess.Popen(
            partner_command("blind", "work", f"--blind-key={key_files['acme']}",
                            f"--collaboration={BLIND}", f"--journal={journal}", "--quiet"),
            env=partner_environment(running.connection("acme"), home),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert hold.reached.wait(120), "blind work never completed a hop"
            entries = [p for p in journal.rglob("*") if p.is_file() and p.name != ".lock"]
            assert len(entries) == 1, "the result is not journaled before it is sent"
        finally:
            process.kill()
            process.wait(timeout=60)
        hold.release.set()
        assert hold.ended.wait(60)
        held = hops[0]  # the hops are taken in the order of their names
        dataset = held.rsplit("/maskingHops/", 1)[0]
        owner = dataset.rsplit("/", 1)[-1].removesuffix("-crm")
        masks = state_of(running.client(owner).get_dataset(dataset))[1]
        if where == "arriving":  # the brand died mid-send: the hop waits (or, if every
            # byte was already on its way, is applied: either way, once)
            assert masks in (
                [partner_name(owner)],
                sorted([partner_name(owner), partner_name("acme")]),
            )
        else:  # the server applied it, the brand never heard
            assert masks == sorted([partner_name(owner), partner_name("acme")])
        assert [p for p in journal.rglob("*") if p.is_file() and p.name != ".lock"] == entries

        again = subprocess.run(
            partner_command("blind", "work", f"--blind-key={key_files['acme']}",
                            f"--collaboration={BLIND}", f"--journal={journal}", "--quiet"),
            env=partner_environment(running.connection("acme"), home),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert again.returncode == 0, again.stdout + again.stderr
        assert [p for p in journal.rglob("*") if p.is_file() and p.name != ".lock"] == []
        assert list(running.client("acme").list_masking_hops(parent(BLIND))) == []
        # The journal's result was sent again: the hop had one attempt, applied once.
        starts = hop_events(running, "StartMaskingHop", held)
        completions = hop_events(running, "CompleteMaskingHop", held)
        assert len(starts) == 1, [e.outcome for e in starts]
        assert [e.outcome.status_code for e in completions].count("OK") == 1

        mask_everything(running, keys, tmp_path / "journals")
        for brand in BRANDS:
            dataset = running.client(brand).get_dataset(dataset_in(BLIND, dataset_id(brand)))
            assert state_of(dataset) == ("MATCHING_STATE_MATCHABLE", EVERYONE, [])
        assert_stored_exactly(running.clean_room, lists, keys)
        assert_same_reports(running, QUESTIONS)
    stored_files_are_named_by_the_catalog(tmp_path / "data")


def hop_events(running: Any, method: str, hop: str) -> list[Any]:
    events = running.clean_room.audit_log.events(
        BLIND, AuditFilter(method=MASKING_SERVICE + method), after=-1, limit=100_000
    )
    return [e for e in events if hop in e.resources]
