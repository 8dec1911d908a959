"""Tests of the demo's synthetic customer files.

The checks normalize identifiers on their own (SPEC section 2), independently of the
generator, and match the brands' files the way the clean room does (SPEC sections 3-4).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd
import phonenumbers
import pyarrow.parquet as pq
import pytest

from cleanroom.demo import customers
from cleanroom.demo.customers import BRANDS, CustomerFiles, write_customer_files
from cleanroom.errors import InvalidArgumentError

ROWS = 2_000
SEED = 7
TYPES = ("email", "phone", "maid")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ZERO_MAID = "00000000-0000-0000-0000-000000000000"
EXPECTED_COLUMNS = {
    "acme": ["customer_id", "email", "phone", "loyalty_tier"],
    "brightmart": ["email", "mobile", "device_id", "region"],
    "corvid": ["maid", "phone", "email", "channel"],
}


def normalize_email(value: str) -> str | None:
    value = value.strip().lower()
    if value.count("@") != 1:
        return None
    local, domain = value.split("@")
    if domain == "gmail.com":
        local = local.split("+", 1)[0].replace(".", "")
    return f"{local}@{domain}" if local and domain else None


@cache
def normalize_phone(value: str) -> str | None:
    try:
        number = phonenumbers.parse(value, "US")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_maid(value: str) -> str | None:
    value = value.strip().lower()
    return value if UUID.fullmatch(value) and value != ZERO_MAID else None


NORMALIZERS = {"email": normalize_email, "phone": normalize_phone, "maid": normalize_maid}


def read_raw(files: CustomerFiles, brand: str) -> pd.DataFrame:
    """Read a brand's file as strings, keeping empty strings and nulls apart."""
    path = files.paths[brand]
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
        return pd.DataFrame(columns, dtype=object)
    return pd.read_csv(path, dtype=str, keep_default_na=False).astype(object)


@dataclass(frozen=True)
class Normalized:
    """One brand's rows: each identifier type normalized, None where missing or invalid."""

    raw: pd.DataFrame
    keys: dict[str, list[str | None]]


def normalize(files: CustomerFiles, brand: str) -> Normalized:
    raw = read_raw(files, brand)
    keys: dict[str, list[str | None]] = {kind: [None] * len(raw) for kind in TYPES}
    for column, kind in files.identifier_columns[brand].items():
        normalizer = NORMALIZERS[kind]
        keys[kind] = [normalizer(value) if value else None for value in raw[column]]
    return Normalized(raw=raw, keys=keys)


def deduplicated(rows: Normalized) -> dict[str, list[str | None]]:
    """Keep the first row of each value per type, as an upload does (SPEC section 3)."""
    result = {}
    for kind, values in rows.keys.items():
        seen: set[str] = set()
        kept: list[str | None] = []
        for value in values:
            kept.append(value if value is not None and value not in seen else None)
            if value is not None:
                seen.add(value)
        result[kind] = kept
    return result


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> CustomerFiles:
    return write_customer_files(tmp_path_factory.mktemp("customers"), rows=ROWS, seed=SEED)


@pytest.fixture(scope="module")
def normalized(files: CustomerFiles) -> dict[str, Normalized]:
    return {brand: normalize(files, brand) for brand in BRANDS}


@pytest.fixture(scope="module")
def truth(files: CustomerFiles) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(files.truth.read_text(encoding="utf-8"))
    return loaded


def test_returned_description(files: CustomerFiles) -> None:
    assert files.paths == {
        "acme": files.directory / "acme.csv",
        "brightmart": files.directory / "brightmart.csv",
        "corvid": files.directory / "corvid.parquet",
    }
    assert files.identifier_columns == {
        "acme": {"email": "email", "phone": "phone"},
        "brightmart": {"email": "email", "mobile": "phone", "device_id": "maid"},
        "corvid": {"maid": "maid", "phone": "phone", "email": "email"},
    }
    assert files.segment_columns == {
        "acme": "loyalty_tier",
        "brightmart": "region",
        "corvid": "channel",
    }
    assert files.default_region == "US"
    assert files.truth == files.directory / "truth.json"


def test_planted_overlaps_follow_the_design(files: CustomerFiles, truth: dict[str, object]) -> None:
    assert files.planted_overlaps == {
        "acme&brightmart": 400,
        "acme&corvid": 240,
        "brightmart&corvid": 180,
        "acme&brightmart&corvid": 100,
    }
    assert truth["planted_overlaps"] == files.planted_overlaps
    assert truth["identifier_columns"] == files.identifier_columns
    assert truth["segment_columns"] == files.segment_columns
    assert truth["default_region"] == "US"
    assert (truth["rows"], truth["seed"]) == (ROWS, SEED)


@pytest.mark.parametrize("brand", BRANDS)
def test_files_have_the_declared_columns_and_rows(files: CustomerFiles, brand: str) -> None:
    raw = read_raw(files, brand)
    assert list(raw.columns) == EXPECTED_COLUMNS[brand]
    assert set(files.identifier_columns[brand]) <= set(raw.columns)
    assert len(raw) >= ROWS
    segment = raw[files.segment_columns[brand]]
    assert segment.notna().all()
    assert 2 <= segment.nunique() <= 5


def test_acme_customer_ids_are_distinct(files: CustomerFiles) -> None:
    ids = read_raw(files, "acme")["customer_id"]
    assert ids.is_unique
    assert ids.str.fullmatch(r"AC-\d{7}").all()


@pytest.mark.parametrize("brand", BRANDS)
def test_truth_counts_match_the_files(
    files: CustomerFiles, normalized: dict[str, Normalized], truth: dict[str, object], brand: str
) -> None:
    brands = truth["brands"]
    assert isinstance(brands, dict)
    expected = brands[brand]
    rows = normalized[brand]
    assert expected["rows"] == len(rows.raw)
    assert expected["rows"] == expected["persons"] + expected["duplicate_rows"]
    assert expected["persons"] == ROWS
    for column, kind in files.identifier_columns[brand].items():
        values = rows.raw[column]
        missing = sum(1 for value in values if not value)
        invalid = sum(
            1 for value, key in zip(values, rows.keys[kind], strict=True) if value and key is None
        )
        assert (column, missing) == (column, expected["missing_values"][column])
        assert (column, invalid) == (column, expected["invalid_values"][column])
        # Every column has something for the partner toolkit's summary to report.
        assert invalid > 0


@pytest.mark.parametrize("brand", BRANDS)
def test_duplicate_customers_are_present(
    normalized: dict[str, Normalized], truth: dict[str, object], brand: str
) -> None:
    rows = normalized[brand]
    identities = list(zip(*(rows.keys[kind] for kind in TYPES), strict=True))
    seen: set[tuple[str | None, ...]] = set()
    repeated = 0
    for identity in identities:
        if any(identity):
            repeated += identity in seen
            seen.add(identity)
    brands = truth["brands"]
    assert isinstance(brands, dict)
    assert 0 < repeated <= brands[brand]["duplicate_rows"]


@pytest.mark.parametrize("brand", BRANDS)
def test_phones_are_mostly_valid(files: CustomerFiles, brand: str) -> None:
    raw = read_raw(files, brand)
    (column,) = (c for c, kind in files.identifier_columns[brand].items() if kind == "phone")
    present = [value for value in raw[column] if value]
    valid = [value for value in present if normalize_phone(value)]
    assert len(present) > ROWS // 2
    assert len(valid) / len(present) >= 0.97


def test_every_area_code_and_exchange_makes_valid_numbers() -> None:
    # Generated numbers combine these freely, so every combination must be valid.
    for area in customers._AREA_CODES:
        for exchange in customers._EXCHANGES:
            number = phonenumbers.parse(f"+1{area}{exchange}0142")
            assert phonenumbers.is_valid_number(number), (area, exchange)


def test_raw_formats_are_messy_as_documented(files: CustomerFiles) -> None:
    acme = read_raw(files, "acme")
    assert acme["email"].str.fullmatch(r"[^a-z]+@[^a-z]+").any()  # uppercase
    assert acme["email"].str.match(r"\s").any()  # surrounding spaces
    assert acme["phone"].str.fullmatch(r"\(\d{3}\) \d{3}-\d{4}").any()
    assert acme["phone"].str.fullmatch(r"\d{3}\.\d{3}\.\d{4}").any()
    brightmart = read_raw(files, "brightmart")
    assert brightmart["mobile"].str.fullmatch(r"\+1 \d{3} \d{3} \d{4}").any()
    assert brightmart["mobile"].str.fullmatch(r"1-\d{3}-\d{3}-\d{4}").any()
    assert brightmart["device_id"].str.fullmatch(r"[0-9A-F-]{36}").any()
    assert (brightmart["device_id"] == ZERO_MAID).any()
    corvid = read_raw(files, "corvid")
    for column in ("maid", "phone", "email"):
        assert corvid[column].isna().any()
    assert (corvid["email"] == "").any()
    assert (corvid["maid"] == ZERO_MAID).any()
    emails = pd.concat([acme["email"], brightmart["email"], corvid["email"].dropna()])
    lowered = emails.str.strip().str.lower()
    assert lowered.str.fullmatch(r"[a-z0-9.]+\+[a-z]+@gmail\.com").any()  # +tags
    assert lowered.str.contains(r"@(?:yahoo|outlook|icloud)\.com$").any()


def test_maids_are_version_4_uuids(normalized: dict[str, Normalized]) -> None:
    maids = [maid for maid in normalized["corvid"].keys["maid"] if maid]
    assert len(maids) > ROWS // 3
    assert all(maid[14] == "4" and maid[19] in "89ab" for maid in maids)


def matches(rows: dict[str, list[str | None]], other: dict[str, list[str | None]]) -> list[bool]:
    """Which rows hold a digest that some row of the other dataset also holds."""
    other_values = {kind: {value for value in values if value} for kind, values in other.items()}
    return [
        any(rows[kind][index] in other_values[kind] for kind in TYPES if rows[kind][index])
        for index in range(len(rows["email"]))
    ]


def test_matching_finds_exactly_the_planted_overlaps(
    files: CustomerFiles, normalized: dict[str, Normalized]
) -> None:
    datasets = {brand: deduplicated(normalized[brand]) for brand in BRANDS}
    for key, planted in files.planted_overlaps.items():
        base, *others = key.split("&")
        found = [matches(datasets[base], datasets[other]) for other in others]
        assert sum(all(row) for row in zip(*found, strict=True)) == planted, key
        if len(others) == 1:  # pairs are symmetric
            assert sum(matches(datasets[others[0]], datasets[base])) == planted, key


def test_same_seed_writes_the_same_files(files: CustomerFiles, tmp_path: Path) -> None:
    again = write_customer_files(tmp_path, rows=ROWS, seed=SEED)
    for brand in ("acme", "brightmart"):
        assert again.paths[brand].read_bytes() == files.paths[brand].read_bytes()
    assert pq.read_table(again.paths["corvid"]).equals(pq.read_table(files.paths["corvid"]))
    assert again.truth.read_text() == files.truth.read_text()
    assert again.planted_overlaps == files.planted_overlaps


def test_another_seed_writes_other_files(files: CustomerFiles, tmp_path: Path) -> None:
    other = write_customer_files(tmp_path, rows=ROWS, seed=SEED + 1)
    assert other.paths["acme"].read_bytes() != files.paths["acme"].read_bytes()
    assert other.planted_overlaps == files.planted_overlaps


def test_too_few_rows_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        write_customer_files(tmp_path, rows=customers.MINIMUM_ROWS - 1)
    assert caught.value.reason == "TOO_FEW_ROWS"
    assert not list(tmp_path.iterdir())


def test_smallest_size_keeps_every_overlap(tmp_path: Path) -> None:
    small = write_customer_files(tmp_path, rows=customers.MINIMUM_ROWS)
    assert all(count > 0 for count in small.planted_overlaps.values())
