"""Synthetic customer files of three brands, with overlaps planted on purpose.

One seeded population of made-up persons (an email, a US phone number, and for some a
mobile advertising ID) is shared by three brands. Each brand keeps its own sample of it,
in its own file layout and its own messy formats, as exports from real systems look:

- `acme.csv`: `customer_id,email,phone,loyalty_tier`
- `brightmart.csv`: `email,mobile,device_id,region`
- `corvid.parquet`: `maid,phone,email,channel`

A small share of values is missing or malformed, and a few customers appear twice, so
that the partner toolkit has something to report. Every person planted in two or three
brands keeps at least one identifier (email or phone) valid in each of those brands, so
the planted overlaps are exactly what deterministic matching on normalized identifiers
finds. Distinct persons never share an identifier, not even after normalization.

`truth.json` beside the files records the planted overlaps and, per brand, its rows,
distinct persons, duplicate rows, and per identifier column the rows whose value is
missing (empty or null) or malformed (and so dropped by the partner toolkit).

The names and numbers are random: any resemblance to a real address is chance.
"""

from __future__ import annotations

import csv
import json
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from cleanroom.errors import InvalidArgumentError

__all__ = [
    "BRANDS",
    "DEFAULT_PHONE_REGION",
    "MINIMUM_ROWS",
    "CustomerFiles",
    "write_customer_files",
]

BRANDS: Final = ("acme", "brightmart", "corvid")
"""The demo's brands, which are also their partner ids."""

DEFAULT_PHONE_REGION: Final = "US"
"""The region in which phone numbers written without a country code are parsed."""

MINIMUM_ROWS: Final = 100
"""The fewest rows per brand for which every planted overlap still holds persons."""

IdentifierType = Literal["email", "phone", "maid"]
Strings = NDArray[np.str_]
Flags = NDArray[np.bool_]
Indices = NDArray[np.int64]

# Share of each brand's persons planted in each intersection (inclusive: a pair's share
# includes the triple). At 100,000 rows: 20,000, 12,000, 9,000 and 5,000 persons.
_TRIPLE: Final = "acme&brightmart&corvid"
_OVERLAP_SHARES: Final = {
    "acme&brightmart": 0.20,
    "acme&corvid": 0.12,
    "brightmart&corvid": 0.09,
    _TRIPLE: 0.05,
}
_DUPLICATE_SHARE: Final = 0.006  # customers recorded twice by a brand's system
_MAID_SHARE: Final = 0.55  # persons whose phone shares an advertising ID
_EMAIL_ANCHOR_SHARE: Final = 0.7  # overlap persons guaranteed a valid email (else phone)
_NULL_SHARE: Final = 0.8  # missing Parquet values written as null rather than ""

# Status of one identifier of one row.
_VALID: Final = 0
_MISSING: Final = 1
_INVALID: Final = 2

_ZERO_MAID: Final = "00000000-0000-0000-0000-000000000000"
# Real area codes, all of which phonenumbers accepts with any exchange [2-9]XX (a test
# checks every one); a few dozen big-city codes look realistic enough.
_AREA_CODES: Final = (
    "201", "202", "203", "205", "206", "207", "208", "210", "212", "213", "214", "215",
    "216", "217", "225", "239", "248", "253", "267", "281", "301", "303", "305", "310",
    "312", "313", "314", "317", "323", "347", "404", "407", "410", "412", "415", "469",
    "503", "512", "602", "614", "617", "646", "702", "713", "718", "773", "786", "818",
    "832", "917",
)  # fmt: skip
# Exchanges N11 are service codes and 555 is the fictional one: real numbers avoid them.
_EXCHANGES: Final = tuple(
    f"{code}" for code in range(200, 1000) if code % 100 != 11 and code != 555
)
_FIRST_NAMES: Final = (
    "james", "mary", "robert", "patricia", "john", "jennifer", "michael", "linda", "david",
    "elizabeth", "william", "barbara", "richard", "susan", "joseph", "jessica", "thomas",
    "sarah", "charles", "karen", "christopher", "lisa", "daniel", "nancy", "matthew",
    "betty", "anthony", "sandra", "mark", "margaret", "donald", "ashley", "steven",
    "kimberly", "andrew", "emily", "paul", "donna", "joshua", "michelle", "kenneth",
    "carol", "kevin", "amanda", "brian", "melissa", "george", "deborah", "timothy",
    "stephanie", "ronald", "rebecca", "jason", "laura", "edward", "sharon", "jeffrey",
    "cynthia", "ryan", "kathleen", "jacob", "amy", "gary", "angela", "nicholas", "shirley",
    "eric", "brenda", "jonathan", "emma", "stephen", "anna", "larry", "pamela", "justin",
    "nicole", "scott", "samantha", "brandon", "katherine", "benjamin", "christine",
    "samuel", "helen", "gregory", "debra", "alexander", "rachel", "patrick", "carolyn",
    "frank", "janet", "raymond", "maria", "jack", "olivia", "dennis", "heather", "jerry",
    "diane", "tyler", "julie", "aaron", "joyce", "jose", "victoria", "adam", "ruth",
    "nathan", "virginia", "henry", "lauren", "zachary", "kelly", "douglas", "christina",
    "peter", "joan", "kyle", "evelyn", "noah", "judith", "ethan", "andrea", "jeremy",
    "hannah", "walter", "megan", "christian", "cheryl", "keith", "jacqueline", "roger",
    "martha", "terry", "madison", "austin", "teresa", "sean", "gloria", "gerald", "sara",
    "carl", "janice", "harold", "ann", "dylan", "kathryn", "arthur", "abigail", "lawrence",
    "sophia", "jordan", "frances", "jesse", "jean", "bryan", "alice", "billy", "judy",
    "bruce", "isabella", "gabriel", "julia", "joe", "grace", "logan", "amber", "alan",
    "denise", "juan", "danielle", "albert", "marilyn", "willie", "beverly", "elijah",
    "charlotte", "wayne", "natalie", "randy", "theresa", "vincent", "diana", "mason",
    "brittany", "roy", "doris", "ralph", "kayla", "bobby", "alexis", "russell", "lori",
    "bradley", "marie", "philip", "tiffany", "eugene", "kaitlyn", "priya", "wei", "mohammed",
    "fatima", "hiroshi", "yuki", "carlos", "lucia", "ahmed", "aisha", "dmitri", "olga",
)  # fmt: skip
_LAST_NAMES: Final = (
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis",
    "rodriguez", "martinez", "hernandez", "lopez", "gonzalez", "wilson", "anderson",
    "thomas", "taylor", "moore", "jackson", "martin", "lee", "perez", "thompson", "white",
    "harris", "sanchez", "clark", "ramirez", "lewis", "robinson", "walker", "young", "allen",
    "king", "wright", "scott", "torres", "nguyen", "hill", "flores", "green", "adams",
    "nelson", "baker", "hall", "rivera", "campbell", "mitchell", "carter", "roberts",
    "gomez", "phillips", "evans", "turner", "diaz", "parker", "cruz", "edwards", "collins",
    "reyes", "stewart", "morris", "morales", "murphy", "cook", "rogers", "gutierrez",
    "ortiz", "morgan", "cooper", "peterson", "bailey", "reed", "kelly", "howard", "ramos",
    "kim", "cox", "ward", "richardson", "watson", "brooks", "chavez", "wood", "james",
    "bennett", "gray", "mendoza", "ruiz", "hughes", "price", "alvarez", "castillo",
    "sanders", "patel", "myers", "long", "ross", "foster", "jimenez", "powell", "jenkins",
    "perry", "russell", "sullivan", "bell", "coleman", "butler", "henderson", "barnes",
    "gonzales", "fisher", "vasquez", "simmons", "romero", "jordan", "patterson", "alexander",
    "hamilton", "graham", "reynolds", "griffin", "wallace", "moreno", "west", "cole",
    "hayes", "bryant", "herrera", "gibson", "ellis", "tran", "medina", "aguilar", "stevens",
    "murray", "ford", "castro", "marshall", "owens", "harrison", "fernandez", "mcdonald",
    "woods", "washington", "kennedy", "wells", "vargas", "henry", "chen", "freeman", "webb",
    "tucker", "guzman", "burns", "crawford", "olson", "simpson", "porter", "hunter",
    "gordon", "mendez", "silva", "shaw", "snyder", "mason", "dixon", "munoz", "hunt",
    "hicks", "holmes", "palmer", "wagner", "black", "robertson", "boyd", "rose", "stone",
    "salazar", "fox", "warren", "mills", "meyer", "rice", "schmidt", "garza", "daniels",
    "ferguson", "nichols", "stephens", "soto", "weaver", "ryan", "gardner", "payne", "grant",
    "dunn", "kelley", "spencer", "hawkins", "arnold", "pierce", "vazquez", "hansen",
    "peters", "santos", "hart", "bradley", "knight", "elliott", "cunningham", "duncan",
    "armstrong", "hudson", "carroll", "lane", "riley", "andrews", "alvarado", "ray",
    "delgado", "berry", "perkins", "hoffman", "johnston", "matthews", "pena", "richards",
    "contreras", "willis", "carpenter", "lawrence", "sandoval", "wang", "zhang", "singh",
    "kumar", "yamamoto", "tanaka", "kowalski", "novak", "ivanov", "okafor", "mensah",
)  # fmt: skip
# Web mail providers and company-like domains, weighted roughly as US consumer lists are.
_EMAIL_DOMAINS: Final = (
    ("gmail.com", 0.38),
    ("yahoo.com", 0.14),
    ("outlook.com", 0.10),
    ("icloud.com", 0.09),
    ("hotmail.com", 0.06),
    ("aol.com", 0.03),
    ("northwindtraders.com", 0.03),
    ("contoso.com", 0.03),
    ("fabrikam.com", 0.03),
    ("initech.com", 0.03),
    ("globex-corp.com", 0.03),
    ("hooli.io", 0.03),
    ("umbrella-labs.com", 0.02),
)
_GMAIL_TAGS: Final = ("shopping", "deals", "news", "promo", "acme", "brightmart", "corvid")


@dataclass(frozen=True)
class CustomerFiles:
    """The customer files written for the demo, and how to read them.

    Attributes:
        directory: The folder holding the files and `truth.json`.
        paths: The file of each brand.
        identifier_columns: For each brand, its input columns and the identifier type
            each holds (`email`, `phone` or `maid`).
        segment_columns: The segment column of each brand.
        default_region: The region for phone numbers without a country code.
        planted_overlaps: Persons in each brand pair and in all three brands, keyed like
            `acme&brightmart`; a pair's figure includes the persons of the triple.
        truth: The `truth.json` file with these figures and per-brand counts.
    """

    directory: Path
    paths: dict[str, Path]
    identifier_columns: dict[str, dict[str, str]]
    segment_columns: dict[str, str]
    default_region: str
    planted_overlaps: dict[str, int]
    truth: Path


@dataclass(frozen=True)
class _IdentifierColumn:
    """How one brand writes one identifier: shares of missing and malformed values, style."""

    name: str
    kind: IdentifierType
    missing: float
    invalid: float
    phone_formats: tuple[tuple[str, float], ...] = ()
    upper: float = 0.0
    title: float = 0.0
    padded: float = 0.0


@dataclass(frozen=True)
class _BrandLayout:
    """One brand's file: its name, identifier columns and segment column."""

    brand: str
    file_name: str
    identifiers: tuple[_IdentifierColumn, ...]
    segment_column: str
    segment_values: tuple[tuple[str, float], ...]
    customer_id_prefix: str | None = None


_LAYOUTS: Final = (
    _BrandLayout(
        brand="acme",
        file_name="acme.csv",
        customer_id_prefix="AC",
        identifiers=(
            _IdentifierColumn(
                "email", "email", missing=0.02, invalid=0.01, upper=0.12, padded=0.06
            ),
            _IdentifierColumn(
                "phone",
                "phone",
                missing=0.15,
                invalid=0.015,
                phone_formats=(
                    ("({area}) {exchange}-{line}", 0.6),
                    ("{area}.{exchange}.{line}", 0.25),
                    ("{area}{exchange}{line}", 0.15),
                ),
            ),
        ),
        segment_column="loyalty_tier",
        segment_values=(("bronze", 0.55), ("silver", 0.28), ("gold", 0.13), ("platinum", 0.04)),
    ),
    _BrandLayout(
        brand="brightmart",
        file_name="brightmart.csv",
        identifiers=(
            _IdentifierColumn("email", "email", missing=0.05, invalid=0.01, title=0.08),
            _IdentifierColumn(
                "mobile",
                "phone",
                missing=0.10,
                invalid=0.01,
                phone_formats=(
                    ("+1 {area} {exchange} {line}", 0.5),
                    ("1-{area}-{exchange}-{line}", 0.35),
                    ("+1{area}{exchange}{line}", 0.15),
                ),
            ),
            _IdentifierColumn("device_id", "maid", missing=0.20, invalid=0.01, upper=0.3),
        ),
        segment_column="region",
        segment_values=(
            ("northeast", 0.22),
            ("southeast", 0.24),
            ("midwest", 0.21),
            ("southwest", 0.13),
            ("west", 0.20),
        ),
    ),
    _BrandLayout(
        brand="corvid",
        file_name="corvid.parquet",
        identifiers=(
            _IdentifierColumn("maid", "maid", missing=0.0, invalid=0.015),
            _IdentifierColumn(
                "phone",
                "phone",
                missing=0.30,
                invalid=0.01,
                phone_formats=(
                    ("+1{area}{exchange}{line}", 0.5),
                    ("{area}-{exchange}-{line}", 0.5),
                ),
            ),
            _IdentifierColumn("email", "email", missing=0.35, invalid=0.01, upper=0.03),
        ),
        segment_column="channel",
        segment_values=(("app", 0.45), ("web", 0.35), ("store", 0.20)),
    ),
)


@dataclass(frozen=True)
class _Population:
    """The persons shared by all brands; index i is one person throughout."""

    email_local: Strings  # lowercase, as the person types it (gmail dots included)
    email_domain: Strings
    area: Strings
    exchange: Strings
    line: Strings  # four digits
    maid: Strings  # lowercase UUID, or "" for a person without one
    anchor_is_email: Flags  # which identifier stays valid wherever the person is planted


@dataclass(frozen=True)
class _BrandSample:
    """One brand's persons (population indices) and the rows that it writes for them."""

    persons: Indices
    row_person: Indices  # for each row, the index into `persons` (duplicates repeat one)
    anchored: Flags  # for each of `persons`: planted in another brand too


def write_customer_files(
    directory: Path, *, rows: int = 100_000, seed: int = 2027
) -> CustomerFiles:
    """Write the three brands' customer files and `truth.json` into `directory`.

    The output depends on `rows` and `seed` only: the same arguments write the same
    files.

    Args:
        directory: Where to write; created if needed. Existing files of the same names
            are replaced.
        rows: Distinct persons per brand; each file has these rows plus a few duplicates.
        seed: Seed of the random generator.

    Returns:
        The paths, the column mappings and the planted overlap figures.

    Raises:
        InvalidArgumentError: `rows` is below `MINIMUM_ROWS`.
    """
    if rows < MINIMUM_ROWS:
        raise InvalidArgumentError(
            "TOO_FEW_ROWS",
            f"rows={rows} is too few for the planted overlaps: give at least {MINIMUM_ROWS}.",
            rows=rows,
            minimum=MINIMUM_ROWS,
        )
    rng = np.random.default_rng(seed)
    regions = _plan_regions(rows)
    population = _make_population(rng, sum(regions.values()))
    samples = _sample_brands(rng, regions)
    directory.mkdir(parents=True, exist_ok=True)
    brand_truth = {
        layout.brand: _write_brand(rng, directory, layout, population, samples[layout.brand])
        for layout in _LAYOUTS
    }
    overlaps = _measure_overlaps(samples)
    files = CustomerFiles(
        directory=directory,
        paths={layout.brand: directory / layout.file_name for layout in _LAYOUTS},
        identifier_columns={
            layout.brand: {column.name: column.kind for column in layout.identifiers}
            for layout in _LAYOUTS
        },
        segment_columns={layout.brand: layout.segment_column for layout in _LAYOUTS},
        default_region=DEFAULT_PHONE_REGION,
        planted_overlaps=overlaps,
        truth=directory / "truth.json",
    )
    _write_truth(files, rows=rows, seed=seed, brands=brand_truth)
    return files


def _plan_regions(rows: int) -> dict[frozenset[str], int]:
    """Count the persons of each region of the three-set Venn diagram (exclusive regions)."""
    triple = round(rows * _OVERLAP_SHARES[_TRIPLE])
    pairs = {
        frozenset(key.split("&")): round(rows * share) - triple
        for key, share in _OVERLAP_SHARES.items()
        if key != _TRIPLE
    }
    regions = {frozenset(BRANDS): triple, **pairs}
    for brand in BRANDS:
        shared = sum(count for members, count in regions.items() if brand in members)
        regions[frozenset({brand})] = rows - shared
    return regions


def _make_population(rng: np.random.Generator, size: int) -> _Population:
    local, domain = _make_emails(rng, size)
    area, exchange, line = _make_phones(rng, size)
    maid = np.where(rng.random(size) < _MAID_SHARE, _make_maids(rng, size), "")
    return _Population(
        email_local=local,
        email_domain=domain,
        area=area,
        exchange=exchange,
        line=line,
        maid=maid,
        anchor_is_email=rng.random(size) < _EMAIL_ANCHOR_SHARE,
    )


def _make_emails(rng: np.random.Generator, size: int) -> tuple[Strings, Strings]:
    """Make distinct addresses: distinct after normalization, gmail's dot rule included."""
    first = _text(_FIRST_NAMES)[rng.integers(len(_FIRST_NAMES), size=size)]
    last = _text(_LAST_NAMES)[rng.integers(len(_LAST_NAMES), size=size)]
    initial = np.strings.slice(first, 1)
    two_digits = rng.integers(10, 100, size=size).astype(np.str_)
    year = rng.integers(1950, 2008, size=size).astype(np.str_)
    forms = (
        (first, ".", last),
        (first, ".", last, two_digits),
        (initial, last, two_digits),
        (initial, np.strings.slice(last, 1), year),
        (first, last, year),
    )
    form = rng.choice(len(forms), size=size, p=[0.35, 0.15, 0.25, 0.15, 0.10])
    local = _pick_joined(form, forms)
    names, weights = zip(*_EMAIL_DOMAINS, strict=True)
    domain = _text(names)[rng.choice(len(names), size=size, p=_normalized(weights))]
    return _make_distinct(rng, local, domain), domain


def _make_distinct(rng: np.random.Generator, local: Strings, domain: Strings) -> Strings:
    """Append digits to local parts until no two addresses normalize to the same one."""
    # A set in one Python pass beats np.unique rounds over wide fixed-width strings.
    locals_: list[str] = local.tolist()
    digits = _digits(rng)
    seen: set[str] = set()
    for index, host in enumerate(domain.tolist()):
        name = locals_[index]
        canonical = name.replace(".", "") if host == "gmail.com" else name
        while f"{canonical}@{host}" in seen:
            digit = next(digits)
            name, canonical = name + digit, canonical + digit
        seen.add(f"{canonical}@{host}")
        locals_[index] = name
    return _text(locals_)


def _digits(rng: np.random.Generator) -> Iterator[str]:
    """Yield random decimal digits, drawn in blocks: one draw per digit would be slow."""
    while True:
        yield from rng.integers(10, size=1024).astype(np.str_).tolist()


def _make_phones(rng: np.random.Generator, size: int) -> tuple[Strings, Strings, Strings]:
    """Make distinct US numbers as area code, exchange and four-digit line strings."""
    numbers_per_area = len(_EXCHANGES) * 10_000
    # Sampling without replacement from the whole space makes the numbers distinct.
    number = rng.choice(len(_AREA_CODES) * numbers_per_area, size=size, replace=False)
    area = _text(_AREA_CODES)[number // numbers_per_area]
    exchange = _text(_EXCHANGES)[number % numbers_per_area // 10_000]
    line = np.strings.zfill((number % 10_000).astype(np.str_), 4)
    return area, exchange, line


def _make_maids(rng: np.random.Generator, size: int) -> Strings:
    """Make random version 4 UUIDs, lowercase with hyphens, without a Python loop."""
    octets = rng.integers(0, 256, size=(size, 16), dtype=np.uint8)
    octets[:, 6] = (octets[:, 6] & 0x0F) | 0x40  # version 4
    octets[:, 8] = (octets[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    nibbles = np.stack([octets >> 4, octets & 0x0F], axis=2).reshape(size, 32)
    text = np.full((size, 36), ord("-"), dtype=np.uint8)
    text[:, [i for i in range(36) if i not in (8, 13, 18, 23)]] = hex_digits[nibbles]
    return text.view("S36").ravel().astype(np.str_)


def _sample_brands(
    rng: np.random.Generator, regions: Mapping[frozenset[str], int]
) -> dict[str, _BrandSample]:
    """Give each brand the persons of its regions, shuffled, plus a few duplicate rows."""
    bounds = np.cumsum([0, *regions.values()])
    persons_of_region = {
        members: np.arange(bounds[i], bounds[i + 1]) for i, members in enumerate(regions)
    }
    samples = {}
    for brand in BRANDS:
        mine = {members: part for members, part in persons_of_region.items() if brand in members}
        persons = np.concatenate(list(mine.values()))
        anchored = np.concatenate([np.full(len(part), len(m) > 1) for m, part in mine.items()])
        duplicates = rng.choice(len(persons), size=round(len(persons) * _DUPLICATE_SHARE))
        row_person = rng.permutation(np.concatenate([np.arange(len(persons)), duplicates]))
        samples[brand] = _BrandSample(persons=persons, row_person=row_person, anchored=anchored)
    return samples


def _write_brand(
    rng: np.random.Generator,
    directory: Path,
    layout: _BrandLayout,
    population: _Population,
    sample: _BrandSample,
) -> dict[str, object]:
    """Render and write one brand's file; return its counts for `truth.json`."""
    columns: dict[str, tuple[Strings, Flags]] = {}
    if layout.customer_id_prefix:
        columns["customer_id"] = (
            _customer_ids(rng, layout.customer_id_prefix, sample),
            _no_nulls(sample),
        )
    truth: dict[str, dict[str, int]] = {"invalid_values": {}, "missing_values": {}}
    for column in layout.identifiers:
        status = _identifier_status(rng, column, population, sample)[sample.row_person]
        person = sample.persons[sample.row_person]
        values = _render(rng, column, population, person, status)
        columns[column.name] = (values, _nulls(rng, status, layout))
        truth["invalid_values"][column.name] = int((status == _INVALID).sum())
        truth["missing_values"][column.name] = int((status == _MISSING).sum())
    segments, weights = zip(*layout.segment_values, strict=True)
    chosen = rng.choice(len(segments), size=len(sample.persons), p=_normalized(weights))
    segment = _text(segments)[chosen]
    columns[layout.segment_column] = (segment[sample.row_person], _no_nulls(sample))
    path = directory / layout.file_name
    if layout.file_name.endswith(".parquet"):
        _write_parquet(path, columns)
    else:
        _write_csv(path, columns)
    return {
        "file": layout.file_name,
        "rows": len(sample.row_person),
        "persons": len(sample.persons),
        "duplicate_rows": len(sample.row_person) - len(sample.persons),
        **truth,
    }


def _identifier_status(
    rng: np.random.Generator,
    column: _IdentifierColumn,
    population: _Population,
    sample: _BrandSample,
) -> NDArray[np.int8]:
    """Decide per person of the brand whether the value is valid, missing or malformed."""
    draw = rng.random(len(sample.persons))
    status = np.full(len(sample.persons), _VALID, dtype=np.int8)
    status[draw < column.missing + column.invalid] = _INVALID
    status[draw < column.missing] = _MISSING
    if column.kind == "maid":
        status[population.maid[sample.persons] == ""] = _MISSING
        return status
    # Overlap persons keep their anchor identifier valid, so that they match for sure.
    anchor_is_email = population.anchor_is_email[sample.persons]
    keeps = sample.anchored & (anchor_is_email == (column.kind == "email"))
    status[keeps] = _VALID
    return status


def _render(
    rng: np.random.Generator,
    column: _IdentifierColumn,
    population: _Population,
    person: Indices,
    status: NDArray[np.int8],
) -> Strings:
    """Write each row's value in the column's style; "" where missing."""
    if column.kind == "email":
        values = _render_emails(rng, column, population, person, status)
    elif column.kind == "phone":
        values = _render_phones(rng, column, population, person, status)
    else:
        values = _render_maids(rng, column, population, person, status)
    return np.where(status == _MISSING, "", values)


def _render_emails(
    rng: np.random.Generator,
    column: _IdentifierColumn,
    population: _Population,
    person: Indices,
    status: NDArray[np.int8],
) -> Strings:
    local, domain = population.email_local[person], population.email_domain[person]
    size = len(person)
    # Gmail ignores dots and +tags, so people write the same address several ways.
    is_gmail = domain == "gmail.com"
    variant = rng.random(size)
    spelling = np.where(is_gmail & (variant < 0.15), 1, np.where(is_gmail & (variant >= 0.9), 2, 0))
    undotted = local.copy()
    _transform_where(undotted, spelling == 1, lambda text: np.strings.replace(text, ".", ""))
    tag = _text(_GMAIL_TAGS)[rng.integers(len(_GMAIL_TAGS), size=size)]
    spellings = ((local, "@", domain), (undotted, "@", domain), (local, "+", tag, "@", domain))
    email = _pick_joined(spelling, spellings)
    case = rng.random(size)
    _transform_where(email, case < column.upper, np.strings.upper)
    is_title = (case >= column.upper) & (case < column.upper + column.title)
    _transform_where(email, is_title, np.strings.title)
    padded = (rng.random(size) < column.padded).astype(np.int64)
    email = _pick_joined(padded, ((email,), (" ", email, "  ")))
    malformed = ((local, domain), (local, "@"), ("@", domain), (local, "@@", domain))
    broken = _pick_joined(rng.integers(len(malformed), size=size), malformed)
    return np.where(status == _INVALID, broken, email)


def _render_phones(
    rng: np.random.Generator,
    column: _IdentifierColumn,
    population: _Population,
    person: Indices,
    status: NDArray[np.int8],
) -> Strings:
    line = population.line[person]
    # A digit lost in data entry leaves nine digits, which no US number has.
    line = np.where(status == _INVALID, np.strings.slice(line, 3), line)
    fields = {
        "area": population.area[person],
        "exchange": population.exchange[person],
        "line": line,
    }
    templates, weights = zip(*column.phone_formats, strict=True)
    options = [_template_parts(template, fields) for template in templates]
    choice = rng.choice(len(templates), size=len(person), p=_normalized(weights))
    return _pick_joined(choice, options)


def _render_maids(
    rng: np.random.Generator,
    column: _IdentifierColumn,
    population: _Population,
    person: Indices,
    status: NDArray[np.int8],
) -> Strings:
    maid = population.maid[person]
    _transform_where(maid, rng.random(len(person)) < column.upper, np.strings.upper)
    # Devices with ad tracking limited report the all-zero ID.
    return np.where(status == _INVALID, _ZERO_MAID, maid)


def _nulls(rng: np.random.Generator, status: NDArray[np.int8], layout: _BrandLayout) -> Flags:
    """Choose which missing values Parquet stores as null; the rest stay empty strings."""
    draw = rng.random(len(status))
    is_parquet = layout.file_name.endswith(".parquet")
    nulls: Flags = (status == _MISSING) & (draw < _NULL_SHARE) & is_parquet
    return nulls


def _no_nulls(sample: _BrandSample) -> Flags:
    return np.zeros(len(sample.row_person), dtype=np.bool_)


def _customer_ids(rng: np.random.Generator, prefix: str, sample: _BrandSample) -> Strings:
    """Distinct ids per row: a duplicate customer got a second record, hence a second id."""
    number = rng.choice(9_000_000, size=len(sample.row_person), replace=False) + 1_000_000
    return _join(prefix, "-", number.astype(np.str_))


def _write_csv(path: Path, columns: Mapping[str, tuple[Strings, Flags]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(zip(*(values.tolist() for values, _ in columns.values()), strict=True))


def _write_parquet(path: Path, columns: Mapping[str, tuple[Strings, Flags]]) -> None:
    table = pa.table(
        {
            name: pa.array(values, type=pa.string(), mask=nulls)
            for name, (values, nulls) in columns.items()
        }
    )
    pq.write_table(table, path)


def _measure_overlaps(samples: Mapping[str, _BrandSample]) -> dict[str, int]:
    """Count the persons that the written files share, for each pair and the triple."""
    persons = {brand: sample.persons for brand, sample in samples.items()}
    overlaps = {}
    for key in _OVERLAP_SHARES:
        brands = key.split("&")
        shared = persons[brands[0]]
        for brand in brands[1:]:
            shared = np.intersect1d(shared, persons[brand])
        overlaps[key] = len(shared)
    return overlaps


def _write_truth(
    files: CustomerFiles, *, rows: int, seed: int, brands: Mapping[str, object]
) -> None:
    truth = {
        "seed": seed,
        "rows": rows,
        "default_region": files.default_region,
        "identifier_columns": files.identifier_columns,
        "segment_columns": files.segment_columns,
        "planted_overlaps": files.planted_overlaps,
        "brands": brands,
    }
    files.truth.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")


def _template_parts(template: str, fields: Mapping[str, Strings]) -> list[str | Strings]:
    """Split a `str.format` template into its literal text and its fields' arrays."""
    parts: list[str | Strings] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        if field is not None:
            parts.append(fields[field])
    return parts


def _join(*parts: str | Strings) -> Strings:
    """Concatenate strings and arrays of strings element by element."""
    result = np.asarray(parts[0], dtype=np.str_)
    for part in parts[1:]:
        result = np.strings.add(result, part)
    return result


def _transform_where(
    values: Strings, where: Flags, transform: Callable[[Strings], Strings]
) -> None:
    """Apply a transformation that keeps string lengths to the rows `where` says, in place.

    Transforming only those rows is much cheaper than transforming all and selecting.
    """
    values[where] = transform(values[where])


def _text(values: Sequence[str]) -> Strings:
    return np.array(values, dtype=np.str_)


def _pick_joined(choice: NDArray[np.int64], options: Sequence[Sequence[str | Strings]]) -> Strings:
    """For each row i, join the parts of option `choice[i]` (arrays taken at row i).

    Each option is built only for the rows that chose it: concatenating fixed-width
    strings is the costly step of generating the files.
    """
    built = []
    for index, parts in enumerate(options):
        rows = np.flatnonzero(choice == index)
        values = _join(*(part if isinstance(part, str) else part[rows] for part in parts))
        built.append((rows, values))
    width = max(values.dtype.itemsize for _, values in built) // np.dtype("<U1").itemsize
    picked = np.empty(len(choice), dtype=f"<U{max(width, 1)}")
    for rows, values in built:
        picked[rows] = values
    return picked


def _normalized(weights: tuple[float, ...]) -> NDArray[np.float64]:
    """Scale weights to sum to one, as `Generator.choice` requires exactly."""
    array = np.asarray(weights, dtype=np.float64)
    scaled: NDArray[np.float64] = array / array.sum()
    return scaled
