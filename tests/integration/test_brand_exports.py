"""Brands' real exports, prepared and matched end to end against the real server (issue 14).

Every file is generated here from a population of people whose identifiers are known, so the
expected overlap is computed from person numbers alone, independently of the toolkit: each
export is prepared and uploaded with the command line, and a report against a reference
dataset must give exactly the persons both hold.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import xlsxwriter
from click.testing import CliRunner

from cleanroom.tls.pki import DemoPki
from partners.cli import main
from partners.preparation.digest import write_secret
from tests.integration.test_partner_cli import env_for as partner_env
from tests.support import COLLABORATION, SECRET, RunningServer, running_server

PEOPLE = range(0, 400)
REFERENCE = range(0, 300)  # brightmart's customers
JUNK_EMAILS = {
    "mailto_prefix": "mailto:{i}@example.com",
    "display_name": '"Khách {i}" <khach{i}@example.vn>',
    "unsafe_character": "kh\u200bach{i}@example.vn",
    "contains_whitespace": "somchai j{i}@gmail.com",
}
VN_NAMES = ["Nguyễn Văn An", "Trần Thị Bích", "Lê Hoàng Yến", "Phạm Đức Thắng"]
TH_NAMES = ["สมชาย ใจดี", "สมหญิง รักไทย", "ประยุทธ์ มั่นคง", "วิภา ศรีสุข"]


def email(i: int) -> str:
    return f"person.{i}@example.com"


def country(i: int) -> str:
    return "TH" if i % 2 else "VN"


def e164(i: int) -> str:
    return f"+6681{i:07d}" if country(i) == "TH" else f"+8491{i:07d}"


def national(i: int) -> str:
    return f"081{i:07d}" if country(i) == "TH" else f"091{i:07d}"


def env_for(server: RunningServer, partner: str) -> dict[str, str]:
    return {**partner_env(server, partner), "CLEANROOM_COLLABORATION": COLLABORATION}


def cli(server: RunningServer, partner: str, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), env=env_for(server, partner))
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "collaboration.secret"
    write_secret(path, SECRET)
    return path


def write_csv(
    path: Path, header: list[str], rows: list[list[str]], *, delimiter: str = ",",
    encoding: str = "utf-8", newline: str = "\n",
) -> Path:  # fmt: skip
    with path.open("w", encoding=encoding, newline="") as file:
        writer = csv.writer(file, delimiter=delimiter, lineterminator=newline)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def exports(tmp_path: Path) -> list[tuple[str, Path, list[str], set[int], dict[str, int]]]:
    """Each export: dataset id, file, prepare options, persons it holds validly, junk planted."""
    found = []
    vn = [i for i in PEOPLE if country(i) == "VN"][50:]
    found.append((
        "vn-semicolon",
        write_csv(tmp_path / "vn.csv", ["Họ tên", "Email", "Điện thoại"],
                  [[VN_NAMES[i % 4], email(i), national(i)] for i in vn], delimiter=";"),
        ["--column=Email=email", "--column=Điện thoại=phone", "--default-region=VN"],
        set(vn), {},
    ))  # fmt: skip
    th = [i for i in PEOPLE if country(i) == "TH"][100:]
    found.append((
        "th-cp874",
        write_csv(tmp_path / "th.csv", ["ชื่อ", "อีเมล", "โทรศัพท์", "ระดับสมาชิก"],
                  [[TH_NAMES[i % 4], email(i), national(i), "ทอง" if i % 3 else "เงิน"]
                   for i in th], encoding="cp874"),
        ["--column=อีเมล=email", "--column=โทรศัพท์=phone", "--default-region=TH",
         "--segment=ระดับสมาชิก=member_tier"],
        set(th), {},
    ))  # fmt: skip
    tsv = list(range(150, 350))
    found.append((
        "utf16-tsv",
        write_csv(tmp_path / "export.tsv", ["name", "e-mail"],
                  [[VN_NAMES[i % 4], email(i)] for i in tsv], delimiter="\t", encoding="utf-16"),
        ["--column=e-mail=email"], set(tsv), {},
    ))  # fmt: skip
    sheet = list(range(200, 400))
    workbook = xlsxwriter.Workbook(str(tmp_path / "crm.xlsx"))
    page = workbook.add_worksheet("Customers")
    page.write_row(0, 0, ["Customer No", "Email Address", "Mobile", "Member Tier"])
    for row, i in enumerate(sheet, start=1):
        page.write_row(row, 0, [1000 + i, email(i).upper(), e164(i), "Gold" if i % 2 else "Silver"])
    workbook.close()
    found.append((
        "xlsx", tmp_path / "crm.xlsx",
        ["--column=Email Address=email", "--column=Mobile=phone", "--segment=Member Tier=tier"],
        set(sheet), {},
    ))  # fmt: skip
    bom = list(range(250, 370))
    path = write_csv(tmp_path / "excel.csv", ["Email", "Tier"],
                     [[f" {email(i)} ", "gold"] for i in bom], newline="\r\n")  # fmt: skip
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    found.append(("crlf-bom", path, ["--column=Email=email", "--segment=Tier=tier"], set(bom), {}))
    mixed = list(range(160, 400))
    found.append((
        "mixed-phones",
        write_csv(tmp_path / "mixed.csv", ["phone", "country"],
                  [[national(i), country(i)] for i in mixed]),
        ["--column=phone=phone", "--region-column=country"], set(mixed), {},
    ))  # fmt: skip
    hashed = list(range(100, 400))
    found.append((
        "hashed",
        write_csv(tmp_path / "hashed.csv", ["email_sha256"],
                  [[hashlib.sha256(email(i).encode()).hexdigest()] for i in hashed]),
        ["--hashed-column=email_sha256=email"], set(hashed), {},
    ))  # fmt: skip
    valid = list(range(250, 400))
    junk_rows = [[template.format(i=i)] for template in JUNK_EMAILS.values() for i in range(3)]
    found.append((
        "junk-emails",
        write_csv(tmp_path / "junk.csv", ["email"], [[email(i)] for i in valid] + junk_rows),
        ["--column=email=email"], set(valid), dict.fromkeys(JUNK_EMAILS, 3),
    ))  # fmt: skip
    return found


@pytest.fixture
def server(pki: DemoPki, tmp_path: Path) -> Iterator[RunningServer]:
    """The suite's exact-mode server, with room for one exact report per export: each is
    a new acme dataset against the same reference (the quota is tested in tests/privacy)."""
    with running_server(pki, tmp_path / "data", exact_releases_per_dataset_version=100) as room:
        yield room


@pytest.mark.slow
def test_every_export_prepares_and_matches_exactly(
    server: RunningServer, tmp_path: Path, secret_file: Path
) -> None:
    reference = write_csv(
        tmp_path / "reference.csv", ["email", "phone"], [[email(i), e164(i)] for i in REFERENCE]
    )
    for brand, dataset, source, options in [
        ("brightmart", "brightmart-reference", reference,
         ["--column=email=email", "--column=phone=phone"])
    ]:  # fmt: skip
        cli(server, brand, "prepare", str(source), str(tmp_path / "ref.parquet"),
            f"--secret-file={secret_file}", *options)  # fmt: skip
        cli(server, brand, "upload", str(tmp_path / "ref.parquet"), f"--dataset-id={dataset}")
    for dataset, source, options, persons, junk in exports(tmp_path):
        digests = tmp_path / f"{dataset}.parquet"
        summary = json.loads(cli(
            server, "acme", "prepare", str(source), str(digests),
            f"--secret-file={secret_file}", "--json", *options,
        ))  # fmt: skip
        assert summary["rows_written"] == len(persons), (dataset, summary)
        for identifier_type, counts in summary["types"].items():
            expected = junk if identifier_type == "email" else {}
            assert counts["invalid_by_reason"] == expected, (dataset, counts)
        # Dataset ids are named under their owner (acme-...).
        cli(server, "acme", "upload", str(digests), f"--dataset-id=acme-{dataset}")
        report = json.loads(cli(
            server, "acme", "report", "create", f"--base=acme-{dataset}",
            "--other=brightmart-reference", "--json",
        ))  # fmt: skip
        pair = next(p for p in report["pairwise_overlaps"] if p["dataset"].endswith(dataset))
        assert "value" in pair["matched_row_count"], (dataset, report)
        assert pair["matched_row_count"]["value"] == len(persons & set(REFERENCE)), dataset
