"""One form for each thing, whichever command shows it (issue: first impressions).

Callers in short and full form, times with `Z` or offsets, hashes in hex in both the
listing and the export, typed Parquet exports, and integers as JSON numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.integration.test_partner_cli import run
from tests.support import (
    COLLABORATION,
    RunningServer,
    digest_array,
    random_digests,
    write_digest_file,
)


def _upload(server: RunningServer, tmp_path: Path) -> None:
    digests = digest_array(random_digests(np.random.default_rng(5), 40))
    path = write_digest_file(tmp_path / "acme.parquet", {"email": digests})
    run(server, "acme", "upload", str(path), "--dataset-id=acme-crm")


def test_row_counts_are_json_numbers(server: RunningServer, tmp_path: Path) -> None:
    _upload(server, tmp_path)
    (listed,) = json.loads(
        run(server, "acme", "datasets", "list", f"--collaboration={COLLABORATION}", "--json")
    )
    assert listed["row_count"] == 40
    assert listed["identifier_stats"][0]["present_count"] == 40


def test_callers_in_short_and_full_form_select_the_same_events(
    server: RunningServer, tmp_path: Path
) -> None:
    _upload(server, tmp_path)

    def listed(*options: str) -> list[str]:
        out = run(
            server, "ledger", "audit", "list", f"--collaboration={COLLABORATION}", "--json",
            *options,
        )  # fmt: skip
        return out.splitlines()

    short, full = listed("--caller=acme"), listed("--caller=partners/acme")
    assert short
    assert short == full


def test_times_with_z_or_an_offset_are_accepted(server: RunningServer, tmp_path: Path) -> None:
    _upload(server, tmp_path)
    for since in ("2026-11-01T00:00:00Z", "2026-11-01T07:00:00+07:00", "2026-11-01"):
        out = run(
            server, "ledger", "audit", "list", f"--collaboration={COLLABORATION}", "--json",
            f"--since={since}",
        )  # fmt: skip
        assert out.splitlines(), since
    future = run(
        server, "ledger", "audit", "list", f"--collaboration={COLLABORATION}", "--json",
        "--since=2999-01-01T00:00:00+07:00",
    )  # fmt: skip
    assert future == ""


def test_hashes_read_the_same_in_the_listing_and_the_export(
    server: RunningServer, tmp_path: Path
) -> None:
    _upload(server, tmp_path)
    listed = [
        json.loads(line)
        for line in run(
            server, "ledger", "audit", "list", f"--collaboration={COLLABORATION}", "--json"
        ).splitlines()
    ]
    out = tmp_path / "log.parquet"
    run(
        server, "ledger", "audit", "export", f"--collaboration={COLLABORATION}",
        "--format=parquet", f"--out={out}",
    )  # fmt: skip
    exported = pq.read_table(out)
    count = len(listed)  # the export holds the listing's own event too
    assert [e["leaf_hash"] for e in listed] == exported.column("leaf_hash").to_pylist()[:count]
    assert [json.loads(e["entry"]) for e in listed] == [
        json.loads(entry) for entry in exported.column("entry").to_pylist()[:count]
    ]
    assert exported.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert exported.schema.field("caller_roles").type == pa.list_(pa.string())
    assert exported.schema.field("resources").type == pa.list_(pa.string())
    upload = exported.to_pylist()[0]
    assert upload["resources"] == [f"collaborations/{COLLABORATION}/datasets/acme-crm"]
