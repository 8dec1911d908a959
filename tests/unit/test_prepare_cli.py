"""`cleanroom-partner prepare` on the files brands have, and on their usual mistakes (issue 14).

Each case that used to give bad output with exit status 0, or to refuse a common export, is
run through the command line: its exit status and what it prints. No message may quote a
value of the file.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import xlsxwriter
from click.testing import CliRunner, Result

from partners.cli import main
from partners.preparation.digest import digest_normalized, type_key, write_secret
from partners.preparation.normalize import normalize_phone

SECRET = bytes(range(32))
COLLABORATION = "spring-launch"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "collaboration.secret"
    write_secret(path, SECRET)
    return path


def prepare(source: Path, secret_file: Path, *options: str) -> Result:
    return CliRunner().invoke(
        main,
        ["prepare", str(source), str(source.parent / "digests.parquet"),
         f"--collaboration={COLLABORATION}", f"--secret-file={secret_file}", *options],
    )  # fmt: skip


def summary_of(result: Result) -> dict[str, object]:
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.output)
    return data


def written(source: Path) -> bool:
    return (source.parent / "digests.parquet").exists()


# Files that used to be refused -------------------------------------------------------------


def test_semicolon_csv_is_sniffed_and_a_bad_row_is_named_without_its_values(
    tmp_path: Path, secret_file: Path
) -> None:
    source = tmp_path / "khach-hang.csv"
    source.write_text(
        "Họ tên;Email;Hạng\nNguyễn Văn An;an@example.vn;Vàng\nTrần Thị Bích;bich@example.vn;Bạc\n",
        encoding="utf-8",
    )
    summary = summary_of(prepare(source, secret_file, "--column=Email=email", "--json"))
    assert summary["rows_written"] == 2
    assert "delimiter ';'" in str(summary["source"])
    with source.open("a", encoding="utf-8") as file:
        file.write("Lê Hoàng Yến;yen@example.vn;Vàng;extra\n")
    result = prepare(source, secret_file, "--column=Email=email")
    assert result.exit_code == 2
    assert "MALFORMED_ROW" in result.output
    assert "line 4" in result.output
    for value in ("Lê Hoàng", "yen@example.vn", "extra"):
        assert value not in result.output


@pytest.mark.parametrize(
    "case",
    [
        ("cp1252.csv", "cp1252", ",", b""),
        ("cp874.csv", "cp874", ";", b""),
        ("utf16.tsv", "utf-16", "\t", b""),
        ("utf16le.csv", "utf-16-le", ",", codecs.BOM_UTF16_LE),
        ("excel.csv", "utf-8", ",", codecs.BOM_UTF8),
        ("pipes.txt", "utf-8", "|", b""),
    ],
)
def test_common_encodings_and_delimiters_are_read(
    tmp_path: Path, secret_file: Path, case: tuple[str, str, str, bytes]
) -> None:
    name, encoding, delimiter, bom = case
    names = {"cp1252": "Müller", "cp874": "สมชาย", "utf-16": "Nguyễn", "utf-16-le": "Nguyễn"}
    person = names.get(encoding, "Ana")
    text = f"name{delimiter}email\r\n{person}{delimiter}A@Example.com\r\n"
    text += f"{person}{delimiter}b@example.com\r\n"
    (tmp_path / name).write_bytes(bom + text.encode(encoding))
    summary = summary_of(
        prepare(tmp_path / name, secret_file, "--column=email=email", "--segment=name=name",
                "--json")
    )  # fmt: skip
    assert summary["rows_written"] == 2
    table = pq.read_table(tmp_path / "digests.parquet")
    assert table.column("name").to_pylist() == [person, person]


def test_encoding_and_delimiter_can_be_given(tmp_path: Path, secret_file: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes("ชื่อ:email\nสมชาย:a@example.com\n".encode("cp874"))
    summary = summary_of(
        prepare(source, secret_file, "--column=email=email", "--delimiter=:",
                "--encoding=cp874", "--segment=ชื่อ=name", "--json")
    )  # fmt: skip
    assert summary["rows_written"] == 1
    assert pq.read_table(tmp_path / "digests.parquet").column("name").to_pylist() == ["สมชาย"]
    with source.open("ab") as file:
        file.write(b"x\xff:b@example.com\n")  # no character of cp874
    result = prepare(source, secret_file, "--column=email=email", "--encoding=cp874")
    assert result.exit_code == 2
    assert "UNDECODABLE_TEXT" in result.output
    assert "line 3" in result.output
    result = prepare(source, secret_file, "--column=email=email", "--encoding=klingon")
    assert result.exit_code == 2
    assert "UNKNOWN_ENCODING" in result.output


def test_xlsx_first_sheet_with_numbers_read_as_text(tmp_path: Path, secret_file: Path) -> None:
    workbook = xlsxwriter.Workbook(str(tmp_path / "crm.xlsx"))
    sheet = workbook.add_worksheet()
    sheet.write_row(0, 0, ["Email", "Mobile", "Tier"])
    sheet.write_row(1, 0, ["a@example.com", 812345678, "Gold"])  # a phone stored as a number
    sheet.write_row(2, 0, ["b@example.com", "+84 91 234 5678", 3])
    workbook.close()
    summary = summary_of(
        prepare(tmp_path / "crm.xlsx", secret_file, "--column=Email=email",
                "--column=Mobile=phone", "--default-region=TH", "--segment=Tier=tier", "--json")
    )  # fmt: skip
    assert summary["rows_written"] == 2
    phones = summary["types"]["phone"]  # type: ignore[index]
    assert phones["valid"] == 2
    assert pq.read_table(tmp_path / "digests.parquet").column("tier").to_pylist() == ["Gold", "3"]


def test_xlsx_sheet_can_be_chosen(tmp_path: Path, secret_file: Path) -> None:
    workbook = xlsxwriter.Workbook(str(tmp_path / "crm.xlsx"))
    workbook.add_worksheet("Notes").write_row(0, 0, ["exported by the CRM"])
    customers = workbook.add_worksheet("Khách hàng")
    customers.write_row(0, 0, ["Email"])
    customers.write_row(1, 0, ["a@example.com"])
    customers.write_row(2, 0, ["not an email"])
    workbook.close()
    source = tmp_path / "crm.xlsx"
    first = prepare(source, secret_file, "--column=Email=email")
    assert first.exit_code == 2
    assert "UNKNOWN_COLUMN" in first.output
    missing = prepare(source, secret_file, "--column=Email=email", "--sheet=Customers")
    assert missing.exit_code == 2
    assert "its sheets are Notes, Khách hàng" in " ".join(missing.output.split())
    summary = summary_of(
        prepare(source, secret_file, "--column=Email=email", "--sheet=Khách hàng", "--json")
    )
    assert summary["rows_written"] == 1
    assert summary["types"]["email"]["first_invalid"] == "row 3 of sheet 'Khách hàng'"  # type: ignore[index]


@pytest.mark.parametrize("name", ["customers.xls", "customers.json", "customers.ods"])
def test_unsupported_file_types_are_refused(tmp_path: Path, secret_file: Path, name: str) -> None:
    source = tmp_path / name
    source.write_text("email\na@example.com\n", encoding="utf-8")
    result = prepare(source, secret_file, "--column=email=email")
    assert result.exit_code == 2
    assert "UNSUPPORTED_FILE_TYPE" in result.output
    assert ".xlsx" in result.output
    assert not written(source)


# Segments -----------------------------------------------------------------------------------


def test_segment_name_the_server_refuses_is_refused_with_a_rename(
    tmp_path: Path, secret_file: Path
) -> None:
    source = tmp_path / "crm.csv"
    source.write_text("email,Member Tier\na@example.com,gold\n", encoding="utf-8")
    result = prepare(source, secret_file, "--column=email=email", "--segment=Member Tier")
    assert result.exit_code == 2
    assert "INVALID_SEGMENT_NAME" in result.output
    assert '--segment "Member Tier=member_tier"' in " ".join(result.output.split())
    assert not written(source)
    summary = summary_of(prepare(source, secret_file, "--column=email=email",
                                 "--segment=Member Tier=member_tier", "--json"))  # fmt: skip
    assert summary["rows_written"] == 1
    assert pq.read_schema(tmp_path / "digests.parquet").names == ["email", "member_tier"]


def test_segment_with_a_value_per_row_is_refused_before_anything_is_written(
    tmp_path: Path, secret_file: Path
) -> None:
    source = tmp_path / "crm.csv"
    rows = "".join(f"p{i}@example.com,customer-{i}\n" for i in range(150))
    source.write_text("email,customer_id\n" + rows, encoding="utf-8")
    result = prepare(source, secret_file, "--column=email=email", "--segment=customer_id")
    assert result.exit_code == 2
    assert "TOO_MANY_SEGMENT_VALUES" in result.output
    assert "customer-1" not in result.output
    assert not written(source)


def test_segment_label_too_long_is_refused_with_its_line(tmp_path: Path, secret_file: Path) -> None:
    source = tmp_path / "crm.csv"
    source.write_text(f"email,tier\na@example.com,gold\nb@example.com,{'x' * 70}\n")
    result = prepare(source, secret_file, "--column=email=email", "--segment=tier")
    assert result.exit_code == 2
    assert "SEGMENT_VALUE_TOO_LONG" in result.output
    assert "line 3" in result.output
    assert "x" * 70 not in result.output


# No silent bad output -----------------------------------------------------------------------


def test_phones_without_country_code_print_the_fix(tmp_path: Path, secret_file: Path) -> None:
    source = tmp_path / "crm.csv"
    rows = "".join(f"p{i}@example.com,081{i:07d}\n" for i in range(20))
    source.write_text("email,mobile\n" + rows + "q@example.com,+66812345678\n")
    result = prepare(source, secret_file, "--column=email=email", "--column=mobile=phone")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "95% of phone values of column 'mobile' (20) have no country code" in flat
    assert "--default-region" in flat
    assert "--region-column" in flat


def test_a_hashed_column_given_as_raw_is_refused_with_the_right_flag(
    tmp_path: Path, secret_file: Path
) -> None:
    source = tmp_path / "hashed.csv"
    hashes = [hashlib.sha256(f"p{i}@example.com".encode()).hexdigest() for i in range(30)]
    source.write_text("email_sha256\n" + "\n".join(hashes) + "\n")
    result = prepare(source, secret_file, "--column=email_sha256=email")
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "NO_ROWS_WRITTEN" in flat
    assert "--hashed-column email_sha256=email" in flat
    assert hashes[0] not in flat
    assert not written(source)


def test_an_empty_output_is_an_error(tmp_path: Path, secret_file: Path) -> None:
    source = tmp_path / "crm.csv"
    source.write_text("email\nnot an email\n\n")
    result = prepare(source, secret_file, "--column=email=email")
    assert result.exit_code == 2
    assert "NO_ROWS_WRITTEN" in result.output
    assert not written(source)


def test_a_region_column_reads_each_phone_in_its_own_country(
    tmp_path: Path, secret_file: Path
) -> None:
    # One region per file turns Vietnamese national numbers into valid Thai numbers.
    source = tmp_path / "mixed.csv"
    source.write_text(
        "mobile,country\n0812345678,TH\n0912345678,VN\n0912345679, vn \n0123,XX\n"
        "0812345679,Thailand\n0912345670,Việt Nam\n0812345670,ประเทศไทย\n",
        encoding="utf-8",
    )
    key = type_key(SECRET, COLLABORATION, "phone")
    summary = summary_of(
        prepare(source, secret_file, "--column=mobile=phone", "--region-column=country",
                "--json")
    )  # fmt: skip
    assert summary["types"]["phone"]["invalid_by_reason"] == {"unknown_region": 1}  # type: ignore[index]
    expected = digest_normalized(
        key,
        ["+66812345678", "+84912345678", "+84912345679", "+66812345679", "+84912345670",
         "+66812345670"],
    )  # fmt: skip
    assert pq.read_table(tmp_path / "digests.parquet").column("phone").to_pylist() == expected
    assert normalize_phone("0912345678", "TH") == "+66912345678"  # what one region gave
    # Without the region column, the country column is pointed at.
    one_region = prepare(source, secret_file, "--column=mobile=phone", "--default-region=TH")
    assert one_region.exit_code == 0, one_region.output
    flat = " ".join(one_region.output.split())
    assert "column 'country' seems to give each row's country" in flat
    assert "--region-column 'country'" in flat


def test_meta_style_phone_hashes_are_refused_with_the_reason(
    tmp_path: Path, secret_file: Path
) -> None:
    source = tmp_path / "meta.csv"
    source.write_text("phone_sha256\n" + hashlib.sha256(b"66812345678").hexdigest() + "\n")
    result = prepare(source, secret_file, "--hashed-column=phone_sha256=phone",
                     "--hashed-phone-form=digits")  # fmt: skip
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "PHONE_HASH_FORM_NOT_CONVERTIBLE" in flat
    assert "cannot be converted" in flat
    stated = prepare(source, secret_file, "--hashed-column=phone_sha256=phone")
    assert stated.exit_code == 0, stated.output
    assert "E.164 form with its '+'" in " ".join(stated.output.split())


JUNK = [
    ("somchai j@gmail.com", "contains_whitespace"),
    ("mailto:a@example.com", "mailto_prefix"),
    ('"Name" <a@example.com>', "display_name"),
    ("a\u200b@example.com", "unsafe_character"),
    ("a..b@example.com", "invalid_local_part"),
    ("a@localhost", "invalid_domain"),
]


def test_junk_emails_are_counted_by_reason_and_strict_refuses_them(
    tmp_path: Path, secret_file: Path
) -> None:
    source = tmp_path / "crm.csv"
    lines = [f"p{i}@example.com" for i in range(10)] + [f'"{v.replace(chr(34), 2 * chr(34))}"'
                                                      for v, _ in JUNK]  # fmt: skip
    source.write_text("email\n" + "\n".join(lines) + "\n", encoding="utf-8")
    summary = summary_of(prepare(source, secret_file, "--column=email=email", "--json"))
    assert summary["rows_written"] == 10
    assert summary["types"]["email"]["invalid_by_reason"] == {r: 1 for _, r in JUNK}  # type: ignore[index]
    (tmp_path / "digests.parquet").unlink()
    result = prepare(source, secret_file, "--column=email=email", "--strict")
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "INVALID_VALUES" in flat
    assert "the first is on line 12" in flat
    assert "somchai" not in flat
    assert not written(source)


def test_progress_is_logged_in_lines_when_not_on_a_terminal(
    tmp_path: Path, secret_file: Path
) -> None:
    source = tmp_path / "crm.csv"
    source.write_text("email\na@example.com\n")
    result = CliRunner().invoke(
        main,
        ["prepare", str(source), str(tmp_path / "digests.parquet"),
         f"--collaboration={COLLABORATION}", f"--secret-file={secret_file}",
         "--column=email=email"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "preparing: 1 rows done" in result.stderr


@pytest.mark.parametrize(
    ("body", "options", "reason"),
    [
        ("email,tier\nzq1@x.zq,zqa\nzq2@x.zq,zqb,zqc\n", [], "MALFORMED_ROW"),
        ("email,tier\nzq1@x.zq,zqa\nzq\xff2@x.zq,zqb\n", ["--encoding=utf-8"], "UNDECODABLE_TEXT"),
        ("email,tier\nzq1@x.zq,zqa\nzq2 zq,zqb\n", ["--strict"], "INVALID_VALUES"),
        ("email,tier\nzqzq,zqa\n", [], "NO_ROWS_WRITTEN"),
        (f"email,tier\nzq1@x.zq,{'zq' * 40}\n", [], "SEGMENT_VALUE_TOO_LONG"),
        ("email,tier\n" + "".join(f"zq{i}@x.zq,zq{i}\n" for i in range(101)), [],
         "TOO_MANY_SEGMENT_VALUES"),
    ],
)  # fmt: skip
def test_no_message_quotes_a_value_of_the_file(
    tmp_path: Path, secret_file: Path, body: str, options: list[str], reason: str
) -> None:
    source = tmp_path / "customers.csv"
    source.write_bytes(body.encode("utf-8", "surrogateescape").replace(b"\xc3\xbf", b"\xff"))
    result = prepare(source, secret_file, "--column=email=email", "--segment=tier", *options)
    assert result.exit_code == 2, result.output
    assert reason in result.output
    assert "zq" not in result.output.replace(str(tmp_path), "")
