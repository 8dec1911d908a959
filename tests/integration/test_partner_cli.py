"""The partner toolkit's command line against the real server: what brands actually type."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from partners.cli import main
from partners.preparation.digest import write_secret
from tests.support import COLLABORATION, SECRET, RunningServer


def env_for(server: RunningServer, partner: str) -> dict[str, str]:
    connection = server.connection(partner)
    return {
        "CLEANROOM_SERVER": connection.target,
        "CLEANROOM_CERT": str(connection.certificate),
        "CLEANROOM_KEY": str(connection.private_key),
        "CLEANROOM_CA": str(connection.ca_certificate),
        "CLEANROOM_SERVER_NAME": "localhost",
    }


def customers(path: Path, first: int, count: int) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "Email", "mobile", "tier"])
        for i in range(first, first + count):
            email = f"  Person.{i}@Example.com " if i % 3 else f"person.{i}@example.com"
            writer.writerow(
                [
                    i,
                    email,
                    f"(212) 555-{i % 10000:04d}" if i % 2 else "",
                    "gold" if i % 4 else "silver",
                ]
            )
        writer.writerow([0, "not-an-email", "12", "gold"])
    return path


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "collaboration.secret"
    write_secret(path, SECRET)
    return path


def run(server: RunningServer, partner: str, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), env=env_for(server, partner))
    assert result.exit_code == code, result.output
    return result.output


def test_prepare_upload_report_audit(
    server: RunningServer, tmp_path: Path, secret_file: Path
) -> None:
    for brand, first in (("acme", 0), ("brightmart", 200)):
        source = customers(tmp_path / f"{brand}.csv", first, 400)
        digests = tmp_path / f"{brand}.parquet"
        summary = json.loads(run(
            server, brand, "prepare", str(source), str(digests), f"--collaboration={COLLABORATION}",
            f"--secret-file={secret_file}", "--column=Email=email", "--column=mobile=phone",
            "--segment=tier", "--default-region=US", "--json",
        ))  # fmt: skip
        assert summary["rows_read"] == 401
        assert summary["types"]["email"]["invalid_by_reason"] == {"missing_at_sign": 1}
        out = run(server, brand, "upload", str(digests), f"--dataset-id={brand}-crm")
        assert f"collaborations/{COLLABORATION}/datasets/{brand}-crm" in out

    listed = json.loads(
        run(server, "acme", "datasets", "list", f"--collaboration={COLLABORATION}", "--json")
    )
    assert [d["name"].rsplit("/", 1)[-1] for d in listed] == ["acme-crm"]

    report = json.loads(run(
        server, "acme", "report", "create", f"--collaboration={COLLABORATION}",
        "--base=acme-crm", "--other=brightmart-crm", "--segment=tier", "--json",
    ))  # fmt: skip
    pair = report["pairwise_overlaps"][0]
    # Persons 200..399 match by email once normalized; proto3 JSON writes int64 as a string.
    assert int(pair["matched_row_count"]["value"]) == 200
    table = run(server, "acme", "report", "get", report["name"])
    assert "Pairwise overlap" in table
    assert "200" in table
    rows = list(
        csv.DictReader(run(server, "acme", "report", "get", report["name"], "--csv").splitlines())
    )
    assert {r["figure"] for r in rows} == {"dataset_size", "pairwise_overlap", "membership_cell"}

    events = [
        json.loads(line)
        for line in run(
            server, "ledger", "audit", "list", f"--collaboration={COLLABORATION}", "--json"
        ).splitlines()
    ]
    methods = [e["method"].rsplit("/", 1)[-1] for e in events]
    assert methods[:8] == [
        "UploadDataset",
        "UploadDataset",
        "ListDatasets",
        "CreateOverlapReport",
        "GetOverlapReport",
        "ListSharedDatasets",  # the tables show owners and the caller's exact sizes
        "ListDatasets",
        "GetOverlapReport",
    ]


def test_errors_are_clear_and_exit_non_zero(
    server: RunningServer, tmp_path: Path, secret_file: Path
) -> None:
    source = customers(tmp_path / "acme.csv", 0, 50)
    out = run(
        server, "acme", "prepare", str(source), str(tmp_path / "d.parquet"),
        f"--collaboration={COLLABORATION}", f"--secret-file={secret_file}", "--column=email=email",
        code=2,
    )  # fmt: skip
    assert "UNKNOWN_COLUMN" in out
    assert "Email" in out  # the message lists the file's columns
    out = run(server, "ledger", "report", "list", f"--collaboration={COLLABORATION}", code=1)
    assert "PERMISSION_DENIED ROLE_REQUIRED" in out
    out = run(
        server,
        "acme",
        "datasets",
        "show",
        "nothing-here",
        f"--collaboration={COLLABORATION}",
        code=1,
    )
    assert "PERMISSION_DENIED DATASET_NOT_ACCESSIBLE" in out


def test_an_own_deleted_dataset_reads_as_not_accessible_not_as_someone_elses(
    server: RunningServer, tmp_path: Path, secret_file: Path
) -> None:
    source = customers(tmp_path / "acme.csv", 0, 50)
    digests = tmp_path / "acme.parquet"
    run(
        server, "acme", "prepare", str(source), str(digests), f"--collaboration={COLLABORATION}",
        f"--secret-file={secret_file}", "--column=Email=email",
    )  # fmt: skip
    run(server, "acme", "upload", str(digests), "--dataset-id=acme-gone")
    run(
        server,
        "acme",
        "datasets",
        "delete",
        "acme-gone",
        f"--collaboration={COLLABORATION}",
        "--yes",
    )
    out = run(
        server, "acme", "datasets", "show", "acme-gone", f"--collaboration={COLLABORATION}", code=1
    )
    assert "PERMISSION_DENIED DATASET_NOT_ACCESSIBLE" in out
    assert "another partner" in out  # one message for every reader: missing, gone or theirs
    assert "NOT_DATASET_OWNER" not in out
