"""Query log benchmark: what the server's self-checks cost, beside the floors they stand on.

Fills a real SQLite database with events through `AuditLog.append` and times, in the same
run on the same file:

- one append with its check that the store is as the server left it, beside the floor of
  any append: hashing the entry, three inserts and one signature in one transaction;
- the replay at start (every event reread and rehashed, the latest checkpoint verified),
  beside the floor: reading every stored entry and hashing it;
- a filtered listing that matches nothing, so reads and parses every hashed entry (filters
  read the entries, not the columns), beside the same floor;
- the operator's offline check, which also verifies every checkpoint's signature.

Writes `bench-results/audit.md` and `audit.json`. Never fails on a time.

    python -m bench.audit [--quick] [--events 20000] [--out bench-results]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench._report import machine, publish
from cleanroom.audit.check import check_logs
from cleanroom.audit.log import AuditEvent, AuditFilter, AuditLog
from cleanroom.proofs import merkle
from cleanroom.proofs.signed_note import Checkpoint, NoteSigner, NoteVerifier
from cleanroom.storage.database import Database

EVENTS, QUICK_EVENTS = 20_000, 3_000
APPENDS = 200
LOG = "bench"


def _event(index: int) -> AuditEvent:
    event = AuditEvent(method="/cleanroom.v1.PartnerService/GetDataset", caller="partners/acme")
    event.log = LOG
    event.caller_roles = ("analyst", "uploader")
    event.resources = [f"collaborations/{LOG}/datasets/acme-{index % 50}"]
    event.request_summary = {"page_size": 100, "continued": False}
    return event


def _seconds(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _floor_append(database: Database, signer: NoteSigner, index: int) -> None:
    """What any append must do: hash, insert event, head and signed checkpoint, commit."""
    entry = _event(index).entry()
    leaf = merkle.leaf_hash(entry)
    with database.transaction() as db:
        db.execute(
            "INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("floor", index, "t", "c", "m", entry, leaf),
        )
        db.execute("INSERT OR REPLACE INTO audit_logs VALUES (?, ?, ?)", ("floor", index, leaf))
        note = signer.sign(Checkpoint("floor", index + 1, leaf).body())
        db.execute("INSERT INTO audit_checkpoints VALUES (?, ?, ?)", ("floor", index + 1, note))


def _floor_replay(database: Database) -> None:
    with database.reading() as db:
        for (entry,) in db.execute(
            "SELECT entry FROM audit_events WHERE log = ? ORDER BY log_index", (LOG,)
        ):
            hashlib.sha256(b"\x00" + entry).digest()


def main(argv: Sequence[str] | None = None) -> int:
    """Times the log's checks and prints the table; always 0."""
    args = _arguments(list(sys.argv[1:] if argv is None else argv))
    events: int = args.events or (QUICK_EVENTS if args.quick else EVENTS)
    signer = NoteSigner.generate("bench.test")
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch)
        database = Database(data_dir / "cleanroom.sqlite3")
        log = AuditLog(database, signer)
        fill = _seconds(lambda: [log.append(_event(i)) for i in range(events)])
        figures.append(_figure(f"fill: {events:,} appends", fill, events, None))
        floor_db = Database(data_dir / "floor" / "floor.sqlite3")
        appends, floors = [], []
        for i in range(APPENDS):  # interleaved, so that both see the same disk and load
            appends.append(_seconds(lambda: log.append(_event(0))))
            floors.append(_seconds(lambda i=i: _floor_append(floor_db, signer, i)))
        floor_db.close()
        figures.append(_figure("append, with the store check", statistics.median(appends), 1, None))
        figures.append(_figure("floor: hash, 3 inserts, sign", statistics.median(floors), 1, None))
        database.close()
        database = Database(data_dir / "cleanroom.sqlite3")
        reopened: list[AuditLog] = []
        start = _seconds(lambda: reopened.append(AuditLog(database, signer)))
        floor = _seconds(lambda: _floor_replay(database))
        size = events + APPENDS
        figures.append(_figure(f"replay at start, {size:,} events", start, size, None))
        figures.append(_figure("floor: read and hash every entry", floor, size, None))
        no_match = AuditFilter(method="CreateOverlapReport")  # every entry read, none kept
        listing = _seconds(lambda: reopened[0].entries(LOG, no_match, after=-1, limit=100))
        figures.append(_figure(f"filtered listing, {size:,} events scanned", listing, size, None))
        database.close()
        verifier = NoteVerifier(signer.verifier_key)
        offline = _seconds(lambda: check_logs(data_dir, verifier))
        figures.append(_figure("offline check (every signature)", offline, size, None))
    results = {"events": events, "machine": machine(), "figures": figures}
    publish(Path(args.out), "audit", render(results), results)
    return 0


def _figure(label: str, seconds: float, items: int, target: float | None) -> dict[str, Any]:
    return {
        "label": label,
        "seconds": seconds,
        "microseconds_each": seconds / items * 1e6,
        "target_seconds": target,
    }


def render(results: dict[str, Any]) -> str:
    """The Markdown table of the log's timings."""
    lines = [
        f"## Query log checks ({results['events']:,} events, {results['machine']['summary']})",
        "",
        "| what | time | per event |",
        "|---|---:|---:|",
    ]
    for f in results["figures"]:
        lines.append(f"| {f['label']} | {f['seconds']:.4f} s | {f['microseconds_each']:.1f} µs |")
    return "\n".join(lines) + "\n"


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS} events")
    parser.add_argument("--events", type=int, help=f"events in the log (default {EVENTS})")
    parser.add_argument("--out", default="bench-results", help="where the tables go")
    return parser.parse_known_args(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
