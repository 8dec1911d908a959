"""Normalization of identifiers before they are digested (SPEC section 2).

Two brands match a person only if both turn the same identifier into the same string, so these
rules are part of the protocol: change one and digests stop matching across partners.

Every type has two functions. `normalize_<type>` returns the normalized string. `explain_<type>`
returns it together with the changes that normalization made (for example `lowercased`), which
the prepare summary counts so that an uploader can see what was done to the data. Both raise
`InvalidIdentifierError` for a value that is not a usable identifier.

These functions are the definition. `partners.preparation._columns` applies the same rules to whole
Arrow columns for speed, and is tested to agree with them value for value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection
from typing import NamedTuple

import phonenumbers

from partners.errors import InputError

BUILTIN_TYPES = ("email", "phone", "maid")
"""The identifier types every collaboration knows, spelled as in digest files."""

ALL_ZERO_MAID = "00000000-0000-0000-0000-000000000000"
"""The advertising ID a device sends when tracking is limited: it identifies nobody."""

ASCII_WHITESPACE = "".join(chr(code) for code in range(128) if chr(code).isspace())
"""The ASCII characters that trimming (`str.strip`) removes: space, tab, CR, LF, VT, FF, FS-US."""

# Reasons a value is invalid, as counted in the prepare summary.
EMPTY = "empty"
MISSING_AT_SIGN = "missing_at_sign"
MULTIPLE_AT_SIGNS = "multiple_at_signs"
EMPTY_LOCAL_PART = "empty_local_part"
EMPTY_DOMAIN = "empty_domain"
MISSING_COUNTRY_CODE = "missing_country_code"
UNKNOWN_COUNTRY_CODE = "unknown_country_code"
UNPARSEABLE_PHONE = "unparseable_phone"
INVALID_PHONE = "invalid_phone"
TOO_LONG = "too_long"
MALFORMED_MAID = "malformed_maid"
ZERO_MAID = "zero_maid"
UNKNOWN_REGION = "unknown_region"
# Email syntax (checked by email-validator), as counted in the prepare summary.
DISPLAY_NAME = "display_name"
MAILTO_PREFIX = "mailto_prefix"
CONTAINS_WHITESPACE = "contains_whitespace"
UNSAFE_CHARACTER = "unsafe_character"
INVALID_LOCAL_PART = "invalid_local_part"
INVALID_DOMAIN = "invalid_domain"

# Changes normalization can make to a value, as counted in the prepare summary.
TRIMMED = "trimmed"
LOWERCASED = "lowercased"
GMAIL_DOTS_REMOVED = "gmail_dots_removed"
GMAIL_TAG_REMOVED = "gmail_tag_removed"
PHONE_REFORMATTED = "phone_reformatted"

_GMAIL_DOMAIN = "gmail.com"
_E164_MAX_DIGITS = 15
_MAID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Only A-Z are lowercased, as UID2 does: full Unicode case folding differs between languages
# and library versions, and a partner that holds UID2 email hashes must get the same digest.
_ASCII_LOWERCASE = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class InvalidIdentifierError(ValueError):
    """A value is not a usable identifier of its type.

    The message never quotes the value, so that it can be logged without leaking identifiers.

    Attributes:
        reason: A short snake_case reason, such as `missing_at_sign`, counted in summaries.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Normalized(NamedTuple):
    """A normalized value and the changes normalization made to reach it.

    Attributes:
        value: The normalized identifier, ready to be digested.
        changes: The changes made, such as `trimmed` or `lowercased`; empty if none.
    """

    value: str
    changes: tuple[str, ...]


def explain_email(value: str) -> Normalized:
    """Normalize an email address as UID2 does, and tell what changed.

    Trims surrounding whitespace and lowercases A-Z; for `gmail.com` only, removes every `.`
    from the local part and everything from the first `+` on. The syntax is checked first by
    email-validator (syntax only, no DNS; no quoted local parts or address literals), whose
    own normalization is not used.

    Args:
        value: The email address as the brand holds it.

    Returns:
        The normalized address and the changes made.

    Raises:
        InvalidIdentifierError: Without exactly one `@`, with an empty local part or domain,
            or with a syntax that email-validator refuses.
    """
    changes: list[str] = []
    text = _trim(value, changes)
    lowered = text.lower() if text.isascii() else text.translate(_ASCII_LOWERCASE)
    if lowered != text:
        changes.append(LOWERCASED)
    local, at_signs, domain = _split_email(lowered)
    if at_signs != 1:
        reason = MISSING_AT_SIGN if at_signs == 0 else MULTIPLE_AT_SIGNS
        raise InvalidIdentifierError(reason, f"an email address needs one '@', found {at_signs}")
    if not domain:
        raise InvalidIdentifierError(EMPTY_DOMAIN, "the email address has nothing after '@'")
    if not local:
        raise InvalidIdentifierError(EMPTY_LOCAL_PART, "the email address has no local part")
    _check_email_syntax(text)
    if domain == _GMAIL_DOMAIN:
        local = _normalize_gmail_local_part(local, changes)
    if not local:
        raise InvalidIdentifierError(EMPTY_LOCAL_PART, "the email address has no local part")
    return Normalized(f"{local}@{domain}", tuple(changes))


def normalize_email(value: str) -> str:
    """Normalize an email address as UID2 does (see `explain_email`).

    Args:
        value: The email address as the brand holds it.

    Returns:
        The normalized address.

    Raises:
        InvalidIdentifierError: Without exactly one `@`, or with an empty local part or domain.
    """
    return explain_email(value).value


def explain_phone(value: str, default_region: str | None) -> Normalized:
    """Normalize a phone number to E.164, and tell what changed.

    Args:
        value: The phone number in any common national or international format.
        default_region: The ISO 3166-1 alpha-2 region (for example `US`) of numbers written
            without a country code, or None if every number carries one.

    Returns:
        The number as `+` then country code and national number, and the changes made.

    Raises:
        InvalidIdentifierError: If the value is not a valid phone number.
        InputError: If `default_region` is not a region that phone numbers know.
    """
    return _explain_phone(value, checked_phone_region(default_region))


def normalize_phone(value: str, default_region: str | None) -> str:
    """Normalize a phone number to E.164 (see `explain_phone`).

    Args:
        value: The phone number in any common national or international format.
        default_region: The ISO 3166-1 alpha-2 region (for example `US`) of numbers written
            without a country code, or None if every number carries one.

    Returns:
        The number as `+` then country code and national number.

    Raises:
        InvalidIdentifierError: If the value is not a valid phone number.
        InputError: If `default_region` is not a region that phone numbers know.
    """
    return explain_phone(value, default_region).value


def explain_maid(value: str) -> Normalized:
    """Normalize a mobile advertising ID (IDFA, AAID), and tell what changed.

    Args:
        value: The ID as a UUID (8-4-4-4-12 hex digits with hyphens) in any case.

    Returns:
        The ID in lowercase, and the changes made.

    Raises:
        InvalidIdentifierError: If the value is not a UUID, or is the all-zero UUID that a
            device sends when tracking is limited.
    """
    changes: list[str] = []
    text = _trim(value, changes)
    lowered = text.lower()
    if lowered != text:
        changes.append(LOWERCASED)
    if _MAID_PATTERN.fullmatch(lowered) is None:
        raise InvalidIdentifierError(
            MALFORMED_MAID, "an advertising ID must be a UUID: 8-4-4-4-12 hex digits"
        )
    if lowered == ALL_ZERO_MAID:
        raise InvalidIdentifierError(ZERO_MAID, "the all-zero advertising ID identifies nobody")
    return Normalized(lowered, tuple(changes))


def normalize_maid(value: str) -> str:
    """Normalize a mobile advertising ID (see `explain_maid`).

    Args:
        value: The ID as a UUID (8-4-4-4-12 hex digits with hyphens) in any case.

    Returns:
        The ID in lowercase.

    Raises:
        InvalidIdentifierError: If the value is not a UUID or is the all-zero UUID.
    """
    return explain_maid(value).value


def explain_declared(value: str) -> Normalized:
    """Normalize a value of a type the collaboration declared: trim only.

    Args:
        value: The identifier as the brand holds it.

    Returns:
        The value without surrounding whitespace, and the changes made.

    Raises:
        InvalidIdentifierError: If nothing but whitespace is left.
    """
    changes: list[str] = []
    return Normalized(_trim(value, changes), tuple(changes))


def normalize_declared(value: str) -> str:
    """Normalize a value of a type the collaboration declared: trim only.

    Args:
        value: The identifier as the brand holds it.

    Returns:
        The value without surrounding whitespace.

    Raises:
        InvalidIdentifierError: If nothing but whitespace is left.
    """
    return explain_declared(value).value


def explainer_for(
    identifier_type: str, *, default_region: str | None, declared_types: Collection[str] = ()
) -> Callable[[str], Normalized]:
    """Return the function that normalizes values of one type and tells what changed.

    Args:
        identifier_type: A built-in type (`email`, `phone`, `maid`) or a declared one.
        default_region: The region of phone numbers written without a country code.
        declared_types: The extra types the collaboration declared.

    Returns:
        A function from a raw value to its `Normalized` form.

    Raises:
        InputError: If the type is neither built in nor declared (UNKNOWN_IDENTIFIER_TYPE),
            or the phone region is unknown (UNKNOWN_REGION).
    """
    if identifier_type == "email":
        return explain_email
    if identifier_type == "phone":
        region = checked_phone_region(default_region)
        return lambda value: _explain_phone(value, region)
    if identifier_type == "maid":
        return explain_maid
    if identifier_type in declared_types:
        return explain_declared
    known = [*BUILTIN_TYPES, *declared_types]
    raise InputError(
        "UNKNOWN_IDENTIFIER_TYPE",
        f"Identifier type {identifier_type!r} is not known; use one of {', '.join(known)}, "
        "or ask the collaboration's admin to declare it.",
        {"identifier_type": identifier_type, "known_types": ",".join(known)},
    )


def normalizer_for(
    identifier_type: str, *, default_region: str | None, declared_types: Collection[str] = ()
) -> Callable[[str], str]:
    """Return the function that normalizes values of one type.

    Args:
        identifier_type: A built-in type (`email`, `phone`, `maid`) or a declared one.
        default_region: The region of phone numbers written without a country code.
        declared_types: The extra types the collaboration declared.

    Returns:
        A function from a raw value to its normalized string; it raises
        `InvalidIdentifierError` for invalid values.

    Raises:
        InputError: If the type is neither built in nor declared (UNKNOWN_IDENTIFIER_TYPE),
            or the phone region is unknown (UNKNOWN_REGION).
    """
    explain = explainer_for(
        identifier_type, default_region=default_region, declared_types=declared_types
    )
    return lambda value: explain(value).value


def _trim(value: str, changes: list[str]) -> str:
    """Strip surrounding whitespace, noting the change, and refuse what is left empty."""
    text = value.strip()
    if not text:
        raise InvalidIdentifierError(EMPTY, "the value is empty")
    if len(text) != len(value):
        changes.append(TRIMMED)
    return text


def _check_email_syntax(text: str) -> None:
    """Refuse an address whose syntax email-validator refuses, naming the kind of fault.

    Its messages are not kept: some quote the offending character of the address.
    """
    import email_validator  # noqa: PLC0415 (only the values the vectorized rule leaves)

    if text[:7].lower() == "mailto:":
        raise InvalidIdentifierError(MAILTO_PREFIX, "the address starts with mailto:")
    if any(character in text for character in '<>"'):
        raise InvalidIdentifierError(DISPLAY_NAME, "the address carries a display name or quotes")
    if any(character.isspace() for character in text):
        raise InvalidIdentifierError(CONTAINS_WHITESPACE, "the address contains whitespace")
    try:
        email_validator.validate_email(
            text, check_deliverability=False, allow_quoted_local=False, allow_domain_literal=False
        )
    except email_validator.EmailNotValidError as error:
        message = str(error).lower()
        if "unsafe characters" in message:
            reason = UNSAFE_CHARACTER
        elif "too long" in message:
            reason = TOO_LONG
        elif "after the @-sign" in message or ".." in text.rpartition("@")[2]:
            reason = INVALID_DOMAIN
        else:
            reason = INVALID_LOCAL_PART
        raise InvalidIdentifierError(reason, "the address is not valid email syntax") from None


def _split_email(address: str) -> tuple[str, int, str]:
    """Split an address into local part, number of `@` signs, and domain."""
    at_signs = address.count("@")
    local, _, domain = address.partition("@")
    return local, at_signs, domain


def _normalize_gmail_local_part(local: str, changes: list[str]) -> str:
    """Drop the `+tag` and the dots that Gmail ignores, noting each change."""
    untagged = local.partition("+")[0]
    if len(untagged) != len(local):
        changes.append(GMAIL_TAG_REMOVED)
    undotted = untagged.replace(".", "")
    if len(undotted) != len(untagged):
        changes.append(GMAIL_DOTS_REMOVED)
    return undotted


def checked_phone_region(default_region: str | None) -> str | None:
    """Check a default phone region and return it in the upper case the library needs.

    Args:
        default_region: An ISO 3166-1 alpha-2 region in any case, or None.

    Returns:
        The region in upper case, or None.

    Raises:
        InputError: If phone numbers know no such region (UNKNOWN_REGION).
    """
    if default_region is None:
        return None
    region = default_region.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise InputError(
            "UNKNOWN_REGION",
            f"Default region {default_region!r} is not a phone region; give an ISO 3166-1 "
            "alpha-2 code such as US, GB or DE.",
            {"default_region": default_region},
        )
    return region


REGION_NAME_LANGUAGES = ("en", "th", "vi")
"""The languages whose country names a region column may use, beside ISO 3166-1 codes."""


def region_of(value: str) -> str | None:
    """The phone region a brand's country cell names, or None if it names none.

    Accepts an ISO 3166-1 alpha-2 code in any case (`TH`, `vn`) or a country name as the
    phone library's own geocoder writes it in English, Thai or Vietnamese (`Thailand`,
    `ประเทศไทย`, `Việt Nam`), in any case.

    Args:
        value: The cell, trimmed or not.

    Returns:
        The region in upper case, or None.
    """
    text = value.strip()
    if text.upper() in phonenumbers.SUPPORTED_REGIONS:
        return text.upper()
    return _region_names().get(text.casefold())


@functools.cache
def _region_names() -> dict[str, str]:
    """Country name (casefolded) to region, from the phone library's geocoder data."""
    from phonenumbers import geocoder  # noqa: PLC0415 (loaded only for country names)

    found: dict[str, set[str]] = {}
    for language in REGION_NAME_LANGUAGES:
        for region in phonenumbers.SUPPORTED_REGIONS:
            example = phonenumbers.example_number(region)
            name = geocoder.country_name_for_number(example, language) if example else ""
            if name:
                found.setdefault(name.casefold(), set()).add(region)
    # A name shared by regions (none today) would be ambiguous: it is left out.
    return {name: next(iter(regions)) for name, regions in found.items() if len(regions) == 1}


def _explain_phone(value: str, region: str | None) -> Normalized:
    """Normalize a phone number with an already checked default region."""
    changes: list[str] = []
    text = _trim(value, changes)
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as error:
        raise InvalidIdentifierError(
            _phone_parse_reason(error, text, region), f"not a phone number: {error}"
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentifierError(INVALID_PHONE, "not a valid number in its country")
    formatted: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if len(formatted) - 1 > _E164_MAX_DIGITS:
        raise InvalidIdentifierError(TOO_LONG, "an E.164 number has at most 15 digits")
    if formatted != text:
        changes.append(PHONE_REFORMATTED)
    return Normalized(formatted, tuple(changes))


def _phone_parse_reason(
    error: phonenumbers.NumberParseException, text: str, region: str | None
) -> str:
    """Map a phone number parse failure to the reason counted in the summary."""
    if error.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
        # Without a region, a number written nationally cannot be read; say so, because the
        # fix (give a default region) is different from that for a wrong country code.
        if region is None and not text.startswith("+"):
            return MISSING_COUNTRY_CODE
        return UNKNOWN_COUNTRY_CODE
    if error.error_type == phonenumbers.NumberParseException.TOO_LONG:
        return TOO_LONG
    return UNPARSEABLE_PHONE
