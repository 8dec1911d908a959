"""Operations benchmark: what the access log and metrics cost per call, scrapes, backups.

Runs a real server in this process (mutual TLS over loopback) and times one cheap call
(GetPrivacyBudget) many times, with and without the access log and the metrics, in the
same run; then the time of a `/metrics` scrape; then a backup of a data directory beside
a plain recursive copy of it (the floor). Writes `bench-results/operations.md` and
`operations.json`. Never fails on a time.

    python -m bench.operations [--quick] [--out bench-results]
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench._report import machine, publish
from cleanroom.config import parse_config
from cleanroom.demo.deployment import loopback_connection
from cleanroom.names import DatasetName
from cleanroom.ops.backup import backup_data_dir
from cleanroom.ops.logs import configure_logging
from cleanroom.ops.metrics import CallMetrics
from cleanroom.proofs.signed_note import NoteSigner
from cleanroom.service.server import audit_interceptor, build_server
from cleanroom.storage.catalog import DatasetRecord, IdentifierStats
from cleanroom.tls.files import read_tls
from cleanroom.tls.pki import create_demo_pki, partner_dns_name, write_private_file
from cleanroom.usecases.clean_room import CleanRoom
from partners.client import CleanRoomClient

CALLS, QUICK_CALLS = 2000, 300
PARENT = "collaborations/bench-ops"


def _config(root: Path) -> dict[str, Any]:
    pki = create_demo_pki(root / "certs", partners=["acme"])
    signer = NoteSigner.generate("cleanroom.bench")
    write_private_file(root / "certs" / "log.key", signer.key_text() + "\n")
    return {
        "pki": pki,
        "data": {
            "server": {
                "listen": "127.0.0.1:0",
                "data_dir": str(root / "data"),
                "tls": {
                    "certificate": str(pki.server.certificate),
                    "private_key": str(pki.server.private_key),
                    "client_ca": str(pki.ca.certificate),
                },
                "audit": {"signing_key": str(root / "certs" / "log.key")},
            },
            "partners": [{"id": "acme", "certificate_names": [partner_dns_name("acme")]}],
            "collaborations": [
                {
                    "id": "bench-ops",
                    "key_check_value": "0123456789abcdef",
                    "members": [{"partner": "acme", "roles": ["analyst"]}],
                }
            ],
        },
    }


def _call_latencies(root: Path, calls: int, *, observed: bool) -> tuple[list[float], float]:
    """Seconds per GetPrivacyBudget, and the median `/metrics` exposition time if observed."""
    made = _config(root)
    clean_room = CleanRoom(parse_config(made["data"], base_dir=root))
    metrics = CallMetrics() if observed else None
    if metrics is not None:
        tls = read_tls(clean_room.config.server.tls)
        metrics.watch(clean_room, lambda: tls)
    # The access log goes to memory, as it would to a pipe; WARNING writes no access line.
    configure_logging("INFO" if observed else "WARNING", "json", io.StringIO())
    server, port = build_server(clean_room, interceptor=audit_interceptor(clean_room, metrics))
    client = CleanRoomClient(loopback_connection(made["pki"], "acme", port), timeout=30)
    try:
        for _ in range(50):  # warm-up: connection, caches
            client.get_budget(PARENT)
        seconds = []
        for _ in range(calls):
            started = time.perf_counter()
            client.get_budget(PARENT)
            seconds.append(time.perf_counter() - started)
        scrape = 0.0
        if metrics is not None:
            scrape = statistics.median(_timed(metrics.exposition, 50))
    finally:
        client.close()
        server.stop(None).wait()
        clean_room.close()
        logging.getLogger().handlers.clear()
    return seconds, scrape


def _timed(action: Callable[[], object], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return seconds


def _backup_figures(root: Path, megabytes: int) -> dict[str, float]:
    """A data directory with `megabytes` of dataset files, backed up and plainly copied."""
    made = _config(root)
    clean_room = CleanRoom(parse_config(made["data"], base_dir=root))
    rng = np.random.default_rng(1)
    rows = megabytes * 1024 * 1024 // 32 // 8
    for index in range(8):
        digests = rng.integers(0, 256, size=(rows, 32), dtype=np.uint8)
        table = pa.table({"email": pa.array([bytes(r) for r in digests], pa.binary(32))})
        file_name = clean_room.files.commit(table, collaboration="bench-ops", dataset=f"d{index}")
        clean_room.catalog.add_dataset(
            DatasetRecord(
                name=DatasetName("bench-ops", f"d{index}"),
                owner="acme",
                identifier_types=("email",),
                segment_columns=(),
                row_count=rows,
                checksum="0" * 64,
                key_check_value="0123456789abcdef",
                identifier_stats=(IdentifierStats("email", rows, 0),),
                file_name=file_name,
                create_time=datetime.now(UTC),
            )
        )
    clean_room.close()
    data = root / "data"
    started = time.perf_counter()
    backup_data_dir(data, root / "backup")
    backup = time.perf_counter() - started
    started = time.perf_counter()
    shutil.copytree(data, root / "plain-copy")
    plain = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (data / "datasets").iterdir())
    return {"bytes": size, "backup_seconds": backup, "plain_copy_seconds": plain}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the figures and prints the table; always 0."""
    args = _arguments(list(sys.argv[1:] if argv is None else argv))
    calls = QUICK_CALLS if args.quick else CALLS
    results: dict[str, Any] = {"calls": calls, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-ops-") as work:
        root = Path(work)
        bare, _ = _call_latencies(root / "bare", calls, observed=False)
        observed, scrape = _call_latencies(root / "observed", calls, observed=True)
        results["baseline_call"] = _summary(bare)
        results["observed_call"] = _summary(observed)
        results["scrape_seconds"] = scrape
        results["backup"] = _backup_figures(root / "backup-world", 16 if args.quick else 64)
    publish(Path(args.out), "operations", render(results), results)
    return 0


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_seconds": statistics.median(ordered),
        "p95_seconds": ordered[int(len(ordered) * 0.95)],
    }


def render(results: dict[str, Any]) -> str:
    """The Markdown tables."""
    bare, observed = results["baseline_call"], results["observed_call"]
    backup = results["backup"]
    overhead = observed["median_seconds"] - bare["median_seconds"]
    return "\n".join([
        f"## Operations ({results['calls']} GetPrivacyBudget calls each,"
        f" {results['machine']['summary']})",
        "",
        "| configuration | median | p95 |",
        "|---|---:|---:|",
        f"| baseline: audited, no access log, no metrics | {bare['median_seconds'] * 1e3:.3f} ms"
        f" | {bare['p95_seconds'] * 1e3:.3f} ms |",
        f"| audited + JSON access log + metrics | {observed['median_seconds'] * 1e3:.3f} ms"
        f" | {observed['p95_seconds'] * 1e3:.3f} ms |",
        "",
        f"Access log and metrics add {overhead * 1e6:.0f} µs to the median call;"
        f" a `/metrics` exposition takes {results['scrape_seconds'] * 1e3:.2f} ms.",
        "",
        f"| copy of {backup['bytes'] / 2**20:.0f} MiB of dataset files | seconds |",
        "|---|---:|",
        f"| `cleanroom backup` (online backup, SHA-256 manifest, fsync) |"
        f" {backup['backup_seconds']:.2f} |",
        f"| baseline: plain recursive copy | {backup['plain_copy_seconds']:.2f} |",
        "",
    ])  # fmt: skip


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.operations", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CALLS} calls, 16 MiB")
    parser.add_argument("--out", default="bench-results", help="where the tables go")
    return parser.parse_known_args(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
