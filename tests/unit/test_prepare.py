"""Preparing a brand's customer file into a digests file (SPEC sections 2 and 3)."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import hmac
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from partners.cli import main
from partners.errors import InputError
from partners.preparation import _sources
from partners.preparation import pipeline as prepare_module
from partners.preparation._first_rows import DuplicateFinder
from partners.preparation.digest import key_check_value, type_key, write_secret
from partners.preparation.normalize import InvalidIdentifierError, normalizer_for
from partners.preparation.pipeline import (
    DigestFile,
    PreparationSummary,
    TypeSummary,
    prepare,
    read_digest_file,
)

SECRET = bytes(range(32))
COLLABORATION = "collaborations/acme-globex"
MAID_1 = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
MAID_2 = "ea7583cd-a667-48bc-b806-42ecb2b48606"
ZERO_MAID = "00000000-0000-0000-0000-000000000000"

# Row by row: what each row tests.
CUSTOMERS_CSV = f"""\
id,phone_number,e_mail,device,tier,age
1,+1 (415) 555-2671,Jane.Doe@Gmail.com,{MAID_1.upper()},gold,41
2,,janedoe+news@gmail.com,,silver,35
3,not a phone,not an email,{ZERO_MAID},bronze,22
4,020 7946 0958,  bob@example.com ,{MAID_2},,007
5,  ,   ,,gold,50
6,+1 415 555 2671,bob@example.com,{MAID_1},silver,60
7,+44 20 7946 0958,carol@example.com,,gold,19
"""
# 1: all three identifiers, each normalized with changes.
# 2: the same gmail account as row 1, so a duplicate; no other identifier: row dropped.
# 3: every identifier invalid: row dropped.
# 4: UK number in national form (default region GB), whitespace around the email, no tier.
# 5: only blanks and whitespace: not read as values, row dropped.
# 6: every identifier repeats an earlier row: row dropped.
# 7: the phone repeats row 4, the email is new: row kept with a null phone.

COLUMNS = {"e_mail": "email", "phone_number": "phone", "device": "maid"}


def reference_digest(identifier_type: str, normalized: str) -> bytes:
    key = type_key(SECRET, COLLABORATION, identifier_type)
    return hmac.new(key, hashlib.sha256(normalized.encode()).digest(), hashlib.sha256).digest()


@pytest.fixture
def customers_csv(tmp_path: Path) -> Path:
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS_CSV, encoding="utf-8")
    return path


def run(source: Path, destination: Path, **options: object) -> PreparationSummary:
    arguments: dict[str, object] = {
        "secret": SECRET,
        "collaboration_id": COLLABORATION,
        "columns": COLUMNS,
        "segment_columns": ["tier"],
        "default_region": "GB",
    }
    return prepare(source, destination, **(arguments | options))  # type: ignore[arg-type]


def test_csv_to_digests_file(customers_csv: Path, tmp_path: Path) -> None:
    destination = tmp_path / "digests.parquet"
    run(customers_csv, destination)
    table = pq.read_table(destination)

    # Digest columns in the order of the mapping, then segments.
    assert table.schema.names == ["email", "phone", "maid", "tier"]
    for name in ("email", "phone", "maid"):
        assert table.schema.field(name).type == pa.binary(32)
        assert table.schema.field(name).nullable
    assert table.schema.field("tier").type == pa.string()
    assert table.to_pydict() == {
        "email": [
            reference_digest("email", "janedoe@gmail.com"),
            reference_digest("email", "bob@example.com"),
            reference_digest("email", "carol@example.com"),
        ],
        "phone": [
            reference_digest("phone", "+14155552671"),
            reference_digest("phone", "+442079460958"),
            None,
        ],
        "maid": [reference_digest("maid", MAID_1), reference_digest("maid", MAID_2), None],
        "tier": ["gold", "", "gold"],
    }


def test_schema_metadata(customers_csv: Path, tmp_path: Path) -> None:
    destination = tmp_path / "digests.parquet"
    run(customers_csv, destination)
    metadata = pq.read_schema(destination).metadata
    assert metadata == {
        b"cleanroom.format": b"cleanroom-digests/v1",
        b"cleanroom.collaboration": COLLABORATION.encode(),
        b"cleanroom.key_check_value": key_check_value(SECRET, COLLABORATION).encode(),
        b"cleanroom.identifier_types": b'["email", "phone", "maid"]',
        b"cleanroom.segment_columns": b'["tier"]',
    }


def test_summary_counts(customers_csv: Path, tmp_path: Path) -> None:
    summary = run(customers_csv, tmp_path / "digests.parquet")
    assert summary.source == f"{customers_csv}: CSV, delimiter ',', encoding utf-8"
    assert summary == PreparationSummary(
        hints=summary.hints,
        source=summary.source,
        rows_read=7,
        rows_written=3,
        rows_without_identifier=4,
        types={
            "email": TypeSummary(
                values_read=6,
                valid=5,
                invalid_by_reason={"missing_at_sign": 1},
                duplicates=2,
                changes={
                    "gmail_dots_removed": 1,
                    "gmail_tag_removed": 1,
                    "lowercased": 1,
                    "trimmed": 1,
                },
                first_invalid="line 4",
            ),
            "phone": TypeSummary(
                values_read=5,
                valid=4,
                invalid_by_reason={"unparseable_phone": 1},
                duplicates=2,
                changes={"phone_reformatted": 4},
                first_invalid="line 4",
            ),
            "maid": TypeSummary(
                values_read=4,
                valid=3,
                invalid_by_reason={"zero_maid": 1},
                duplicates=1,
                changes={"lowercased": 1},
                first_invalid="line 4",
            ),
        },
    )
    assert summary.types["email"].digests_written == 3


def test_summary_to_dict_is_json(customers_csv: Path, tmp_path: Path) -> None:
    summary = run(customers_csv, tmp_path / "digests.parquet")
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["rows_read"] == 7
    assert data["rows_without_identifier"] == 4
    assert list(data["types"]) == ["email", "phone", "maid"]
    assert data["types"]["maid"] == {
        "values_read": 4,
        "valid": 3,
        "invalid_by_reason": {"zero_maid": 1},
        "duplicates": 1,
        "changes": {"lowercased": 1},
        "first_invalid": "line 4",
        "digests_written": 2,
    }


def test_read_digest_file(customers_csv: Path, tmp_path: Path) -> None:
    destination = tmp_path / "digests.parquet"
    run(customers_csv, destination)
    assert read_digest_file(destination) == DigestFile(
        path=destination,
        collaboration_id=COLLABORATION,
        key_check_value=key_check_value(SECRET, COLLABORATION),
        identifier_types=("email", "phone", "maid"),
        segment_columns=("tier",),
        row_count=3,
    )


def test_no_raw_identifier_reaches_the_digests_file(customers_csv: Path, tmp_path: Path) -> None:
    destination = tmp_path / "digests.parquet"
    run(customers_csv, destination)
    content = destination.read_bytes()
    for raw in (
        b"gmail",
        b"example.com",
        b"2671",
        b"7946",
        MAID_1.encode(),
        b"not a phone",
        b"007",
    ):
        assert raw not in content


def test_parquet_source_with_typed_columns(tmp_path: Path) -> None:
    source = tmp_path / "customers.parquet"
    table = pa.table(
        {
            "phone": pa.array([14155552671, None, 12025550143, 14155552671], pa.int64()),
            "loyalty": pa.array([" L-1 ", "L-2", None, "L-3"]),
            "tier": pa.array(["gold", "silver", "gold", None]).dictionary_encode(),
            "region": pa.array([1, 2, 3, 4], pa.int8()),
        }
    )
    pq.write_table(table, source)
    destination = tmp_path / "digests.parquet"
    summary = prepare(
        source,
        destination,
        secret=SECRET,
        collaboration_id=COLLABORATION,
        columns={"loyalty": "loyalty_id", "phone": "phone"},
        segment_columns=["tier", "region"],
        declared_types=["loyalty_id"],
        default_region="US",
    )
    result = pq.read_table(destination)
    assert result.schema.names == ["loyalty_id", "phone", "tier", "region"]
    assert result.schema.field("region").type == pa.string()
    assert result.to_pydict() == {
        "loyalty_id": [
            reference_digest("loyalty_id", "L-1"),
            reference_digest("loyalty_id", "L-2"),
            None,
            reference_digest("loyalty_id", "L-3"),
        ],
        "phone": [
            reference_digest("phone", "+14155552671"),
            None,
            reference_digest("phone", "+12025550143"),
            None,
        ],
        "tier": ["gold", "silver", "gold", None],
        "region": ["1", "2", "3", "4"],
    }
    assert summary.types["loyalty_id"].changes == {"trimmed": 1}
    assert summary.types["phone"].duplicates == 1


def test_gzipped_csv(tmp_path: Path) -> None:
    source = tmp_path / "customers.csv.gz"
    source.write_bytes(gzip.compress(CUSTOMERS_CSV.encode()))
    summary = run(source, tmp_path / "digests.parquet")
    assert (summary.rows_read, summary.rows_written) == (7, 3)


def test_csv_values_stay_text(tmp_path: Path) -> None:
    # Read as numbers, these IDs would lose their leading zeros and stop matching.
    source = tmp_path / "customers.csv"
    source.write_text("member,tier\n00123,1\n0123,2\n", encoding="utf-8")
    prepare(
        source,
        tmp_path / "digests.parquet",
        secret=SECRET,
        collaboration_id=COLLABORATION,
        columns={"member": "member_no"},
        segment_columns=["tier"],
        declared_types=["member_no"],
    )
    result = pq.read_table(tmp_path / "digests.parquet").to_pydict()
    assert result["member_no"] == [
        reference_digest("member_no", "00123"),
        reference_digest("member_no", "0123"),
    ]
    assert result["tier"] == ["1", "2"]


def test_duplicates_are_found_across_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sources, "PARQUET_BATCH_ROWS", 3)
    monkeypatch.setattr(prepare_module, "ROW_GROUP_ROWS", 2)
    source = tmp_path / "customers.parquet"
    emails = [f"user{i % 4}@example.com" for i in range(10)]
    pq.write_table(pa.table({"email": emails}), source)
    batches: list[int] = []
    summary = prepare(
        source,
        tmp_path / "digests.parquet",
        secret=SECRET,
        collaboration_id=COLLABORATION,
        columns={"email": "email"},
        progress=batches.append,
        workers=1,
    )
    assert batches == [3, 3, 3, 1]
    assert summary.rows_written == 4
    assert summary.types["email"].duplicates == 6
    assert pq.read_table(tmp_path / "digests.parquet").column("email").to_pylist() == [
        reference_digest("email", f"user{i}@example.com") for i in range(4)
    ]
    # Kept rows are gathered into row groups of ROW_GROUP_ROWS: [3 rows] then [1 row].
    assert pq.ParquetFile(tmp_path / "digests.parquet").metadata.num_row_groups == 2


def test_progress_counts_every_row(customers_csv: Path, tmp_path: Path) -> None:
    rows: list[int] = []
    run(customers_csv, tmp_path / "digests.parquet", progress=rows.append)
    assert sum(rows) == 7


def test_header_only_csv_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    # Issue 14: an empty digests file used to be written with exit status 0.
    source = tmp_path / "customers.csv"
    source.write_text("e_mail,phone_number,device,tier\n", encoding="utf-8")
    destination = tmp_path / "digests.parquet"
    with pytest.raises(InputError) as caught:
        run(source, destination)
    assert caught.value.reason == "NO_ROWS_WRITTEN"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["customers.csv"]


def test_existing_destination_is_replaced(customers_csv: Path, tmp_path: Path) -> None:
    destination = tmp_path / "digests.parquet"
    destination.write_bytes(b"old")
    run(customers_csv, destination)
    assert read_digest_file(destination).row_count == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["customers.csv", "digests.parquet"]


@pytest.mark.parametrize(
    ("options", "reason", "named"),
    [
        ({"columns": {"mail": "email"}}, "UNKNOWN_COLUMN", ["mail", "id, phone_number, e_mail"]),
        ({"segment_columns": ["loyalty_tier"]}, "UNKNOWN_COLUMN", ["loyalty_tier"]),
        ({"columns": {"e_mail": "fax"}}, "UNKNOWN_IDENTIFIER_TYPE", ["fax"]),
        (
            {"columns": {"e_mail": "email", "id": "email"}},
            "DUPLICATE_IDENTIFIER_TYPE",
            ["e_mail", "id"],
        ),
        ({"columns": {}}, "NO_IDENTIFIER_COLUMNS", []),
        ({"segment_columns": ["tier", "tier"]}, "DUPLICATE_SEGMENT_COLUMN", ["tier"]),
        ({"segment_columns": ["e_mail"]}, "IDENTIFIER_AS_SEGMENT", ["e_mail"]),
        ({"segment_columns": ["email"]}, "COLUMN_NAME_CONFLICT", ["email"]),
        ({"default_region": "Atlantis"}, "UNKNOWN_REGION", ["Atlantis"]),
        ({"secret": b"short"}, "SECRET_TOO_SHORT", []),
    ],
)
def test_bad_options_are_refused_and_nothing_is_written(
    customers_csv: Path, tmp_path: Path, options: dict[str, object], reason: str, named: list[str]
) -> None:
    destination = tmp_path / "digests.parquet"
    with pytest.raises(InputError) as caught:
        run(customers_csv, destination, **options)
    assert caught.value.reason == reason
    for text in named:
        assert text in caught.value.message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["customers.csv"]


def test_unknown_column_lists_the_file_columns(customers_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        run(customers_csv, tmp_path / "digests.parquet", columns={"mail": "email"})
    assert caught.value.metadata == {
        "column": "mail",
        "path": str(customers_csv),
        "columns": "id,phone_number,e_mail,device,tier,age",
    }


@pytest.mark.parametrize(
    "name", ["customers.xls", "customers.json", "customers.csv.zip", "customers.ods", "customers"]
)
def test_unsupported_file_type(tmp_path: Path, name: str) -> None:
    source = tmp_path / name
    source.write_text(CUSTOMERS_CSV, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        run(source, tmp_path / "digests.parquet")
    assert caught.value.reason == "UNSUPPORTED_FILE_TYPE"


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        run(tmp_path / "nope.csv", tmp_path / "digests.parquet")
    assert caught.value.reason == "FILE_NOT_FOUND"


def test_destination_is_source(customers_csv: Path) -> None:
    with pytest.raises(InputError) as caught:
        run(customers_csv, customers_csv)
    assert caught.value.reason == "DESTINATION_IS_SOURCE"
    assert customers_csv.read_text(encoding="utf-8") == CUSTOMERS_CSV


def test_destination_folder_missing(customers_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        run(customers_csv, tmp_path / "missing" / "digests.parquet")
    assert caught.value.reason == "DESTINATION_UNWRITABLE"


def test_parquet_with_wrong_suffix_content(tmp_path: Path) -> None:
    source = tmp_path / "customers.parquet"
    source.write_text(CUSTOMERS_CSV, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        run(source, tmp_path / "digests.parquet")
    assert caught.value.reason == "FILE_UNREADABLE"


def test_column_that_cannot_be_text(tmp_path: Path) -> None:
    source = tmp_path / "customers.parquet"
    pq.write_table(pa.table({"email": pa.array([["a@b.c"]], pa.list_(pa.string()))}), source)
    with pytest.raises(InputError) as caught:
        prepare(
            source,
            tmp_path / "digests.parquet",
            secret=SECRET,
            collaboration_id="c",
            columns={"email": "email"},
        )
    assert caught.value.reason == "COLUMN_NOT_TEXT"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["customers.parquet"]


def test_failure_midway_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sources, "PARQUET_BATCH_ROWS", 2)
    source = tmp_path / "customers.parquet"
    pq.write_table(pa.table({"email": [f"user{i}@example.com" for i in range(10)]}), source)
    destination = tmp_path / "digests.parquet"
    destination.write_bytes(b"the previous digests")

    def interrupt(rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(
            source,
            destination,
            secret=SECRET,
            collaboration_id=COLLABORATION,
            columns={"email": "email"},
            progress=interrupt,
        )
    assert destination.read_bytes() == b"the previous digests"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "customers.parquet",
        "digests.parquet",
    ]


def test_bad_csv_row_midway_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sources, "CSV_BLOCK_BYTES", 64)
    monkeypatch.setattr(_sources, "CSV_BATCH_ROWS", 1)
    monkeypatch.setattr(_sources, "SAMPLE_BYTES", 128)  # the sample is UTF-8, the file is not
    source = tmp_path / "customers.csv"
    rows = [f"user{i}@example.com,x" for i in range(20)]
    source.write_bytes(("email,tier\n" + "\n".join(rows)).encode() + b"\nbad\xff@example.com,x\n")
    batches: list[int] = []
    with pytest.raises(InputError) as caught:
        prepare(
            source,
            tmp_path / "digests.parquet",
            secret=SECRET,
            collaboration_id="c",
            columns={"email": "email"},
            progress=batches.append,
            workers=1,
        )
    assert batches  # some batches were written before the bad row
    assert caught.value.reason == "UNDECODABLE_TEXT"
    assert str(source) in caught.value.message
    assert "column 'email' on line 22" in caught.value.message
    assert "bad" not in caught.value.message.replace(str(source), "")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["customers.csv"]


def test_read_digest_file_refuses_other_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"email": [b"x" * 32]}), plain)
    text = tmp_path / "text.parquet"
    text.write_text("hello", encoding="utf-8")
    for path in (plain, text):
        with pytest.raises(InputError) as caught:
            read_digest_file(path)
        assert caught.value.reason == "NOT_A_DIGEST_FILE"
        assert caught.value.metadata == {"path": str(path)}


def test_read_digest_file_refuses_incomplete_metadata(customers_csv: Path, tmp_path: Path) -> None:
    destination = tmp_path / "digests.parquet"
    run(customers_csv, destination)
    table = pq.read_table(destination)
    metadata = dict(table.schema.metadata)
    del metadata[b"cleanroom.key_check_value"]
    pq.write_table(table.replace_schema_metadata(metadata), destination)
    with pytest.raises(InputError) as caught:
        read_digest_file(destination)
    assert caught.value.reason == "NOT_A_DIGEST_FILE"


def test_read_digest_file_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        read_digest_file(tmp_path / "nope.parquet")
    assert caught.value.reason == "FILE_NOT_FOUND"


def test_excel_csv_with_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    source = tmp_path / "customers.csv"
    source.write_bytes(b"\xef\xbb\xbfEmail,Tier\r\nA@Example.com,gold\r\n")
    prepare(
        source,
        tmp_path / "digests.parquet",
        secret=SECRET,
        collaboration_id=COLLABORATION,
        columns={"Email": "email"},
        segment_columns={"Tier": "tier"},
    )
    assert pq.read_table(tmp_path / "digests.parquet").to_pydict() == {
        "email": [reference_digest("email", "a@example.com")],
        "tier": ["gold"],
    }


_CELLS = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "x", "@", "a@example.com", " A@example.com", "b@example.com"]),
)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(_CELLS, _CELLS), max_size=30))
def test_each_digest_stands_in_one_row_and_every_row_has_one(
    rows: list[tuple[str | None, str | None]],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source, destination = Path(folder) / "in.parquet", Path(folder) / "out.parquet"
        columns = {"first": [row[0] for row in rows], "second": [row[1] for row in rows]}
        pq.write_table(
            pa.table(columns, schema=pa.schema({"first": pa.string(), "second": pa.string()})),
            source,
        )
        try:
            summary = prepare(
                source,
                destination,
                secret=SECRET,
                collaboration_id=COLLABORATION,
                columns={"first": "email", "second": "loyalty_id"},
                declared_types=["loyalty_id"],
            )
        except InputError as error:  # no row with an identifier: refused, nothing written
            refused = error
        else:
            refused = None
        if refused is not None:
            assert refused.reason == "NO_ROWS_WRITTEN"
            assert not destination.exists()
            return
        result = pq.read_table(destination).to_pydict()
    for name in ("email", "loyalty_id"):
        present = [digest for digest in result[name] if digest is not None]
        assert len(present) == len(set(present))
        assert len(present) == summary.types[name].digests_written
        type_summary = summary.types[name]
        assert type_summary.values_read == type_summary.valid + sum(
            type_summary.invalid_by_reason.values()
        )
    assert all(
        email is not None or loyalty is not None
        for email, loyalty in zip(*result.values(), strict=True)
    )
    assert summary.rows_read == len(rows)
    assert summary.rows_written == len(result["email"])


# --- Pre-hashed identifiers (issue 3) ----------------------------------------------------


def hashed_copy(
    rows: list[list[str]], encode: Callable[[bytes], str], region: str
) -> list[list[str]]:
    """The customer file as a brand holding only SHA-256 hashes has it: each identifier
    normalized and hashed, each invalid one left out."""
    normalizers = [
        normalizer_for(identifier_type, default_region=region)
        for identifier_type in ("email", "phone", "maid")
    ]
    hashed = []
    for row in rows:
        cells = []
        for normalize, cell in zip(normalizers, row[:3], strict=True):
            try:
                cells.append(encode(hashlib.sha256(normalize(cell).encode()).digest()))
            except InvalidIdentifierError:
                cells.append("")
        hashed.append([*cells, row[3]])
    return hashed


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    "encode",
    [
        lambda digest: digest.hex(),
        lambda digest: digest.hex().upper(),
        lambda digest: base64.b64encode(digest).decode(),
        lambda digest: f"  {base64.b64encode(digest).decode()}\t",
    ],
    ids=["hex", "HEX", "base64", "base64-padded"],
)
def test_a_pre_hashed_file_gives_byte_identical_digests(
    tmp_path: Path, encode: Callable[[bytes], str]
) -> None:
    rows = [
        [line.split(",")[2], line.split(",")[1], line.split(",")[3], line.split(",")[4]]
        for line in CUSTOMERS_CSV.splitlines()[1:]
    ]
    raw = write_rows(tmp_path / "raw.csv", ["e_mail", "phone_number", "device", "tier"], rows)
    hashed = write_rows(
        tmp_path / "hashed.csv",
        ["e_mail", "phone_number", "device", "tier"],
        hashed_copy(rows, encode, "GB"),
    )
    options: dict[str, Any] = {
        "secret": SECRET,
        "collaboration_id": COLLABORATION,
        "segment_columns": ["tier"],
    }
    prepare(raw, tmp_path / "from-raw.parquet", columns=COLUMNS, default_region="GB", **options)
    summary = prepare(hashed, tmp_path / "from-hashes.parquet", hashed_columns=COLUMNS, **options)
    assert (tmp_path / "from-raw.parquet").read_bytes() == (
        tmp_path / "from-hashes.parquet"
    ).read_bytes()
    assert pq.read_table(tmp_path / "from-hashes.parquet").num_rows == 3
    assert summary.types["email"].changes == {}
    assert summary.types["email"].duplicates == 2


def test_hashed_and_raw_columns_mix(tmp_path: Path) -> None:
    source = write_rows(
        tmp_path / "customers.csv",
        ["email_sha256", "phone"],
        [
            [hashlib.sha256(b"user@example.com").hexdigest(), "+14155552671"],
            ["not a hash", "+14155552671"],
            ["b4c9a289", ""],
            ["", "+442079460958"],
        ],
    )
    summary = prepare(
        source,
        tmp_path / "digests.parquet",
        secret=SECRET,
        collaboration_id=COLLABORATION,
        columns={"phone": "phone"},
        hashed_columns={"email_sha256": "email"},
    )
    assert pq.read_table(tmp_path / "digests.parquet").to_pydict() == {
        "phone": [
            reference_digest("phone", "+14155552671"),
            reference_digest("phone", "+442079460958"),
        ],
        "email": [reference_digest("email", "user@example.com"), None],
    }
    assert summary.types["email"] == TypeSummary(
        values_read=3,
        valid=1,
        invalid_by_reason={"malformed_sha256": 2},
        duplicates=0,
        changes={},
        first_invalid="line 3",
    )


@pytest.mark.parametrize(
    ("columns", "hashed", "reason"),
    [
        ({"e_mail": "email"}, {"e_mail": "email"}, "COLUMN_MAPPED_TWICE"),
        ({"e_mail": "email"}, {"device": "email"}, "DUPLICATE_IDENTIFIER_TYPE"),
        ({}, {"device": "fax"}, "UNKNOWN_IDENTIFIER_TYPE"),
        ({}, {}, "NO_IDENTIFIER_COLUMNS"),
        ({}, {"tier": "email"}, "IDENTIFIER_AS_SEGMENT"),
    ],
)
def test_bad_hashed_mappings_are_refused(
    customers_csv: Path,
    tmp_path: Path,
    columns: dict[str, str],
    hashed: dict[str, str],
    reason: str,
) -> None:
    with pytest.raises(InputError) as caught:
        run(customers_csv, tmp_path / "digests.parquet", columns=columns, hashed_columns=hashed)
    assert caught.value.reason == reason
    assert sorted(path.name for path in tmp_path.iterdir()) == ["customers.csv"]


# --- First rows, in bounded memory, on every core ----------------------------------------


def reference_prepare(rows: list[tuple[str | None, str | None]]) -> dict[str, list[bytes | None]]:
    """SPEC section 3 written plainly: each digest stays in the first row that holds it."""
    normalizers = {
        "email": normalizer_for("email", default_region=None),
        "loyalty_id": normalizer_for(
            "loyalty_id", default_region=None, declared_types=["loyalty_id"]
        ),
    }
    seen: dict[str, set[bytes]] = {name: set() for name in normalizers}
    output: dict[str, list[bytes | None]] = {name: [] for name in normalizers}
    for row in rows:
        kept: dict[str, bytes | None] = {}
        for (name, normalize), cell in zip(normalizers.items(), row, strict=True):
            try:
                digest = reference_digest(name, normalize(cell or ""))
            except InvalidIdentifierError:
                digest = None
            if digest is not None and digest in seen[name]:
                digest = None
            if digest is not None:
                seen[name].add(digest)
            kept[name] = digest
        if any(digest is not None for digest in kept.values()):
            for name, digest in kept.items():
                output[name].append(digest)
    return output


_ROW_CELLS = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "x", "a@example.com", " A@example.com", "b@example.com", "c@x.y"]),
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(_ROW_CELLS, _ROW_CELLS), max_size=40),
    st.integers(min_value=1, max_value=7),
    st.sampled_from([1, 2, 16]),
)
def test_first_rows_match_the_plain_reference_across_batches_and_partitions(
    rows: list[tuple[str | None, str | None]], batch_rows: int, partitions: int
) -> None:
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(_sources, "PARQUET_BATCH_ROWS", batch_rows)
        patch.setattr(prepare_module, "partitions_for", lambda expected: partitions)
        source, destination = Path(folder) / "in.parquet", Path(folder) / "out.parquet"
        schema = pa.schema({"first": pa.string(), "second": pa.string()})
        pq.write_table(
            pa.table(
                {"first": [r[0] for r in rows], "second": [r[1] for r in rows]}, schema=schema
            ),
            source,
        )
        expected = reference_prepare(rows)
        if not expected["email"]:
            with pytest.raises(InputError, match="no digests file was written"):
                prepare(
                    source,
                    destination,
                    secret=SECRET,
                    collaboration_id=COLLABORATION,
                    columns={"first": "email", "second": "loyalty_id"},
                    declared_types=["loyalty_id"],
                    workers=1,
                )
            return
        prepare(
            source,
            destination,
            secret=SECRET,
            collaboration_id=COLLABORATION,
            columns={"first": "email", "second": "loyalty_id"},
            declared_types=["loyalty_id"],
            workers=1,
        )
        assert pq.read_table(destination).to_pydict() == expected


def test_digests_that_share_their_first_bytes_are_told_apart(tmp_path: Path) -> None:
    # Digests are compared by their first 8 bytes first; A, B, A with A and B sharing those
    # bytes must still find the second A, and keep B.
    a, b = bytes(8) + b"A" * 24, bytes(8) + b"B" * 24
    finder = DuplicateFinder(tmp_path, 1, 1)
    finder.add([pa.array([a, b, a, None, b, bytes(32)], pa.binary(32))], first_row=0)
    [repeated] = finder.finish(6)
    assert repeated.count == 2
    assert repeated.mask(0, 6).tolist() == [False, False, True, False, True, False]
    assert repeated.mask(2, 5).tolist() == [True, False, True]


def test_workers_write_the_same_digests_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sources, "CSV_BLOCK_BYTES", 200)
    monkeypatch.setattr(_sources, "CSV_BATCH_ROWS", 40)
    rows = [
        [f" User{i % 37}@Example.com", f"0{i % 50:03d} 7946 0958", "", f"t{i % 3}"]
        for i in range(300)
    ]
    source = write_rows(
        tmp_path / "customers.csv", ["e_mail", "phone_number", "device", "tier"], rows
    )
    batches: list[int] = []
    for workers, name in ((1, "one.parquet"), (2, "two.parquet")):
        run(source, tmp_path / name, workers=workers, progress=batches.append)
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()
    assert sum(batches) == 600
    assert len(batches) > 4  # several batches each time, so that workers were used


def test_cli_prepare_with_hashed_columns(tmp_path: Path) -> None:
    secret_file = tmp_path / "collaboration.secret"
    write_secret(secret_file, SECRET)
    source = write_rows(
        tmp_path / "customers.csv", ["email_sha256"], [[hashlib.sha256(b"a@b.c").hexdigest()]]
    )
    result = CliRunner().invoke(
        main,
        [
            "prepare", str(source), str(tmp_path / "digests.parquet"),
            f"--collaboration={COLLABORATION}", f"--secret-file={secret_file}",
            "--hashed-column=email_sha256=email", "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["types"]["email"]["digests_written"] == 1
    assert pq.read_table(tmp_path / "digests.parquet").column("email").to_pylist() == [
        reference_digest("email", "a@b.c")
    ]
