"""The rules of `partners.preparation.normalize`, applied to a whole Arrow column at once.

Calling Python once per value is too slow for files of tens of millions of rows, so the common
case runs as Arrow compute kernels: ASCII values, and for phones the formats whose outcome can
be decided from the phone library's own metadata (`partners.preparation._phone_plans`). Every
other value goes through the row-by-row functions of `partners.preparation.normalize`, which
stay the definition: the tests check on large random samples that both paths give the same
values, reasons and changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from partners.preparation import normalize
from partners.preparation._arrow import (
    Mask,
    byte_lengths,
    from_mask,
    string_data,
    string_offsets,
    to_mask,
)
from partners.preparation._phone_plans import PhoneFastPath
from partners.preparation.normalize import ASCII_WHITESPACE, InvalidIdentifierError, Normalized

_MAID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_GMAIL_SUFFIX = "@gmail.com"
# ASCII addresses that email-validator accepts for certain (lowercased): a dot-atom local
# part, then host labels without leading, trailing or doubled hyphens (so no Punycode), the
# last ending with a letter. Anything else goes to the row-by-row rule, which asks it.
_EMAIL_ATEXT = "a-z0-9!#$%&'*+/=?^_`{|}~-"
_PLAIN_EMAIL = (
    rf"^[{_EMAIL_ATEXT}]+(\.[{_EMAIL_ATEXT}]+)*@([a-z0-9]+(-[a-z0-9]+)*\.)+"
    r"([a-z0-9]+-)*[a-z0-9]*[a-z]$"
)
# email-validator refuses these top-level domains (its SPECIAL_USE_DOMAIN_NAMES; a test
# keeps the two lists equal).
_SPECIAL_USE_DOMAINS = (".arpa", ".invalid", ".local", ".localhost", ".onion", ".test")
_SPECIAL_USE_LAST_BYTES = np.frombuffer(
    "".join(sorted({name[-1] for name in _SPECIAL_USE_DOMAINS})).encode(), dtype=np.uint8
)
_MAX_LABEL_LENGTH = 63
_LONG_LABEL = "[^.@]{64}"
_MAX_EMAIL_LENGTH = 254


@dataclass(frozen=True)
class NormalizedColumn:
    """One column of identifiers, normalized, with what normalization found.

    Attributes:
        values: The normalized value of each cell; null where the cell was empty or invalid.
        values_read: Cells that were not empty (cells of only whitespace count as empty).
        invalid: Values found invalid, by reason.
        changes: Valid values changed by normalization, by change.
    """

    values: pa.StringArray
    values_read: int
    invalid: Counter[str]
    changes: Counter[str]


ColumnNormalizer = Callable[["pa.Array[Any]"], NormalizedColumn]
"""Normalizes one column of strings."""


@dataclass(frozen=True)
class _FastResult:
    """What a vectorized rule decided for the cells it was given.

    Attributes:
        values: The normalized values of the decided, valid cells; anything elsewhere.
        valid: The decided cells whose value is valid.
        undecided: The cells that must go through the row-by-row rule instead.
        invalid: Decided invalid cells, by reason.
        changes: Decided valid cells changed by normalization, by change.
        read: The decided cells that were not empty.
    """

    values: pa.StringArray
    valid: Mask
    undecided: Mask
    invalid: Counter[str]
    changes: Counter[str]
    read: int


_FastRule = Callable[["pa.StringArray", Mask], _FastResult]


def column_normalizer_for(
    identifier_type: str, *, default_region: str | None, declared_types: Collection[str] = ()
) -> ColumnNormalizer:
    """Return the function that normalizes whole columns of one identifier type.

    Args:
        identifier_type: A built-in type (`email`, `phone`, `maid`) or a declared one.
        default_region: The region of phone numbers written without a country code.
        declared_types: The extra types the collaboration declared.

    Returns:
        A function from a column of strings to its `NormalizedColumn`. It gives exactly what
        `partners.preparation.normalize.explainer_for` gives for each cell.

    Raises:
        InputError: If the type is neither built in nor declared (UNKNOWN_IDENTIFIER_TYPE),
            or the phone region is unknown (UNKNOWN_REGION).
    """
    explain = normalize.explainer_for(
        identifier_type, default_region=default_region, declared_types=declared_types
    )
    fast: _FastRule
    if identifier_type == "email":
        fast = _email_rule
    elif identifier_type == "phone":
        fast = _phone_rule(PhoneFastPath(normalize.checked_phone_region(default_region)))
    elif identifier_type == "maid":
        fast = _maid_rule
    else:
        fast = _declared_rule
    return lambda cells: _normalize_column(cells, fast, explain)


def _normalize_column(
    cells: pa.Array[Any] | pa.ChunkedArray[Any],
    fast: _FastRule,
    explain: Callable[[str], Normalized],
) -> NormalizedColumn:
    """Run the vectorized rule on the ASCII cells and the row-by-row rule on the rest."""
    if isinstance(cells, pa.ChunkedArray):
        cells = cells.combine_chunks()
    strings = cast(pa.StringArray, cells if cells.type == pa.string() else cells.cast(pa.string()))
    present = byte_lengths(strings) > 0
    eligible = present & _ascii(strings)
    result = fast(strings, eligible)
    slow = (present & ~eligible) | (eligible & result.undecided)
    invalid, changes = result.invalid, result.changes
    values_read = result.read
    slow_values: list[str | None] = []
    if slow.any():
        for cell in strings.filter(from_mask(slow)).to_pylist():
            try:
                value, made = explain(cast(str, cell))
            except InvalidIdentifierError as error:
                slow_values.append(None)
                if error.reason != normalize.EMPTY:
                    values_read += 1
                    invalid[error.reason] += 1
                continue
            slow_values.append(value)
            values_read += 1
            changes.update(made)
    decided_valid = eligible & ~result.undecided & result.valid
    values = pc.if_else(from_mask(decided_valid), result.values, pa.scalar(None, pa.string()))
    if slow_values:
        values = _scatter(slow, pa.array(slow_values, pa.string()), values)
    return NormalizedColumn(values, values_read, invalid, changes)


def _email_rule(cells: pa.StringArray, eligible: Mask) -> _FastResult:
    """Normalize ASCII email addresses as `normalize.explain_email` does."""
    text, read, trimmed = _trim(cells, eligible)
    lowered = pc.ascii_lower(text)
    lengths = byte_lengths(lowered)
    # A pattern proves the syntax of the usual address (one '@', both sides non-empty): the
    # '@' rules are then checked only on the few cells it leaves.
    proven = (
        read
        & to_mask(pc.match_substring_regex(lowered, _PLAIN_EMAIL))
        & (lengths <= _MAX_EMAIL_LENGTH)
    )
    proven &= ~_special_use(lowered, proven)
    # Only an address longer than a label's limit can hold a label too long.
    long = proven & (lengths > _MAX_LABEL_LENGTH)
    if long.any():
        proven &= ~(long & to_mask(pc.match_substring_regex(lowered, _LONG_LABEL)))
    missing_at, multiple_at, empty_domain, empty_local, undecided = (
        np.zeros(len(cells), dtype=bool) for _ in range(5)
    )
    rest = read & ~proven
    if rest.any():
        others = lowered.filter(from_mask(rest))
        at_signs = byte_lengths(others) - byte_lengths(pc.replace_substring(others, "@", ""))
        one_at = at_signs == 1
        ends = to_mask(pc.ends_with(others, "@"))
        starts = to_mask(pc.starts_with(others, "@"))
        missing_at[rest] = at_signs == 0
        multiple_at[rest] = at_signs > 1
        empty_domain[rest] = one_at & ends
        empty_local[rest] = one_at & ~ends & starts
        # One '@' and both sides: the syntax is left to email-validator, row by row.
        undecided[rest] = one_at & ~ends & ~starts
    gmail = proven & to_mask(pc.ends_with(lowered, _GMAIL_SUFFIX))
    gmail_empty = np.zeros(len(cells), dtype=bool)
    values = lowered
    tag_removed = np.zeros(len(cells), dtype=bool)
    dots_removed = np.zeros(len(cells), dtype=bool)
    if gmail.any():
        local = pc.utf8_slice_codeunits(lowered.filter(from_mask(gmail)), 0, -len(_GMAIL_SUFFIX))
        tagged = to_mask(pc.match_substring(local, "+"))
        untagged = local
        if tagged.any():
            cut = pc.replace_substring_regex(
                local.filter(from_mask(tagged)), r"(?s)\+.*", "", max_replacements=1
            )
            untagged = _scatter(tagged, cut, local)
        dotted = to_mask(pc.match_substring(untagged, "."))
        undotted = pc.replace_substring(untagged, ".", "") if dotted.any() else untagged
        gmail_values = cast(
            pa.StringArray,
            pc.binary_join_element_wise(undotted, _GMAIL_SUFFIX, ""),  # type: ignore[call-overload]
        )
        values = _scatter(gmail, gmail_values, values)
        tag_removed[gmail] = tagged
        dots_removed[gmail] = dotted
        gmail_empty[gmail] = byte_lengths(undotted) == 0
    # A Gmail address left without a local part is refused only once its syntax is known.
    empty_local |= proven & gmail_empty
    valid = proven & ~gmail_empty
    invalid = Counter(
        {
            normalize.MISSING_AT_SIGN: _count(missing_at),
            normalize.MULTIPLE_AT_SIGNS: _count(multiple_at),
            normalize.EMPTY_DOMAIN: _count(empty_domain),
            normalize.EMPTY_LOCAL_PART: _count(empty_local),
        }
    )
    changes = Counter(
        {
            normalize.TRIMMED: _count(valid & trimmed),
            normalize.LOWERCASED: _count(valid & to_mask(pc.not_equal(lowered, text))),
            normalize.GMAIL_TAG_REMOVED: _count(valid & tag_removed),
            normalize.GMAIL_DOTS_REMOVED: _count(valid & dots_removed),
        }
    )
    return _FastResult(values, valid, undecided, +invalid, +changes, _count(read & ~undecided))


def _special_use(lowered: pa.StringArray, rows: Mask) -> Mask:
    """Tell which of the rows end in a special-use domain, which email-validator refuses.

    Only addresses whose last letter ends one of those names are looked at.
    """
    found = np.zeros(len(lowered), dtype=bool)
    data = string_data(lowered)
    if not rows.any() or not len(data):
        return found
    offsets = string_offsets(lowered)
    ends = offsets[1:]
    last = data[np.maximum(ends - 1, 0)]
    maybe = rows & (ends > offsets[:-1]) & np.isin(last, _SPECIAL_USE_LAST_BYTES)
    if maybe.any():
        subset = lowered.filter(from_mask(maybe))
        hit = np.zeros(len(subset), dtype=bool)
        for suffix in _SPECIAL_USE_DOMAINS:
            hit |= to_mask(pc.ends_with(subset, suffix))
        found[maybe] = hit
    return found


def _maid_rule(cells: pa.StringArray, eligible: Mask) -> _FastResult:
    """Normalize ASCII advertising IDs as `normalize.explain_maid` does."""
    text, read, trimmed = _trim(cells, eligible)
    lowered = pc.ascii_lower(text)
    well_formed = read & to_mask(pc.match_substring_regex(lowered, _MAID_PATTERN))
    zero = well_formed & to_mask(pc.equal(lowered, pa.scalar(normalize.ALL_ZERO_MAID)))
    valid = well_formed & ~zero
    invalid = Counter(
        {
            normalize.MALFORMED_MAID: _count(read & ~well_formed),
            normalize.ZERO_MAID: _count(zero),
        }
    )
    changes = Counter(
        {
            normalize.TRIMMED: _count(valid & trimmed),
            normalize.LOWERCASED: _count(valid & to_mask(pc.not_equal(lowered, text))),
        }
    )
    return _FastResult(lowered, valid, _none(len(cells)), +invalid, +changes, _count(read))


def _declared_rule(cells: pa.StringArray, eligible: Mask) -> _FastResult:
    """Normalize ASCII values of a declared type as `normalize.explain_declared` does: trim."""
    text, read, trimmed = _trim(cells, eligible)
    changes = Counter({normalize.TRIMMED: _count(read & trimmed)})
    return _FastResult(text, read, _none(len(cells)), Counter(), +changes, _count(read))


def _phone_rule(fast_path: PhoneFastPath) -> _FastRule:
    """Normalize the phone numbers whose outcome the metadata decides; leave the rest."""

    def rule(cells: pa.StringArray, eligible: Mask) -> _FastResult:
        text, read, trimmed = _trim(cells, eligible)
        outcome = fast_path.normalize(text, from_mask(read))
        valid = to_mask(outcome.valid)
        proven_invalid = to_mask(outcome.invalid)
        too_long = to_mask(outcome.too_long)
        reformatted = to_mask(pc.not_equal(outcome.e164, text))
        invalid = Counter(
            {
                normalize.INVALID_PHONE: _count(proven_invalid),
                normalize.TOO_LONG: _count(too_long),
            }
        )
        changes = Counter(
            {
                normalize.TRIMMED: _count(valid & trimmed),
                normalize.PHONE_REFORMATTED: _count(valid & reformatted),
            }
        )
        # What the metadata does not decide goes to the phone library, which names the reason.
        decided = valid | proven_invalid | too_long
        undecided = read & ~decided
        return _FastResult(outcome.e164, valid, undecided, +invalid, +changes, _count(decided))

    return rule


def _trim(cells: pa.StringArray, eligible: Mask) -> tuple[pa.StringArray, Mask, Mask]:
    """Trim ASCII whitespace; return the text, the cells left non-empty, and those trimmed."""
    text = pc.ascii_trim(cells, characters=ASCII_WHITESPACE)
    text_length = byte_lengths(text)
    return text, eligible & (text_length > 0), text_length != byte_lengths(cells)


def _ascii(strings: pa.StringArray) -> Mask:
    """Tell which strings are ASCII; at a glance when all of them are, as is usual."""
    offsets = string_offsets(strings)
    if (string_data(strings)[offsets[0] : offsets[-1]] < 0x80).all():
        return np.ones(len(strings), dtype=bool)
    return to_mask(pc.string_is_ascii(strings))


def _scatter(rows: Mask, values: pa.StringArray, base: pa.StringArray) -> pa.StringArray:
    """Put values computed for the selected rows in place of those rows of `base`."""
    positions = pa.array(np.cumsum(rows) - 1, mask=~rows)
    spread = pc.take(values, positions)
    return cast(pa.StringArray, pc.if_else(from_mask(rows), spread, base))


def _none(length: int) -> Mask:
    """Return a mask of `length` False flags."""
    return np.zeros(length, dtype=bool)


def _count(mask: Mask) -> int:
    """Count the True flags."""
    return int(np.count_nonzero(mask))
