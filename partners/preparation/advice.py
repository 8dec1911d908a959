"""What a preparation summary means: every large drop explained, with its fix.

A brand's file that loses most of its phones for want of a country code still gives a
digests file, and a 0% match later. `hints` turns the counts of `prepare` into sentences that
say what happened and which option fixes it; the command line prints them, and an empty
output is refused with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from partners.preparation import normalize

LARGE_DROP = 0.05
"""The share of a column's values that makes a reason worth a hint."""

LOOKS_HASHED = 0.5
"""The share of sampled values that must look like SHA-256 hashes to call a column hashed."""

LARGE_DUPLICATION = 0.2
"""The share of valid values repeating an earlier row that is worth a hint."""

# The fix for each reason a value is invalid, for the reasons whose fix is known.
_FIXES = {
    normalize.MISSING_COUNTRY_CODE: (
        "have no country code: pass --default-region (for example TH) if they are all of"
        " one country, or --region-column with each row's country"
    ),
    normalize.UNKNOWN_REGION: (
        "have a region cell that names no country (use ISO 3166-1 alpha-2 codes such as TH"
        " or VN, or English, Thai or Vietnamese country names)"
    ),
    normalize.UNKNOWN_COUNTRY_CODE: "start with a country code that does not exist",
    normalize.INVALID_PHONE: (
        "are not valid numbers of their country: check that --default-region or the region"
        " column gives the right country"
    ),
    normalize.DISPLAY_NAME: ('carry a display name ("Name" <a@b.com>): export the bare addresses'),
    normalize.MAILTO_PREFIX: "start with mailto: export the bare addresses",
    normalize.CONTAINS_WHITESPACE: "contain spaces or line breaks inside the address",
    normalize.UNSAFE_CHARACTER: (
        "contain invisible or control characters (such as a zero-width space), often pasted"
        " from a web page: clean them at the source"
    ),
    normalize.MISSING_AT_SIGN: "have no '@'",
    "malformed_sha256": (
        "are not SHA-256 hashes (64 hex digits or 44 base64 characters): check that the"
        " column holds hashes, or give it with --column if it holds raw values"
    ),
}


@dataclass(frozen=True)
class ColumnFindings:
    """What `hints` needs to know about one identifier column.

    Attributes:
        identifier_type: The column's type.
        column: The source column.
        hashed: Whether it was given as hashes.
        values_read: Non-empty values read.
        invalid_by_reason: Invalid values, by reason.
        duplicates: Valid values dropped as repeats.
        sampled: Values sampled for looking like hashes (raw columns only).
        looks_hashed: Of those, how many look like SHA-256 hashes.
    """

    identifier_type: str
    column: str
    hashed: bool
    values_read: int
    invalid_by_reason: Mapping[str, int]
    duplicates: int
    sampled: int = 0
    looks_hashed: int = 0


COUNTRY_COLUMNS = frozenset(
    {"country", "country_code", "countrycode", "country code", "region", "nation", "ประเทศ",
     "quốc gia", "quoc gia", "quoc_gia"}
)  # fmt: skip
"""Column names (lowercased) that usually give each row's country."""


def hints(
    columns: list[ColumnFindings],
    *,
    rows_read: int,
    rows_written: int,
    default_region: str | None = None,
    country_columns: list[str] | None = None,
) -> list[str]:
    """Explain every large drop of a preparation, with its fix.

    Args:
        columns: What was found in each identifier column.
        rows_read: Rows of the source.
        rows_written: Rows of the digests file.
        default_region: The one region phones were read with, when no region column was.
        country_columns: Columns of the source that look like each row's country.

    Returns:
        Sentences for people, the most important first; none if nothing is worth saying.
    """
    found: list[str] = []
    raw_phones = any(c.identifier_type == "phone" and not c.hashed for c in columns)
    if raw_phones and default_region and country_columns:
        country = country_columns[0]
        found.append(
            f"Every phone number without a country code was read as a {default_region}"
            f" number, but column {country!r} seems to give each row's country: if the file"
            f" mixes countries, pass --region-column {country!r} (region_column= in Python),"
            f" or national numbers of other countries become wrong {default_region} numbers."
        )
    for column in columns:
        label = f"{column.identifier_type} values of column {column.column!r}"
        if column.sampled and column.looks_hashed >= LOOKS_HASHED * column.sampled:
            found.append(
                f"Column {column.column!r} looks like SHA-256 hashes, not raw values: give it"
                f" with --hashed-column {column.column}={column.identifier_type}"
                " (hashed_columns= in Python)."
            )
        if column.hashed and column.identifier_type == "phone":
            found.append(
                "Hashed phones are taken as SHA-256 of the E.164 form with its '+' (as in"
                " +66812345678). Hashes of digits without '+' (the form Meta asks for) never"
                " match and cannot be converted: hash the numbers again with the '+', or give"
                " the raw numbers with --column."
            )
        if not column.values_read:
            continue
        for reason, count in sorted(
            column.invalid_by_reason.items(), key=lambda item: (-item[1], item[0])
        ):
            share = count / column.values_read
            if share < LARGE_DROP:
                continue
            fix = _FIXES.get(reason, f"are invalid ({reason.replace('_', ' ')})")
            found.append(f"{share:.0%} of {label} ({count:,}) {fix}.")
        valid = column.values_read - sum(column.invalid_by_reason.values())
        if valid and column.duplicates / valid >= LARGE_DUPLICATION:
            found.append(
                f"{column.duplicates / valid:.0%} of {label} repeat an earlier row and were"
                " dropped: if a person has several rows (orders, visits), link them first"
                " with `cleanroom-partner resolve`."
            )
    if rows_read and not rows_written:
        found.append("No row has a valid identifier: the digests file would be empty.")
    elif rows_read and (rows_read - rows_written) / rows_read >= LARGE_DROP and not found:
        found.append(
            f"{(rows_read - rows_written) / rows_read:.0%} of rows had no valid, first-seen"
            " identifier and were dropped."
        )
    return found
