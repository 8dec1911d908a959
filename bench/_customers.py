"""Synthetic customer files as brands hold them, for the preparation benchmarks.

Emails, phone numbers and advertising IDs in the messy forms of real exports: mixed case,
stray whitespace, Gmail dots and tags, national and international phone formats, some
invalid values and repeats. Everything is built a column at a time with NumPy and Arrow, so
that a 3 GB file takes a minute to make, not an hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

FIRST_NAMES = ("jane", "John", "maria", "Wei", "ahmed", "OLGA", "lucas", "Priya", "tom", "Ana")
LAST_NAMES = ("doe", "Smith", "garcia", "Li", "khan", "IVANOVA", "silva", "Patel", "ng", "Kim")
DOMAINS = ("gmail.com", "GMail.com", "yahoo.com", "outlook.com", "icloud.com", "example.org")
DOMAIN_WEIGHTS = (0.30, 0.05, 0.2, 0.2, 0.15, 0.1)
TIERS = ("bronze", "silver", "gold")
US_FORMATS = (
    ("(", "A", ") ", "E", "-", "L"),
    ("A", "-", "E", "-", "L"),
    ("A", ".", "E", ".", "L"),
    ("A", "E", "L"),
    ("+1 ", "A", " ", "E", " ", "L"),
    ("1-", "A", "-", "E", "-", "L"),
    ("+1", "A", "E", "L"),
    ("1 (", "A", ") ", "E", "-", "L"),
)
JUNK_PHONES = ("n/a", "000", "12345", "555-0100", "call me", "+", "0")


@dataclass(frozen=True)
class PhoneBook:
    """Valid US area code and exchange pairs, and foreign numbers, to draw phones from."""

    areas: pa.Array[Any]
    exchanges: pa.Array[Any]
    foreign: pa.Array[Any]

    @classmethod
    def make(cls, rng: np.random.Generator) -> PhoneBook:
        """Find valid pairs and foreign numbers with the phone library (not timed)."""
        areas, exchanges = [], []
        while len(areas) < 3000:
            area, exchange = rng.integers(200, 1000, 2)
            number = phonenumbers.parse(f"{area}{exchange}0100", "US")
            if phonenumbers.is_valid_number(number):
                areas.append(f"{area}")
                exchanges.append(f"{exchange}")
        foreign = []
        for region in ("GB", "DE", "FR", "MX", "IN", "CA"):
            example = phonenumbers.example_number_for_type(
                region, phonenumbers.PhoneNumberType.MOBILE
            )
            nsn = phonenumbers.national_significant_number(example)
            for _ in range(1000):
                digits = nsn[:-4] + f"{rng.integers(0, 10_000):04d}"
                number = phonenumbers.parse(f"+{example.country_code}{digits}", None)
                if phonenumbers.is_valid_number(number):
                    foreign.append(
                        phonenumbers.format_number(
                            number, phonenumbers.PhoneNumberFormat.INTERNATIONAL
                        )
                    )
        return cls(pa.array(areas), pa.array(exchanges), pa.array(foreign))


def emails(rng: np.random.Generator, people: np.ndarray[Any, Any]) -> pa.Array[Any]:
    """The email of each person (by number), written as brands hold them."""
    rows = len(people)
    first = pa.array(FIRST_NAMES).take(pa.array(people % len(FIRST_NAMES)))
    last = pa.array(LAST_NAMES).take(pa.array((people // 7) % len(LAST_NAMES)))
    domain = pa.array(DOMAINS).take(pa.array(rng.choice(len(DOMAINS), size=rows, p=DOMAIN_WEIGHTS)))
    number = pa.array(people).cast(pa.string())
    tag = _pick(rng, rows, 0.05, pa.array(["+news"] * rows), pa.array([""] * rows))
    address = pc.binary_join_element_wise(first, ".", last, number, tag, "@", domain, "")
    address = _pick(rng, rows, 0.01, pc.replace_substring(address, "@", " at "), address)
    return _pad(rng, address, 0.04)


def us_phones(
    rng: np.random.Generator, book: PhoneBook, people: np.ndarray[Any, Any]
) -> pa.Array[Any]:
    """The phone of each person (by number), as a US brand holds them.

    Mostly US numbers in eight national and international formats; some foreign numbers in
    international format, some junk.
    """
    rows = len(people)
    pair = pa.array(people % len(book.areas))
    parts = {
        "A": book.areas.take(pair),
        "E": book.exchanges.take(pair),
        "L": pc.utf8_lpad(pa.array((people // len(book.areas)) % 10_000).cast(pa.string()), 4, "0"),
    }
    formatted = [
        pc.binary_join_element_wise(*[parts.get(part, part) for part in layout], "")
        for layout in US_FORMATS
    ]
    phone = pc.choose(pa.array(rng.integers(0, len(US_FORMATS), rows).astype(np.int8)), *formatted)
    foreign = book.foreign.take(pa.array(people % len(book.foreign)))
    phone = _pick(rng, rows, 0.05, foreign, phone)
    junk = pa.array(JUNK_PHONES).take(pa.array(rng.integers(0, len(JUNK_PHONES), rows)))
    phone = _pick(rng, rows, 0.02, junk, phone)
    return _pad(rng, phone, 0.03)


def maids(rng: np.random.Generator, rows: int) -> pa.Array[Any]:
    """Random advertising IDs: a third upper case, 1% all-zero (limited ad tracking)."""
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[rng.integers(0, 16, (rows, 32))]
    text = np.full((rows, 36), ord("-"), dtype=np.uint8)
    for start, stop, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        text[:, at : at + stop - start] = digits[:, start:stop]
    ids = pa.array(text.view("S36").ravel()).cast(pa.string())
    ids = _pick(rng, rows, 0.3, pc.ascii_upper(ids), ids)
    return _pick(rng, rows, 0.01, pa.array(["00000000-0000-0000-0000-000000000000"] * rows), ids)


def tiers(rng: np.random.Generator, rows: int) -> pa.Array[Any]:
    """A loyalty tier per row."""
    return pa.array(TIERS).take(pa.array(rng.integers(0, len(TIERS), rows)))


def customers(
    rng: np.random.Generator, book: PhoneBook, rows: int, columns: tuple[str, ...], population: int
) -> pa.Table:
    """A customer table of people drawn from `population` (so some rows repeat a person)."""
    people = rng.integers(0, population, rows)
    made: dict[str, pa.Array[Any]] = {}
    for column in columns:
        if column == "email":
            made[column] = emails(rng, people)
        elif column == "phone":
            made[column] = us_phones(rng, book, people)
        elif column == "maid":
            made[column] = maids(rng, rows)
        else:
            made[column] = tiers(rng, rows)
    return pa.table(made)


def write_csv(
    path: Path,
    rng: np.random.Generator,
    book: PhoneBook,
    rows: int,
    columns: tuple[str, ...],
    *,
    chunk_rows: int = 1_000_000,
) -> None:
    """Write a customer CSV of `rows` rows, a chunk at a time."""
    population = max(rows, 1) * 2
    with pa_csv.CSVWriter(path, customers(rng, book, 1, columns, population).schema) as writer:
        for start in range(0, rows, chunk_rows):
            writer.write_table(
                customers(rng, book, min(chunk_rows, rows - start), columns, population)
            )


def write_csv_of_size(
    path: Path, rng: np.random.Generator, book: PhoneBook, size: int, columns: tuple[str, ...]
) -> int:
    """Write a customer CSV of about `size` bytes; return its rows."""
    chunk_rows = 1_000_000 if size > 200 << 20 else 100_000
    rows = 0
    population = size // 40
    with pa_csv.CSVWriter(path, customers(rng, book, 1, columns, population).schema) as writer:
        while path.stat().st_size < size:
            writer.write_table(customers(rng, book, chunk_rows, columns, population))
            rows += chunk_rows
    return rows


def _pick(
    rng: np.random.Generator, rows: int, share: float, chosen: pa.Array[Any], other: pa.Array[Any]
) -> pa.Array[Any]:
    """Take `chosen` in a random `share` of rows, `other` elsewhere."""
    return pc.if_else(pa.array(rng.random(rows) < share), chosen, other)


def _pad(rng: np.random.Generator, values: pa.Array[Any], share: float) -> pa.Array[Any]:
    """Surround a random share of values with whitespace, as spreadsheets leave it."""
    padded = pc.binary_join_element_wise(" ", values, "\t", "")
    return _pick(rng, len(values), share, padded, values)
