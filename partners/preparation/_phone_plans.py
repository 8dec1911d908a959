"""Phone numbers whose E.164 form the phone library's metadata decides, a column at a time.

`phonenumbers.parse` followed by `is_valid_number` costs tens of microseconds per number. For
numbers written with digits and the usual separators (spaces, `-`, `.`, parentheses), with or
without a leading `+`, this module follows the same steps on whole Arrow columns: strip the
separators, find the country code, strip the national prefix, check the possible lengths, and
match the national number against the patterns of the region's number types, all taken from
the library's own metadata (its regular expressions run in Arrow's RE2, which accepts the same
language for these patterns).

It only ever *proves a number valid*. A number it cannot decide with certainty (an international
dialling prefix, a national prefix that rewrites digits, a country code shared by regions whose
first region does not validate it, anything unusual) is left undecided, and the caller sends it
through the phone library row by row. So the result is always exactly what
`partners.preparation.normalize.explain_phone` gives; the tests check that on large random
samples.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import PhoneMetadata

from partners.preparation._arrow import byte_lengths, from_mask, to_mask

# Digits and the separators that need no interpretation, with at most one leading `+`.
_SIMPLE_SHAPE = r"^\+?[0-9 ().\-]+$"
_MAX_TEXT_LENGTH = 40
# The limits `phonenumbers.parse` enforces (its _MIN_LENGTH_FOR_NSN, _MAX_LENGTH_FOR_NSN).
_MIN_NSN_LENGTH = 2
_MAX_NSN_LENGTH = 17
_MIN_DIGITS = 3  # fewer digits with separators is not a viable number for the library
_MAX_E164_DIGITS = 15
# A country code with fewer numbers in a batch is left to the library: a plan per code costs
# a few dozen kernel calls, worth it only for enough rows.
_MIN_ROWS_PER_COUNTRY = 16
_NON_GEOGRAPHIC = "001"

# The results of phonenumbers' _test_number_length that matter here.
_IS_POSSIBLE, _TOO_SHORT, _TOO_LONG, _LOCAL_ONLY, _INVALID_LENGTH = range(5)
_LENGTH_TABLE_SIZE = 64


class PhoneFastPath:
    """Normalizes the phone numbers of a column that the metadata proves valid.

    Args:
        default_region: The region of numbers written without a country code (upper case,
            already checked), or None.
    """

    def __init__(self, default_region: str | None) -> None:
        self._default_region = default_region

    def normalize(self, text: pa.StringArray, candidates: pa.BooleanArray) -> PhoneOutcome:
        """Normalize the candidate cells whose outcome the metadata decides.

        Args:
            text: Trimmed ASCII phone numbers.
            candidates: The cells to consider.

        Returns:
            What was decided about each cell; cells neither valid nor invalid are undecided.
        """
        shaped = _and(
            candidates,
            _filled(pc.match_substring_regex(text, _SIMPLE_SHAPE)),
            from_mask(byte_lengths(text) <= _MAX_TEXT_LENGTH),
        )
        outcome = PhoneOutcome.undecided(text)
        if not _any(shaped):
            return outcome
        subset = text.filter(shaped)
        digits = pc.replace_substring_regex(subset, "[^0-9]", "")
        enough = from_mask(byte_lengths(digits) >= _MIN_DIGITS)
        plus = _filled(pc.starts_with(subset, "+"))
        found = PhoneOutcome.undecided(subset)
        national = _and(enough, pc.invert(plus))
        if self._default_region is not None and _any(national):
            plan = _national_plan(self._default_region)
            if plan is not None:
                found = found.place(national, plan.normalize(digits.filter(national)))
        international = _and(enough, plus, pc.invert(_filled(pc.starts_with(digits, "0"))))
        if _any(international):
            found = found.place(international, _international(digits.filter(international)))
        return outcome.place(shaped, found)


def _international(digits: pa.StringArray) -> PhoneOutcome:
    """Normalize numbers written after a `+`: country code first, as the library reads it."""
    codes = _country_codes(digits)
    outcome = PhoneOutcome.undecided(digits)
    for entry in pc.value_counts(codes.drop_null()):
        code, count = entry["values"].as_py(), entry["counts"].as_py()
        plan = _country_plan(int(code))
        if count < _MIN_ROWS_PER_COUNTRY or plan is None:
            continue
        rows = _filled(pc.equal(codes, code))
        rest = pc.utf8_slice_codeunits(digits.filter(rows), len(code))
        outcome = outcome.place(rows, plan.normalize_national_number(rest))
    return outcome


def _country_codes(digits: pa.StringArray) -> pa.StringArray:
    """Read the country code as the library does: the shortest prefix that is a known code."""
    known = pa.array([str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE])
    codes = pa.nulls(len(digits), pa.string())
    for length in (3, 2, 1):  # the shortest wins, so it is applied last
        prefix = pc.utf8_slice_codeunits(digits, 0, length)
        codes = pc.if_else(_filled(pc.is_in(prefix, value_set=known)), prefix, codes)
    return codes


@dataclass(frozen=True)
class _Desc:
    """A number description of the metadata: its possible lengths and its pattern."""

    pattern: str
    lengths: frozenset[int]

    def admits(self, length: int) -> bool:
        """Tell whether numbers of this length may match (no lengths: any length)."""
        return not self.lengths or length in self.lengths


@dataclass(frozen=True)
class _Region:
    """What parsing and validating numbers of one region need from its metadata."""

    code: str
    country_code: int
    general: _Desc
    types: tuple[_Desc, ...]
    length_results: np.ndarray[Any, np.dtype[np.int8]]
    national_prefix: str | None  # an RE2 pattern that extracts the prefix and the rest
    prefix_rewrites: bool  # a transform rule rewrites the number when its last group matched
    international_prefix: str | None
    leading_digits: str | None

    def strip_national_prefix(
        self, number: pa.StringArray
    ) -> tuple[pa.StringArray, pa.BooleanArray]:
        """Follow phonenumbers' _maybe_strip_national_prefix_carrier_code.

        Returns:
            The number without its national prefix where the library strips it, and the rows
            decided (a prefix that the transform rule would rewrite is not).
        """
        decided = _true(len(number))
        if self.national_prefix is None:
            return number, decided
        parts = pc.extract_regex(number, self.national_prefix)
        matched = _filled(pc.is_valid(parts))
        if not _any(matched):
            return number, decided
        if self.prefix_rewrites:
            return number, pc.invert(matched)
        stripped = pc.if_else(matched, pc.struct_field(parts, "rest"), number)
        viable_before = self.general_match(number)
        viable_after = self.general_match(stripped)
        keep = _and(matched, pc.invert(_and(viable_before, pc.invert(viable_after))))
        return pc.if_else(keep, stripped, number), decided

    def national_significant_number(
        self, number: pa.StringArray
    ) -> tuple[pa.StringArray, pa.BooleanArray]:
        """Follow the end of `phonenumbers.parse`: strip the prefix if the length allows it.

        Returns:
            The national significant number and the rows decided.
        """
        stripped, decided = self.strip_national_prefix(number)
        result = self.length_result(stripped)
        keep = pa.array((result == _IS_POSSIBLE) | (result == _TOO_LONG))
        nsn = pc.if_else(keep, stripped, number)
        decided = _and(
            decided,
            from_mask(byte_lengths(number) >= _MIN_NSN_LENGTH),
            from_mask(byte_lengths(nsn) <= _MAX_NSN_LENGTH),
        )
        return nsn, decided

    def general_match(self, number: pa.StringArray) -> pa.BooleanArray:
        """Match the general pattern (not its lengths), as _match_national_number does."""
        return _fullmatch(number, self.general.pattern)

    def length_result(self, number: pa.StringArray) -> np.ndarray[Any, np.dtype[np.int8]]:
        """Return phonenumbers' _test_number_length result of each number."""
        lengths = np.minimum(byte_lengths(number), _LENGTH_TABLE_SIZE - 1)
        results: np.ndarray[Any, np.dtype[np.int8]] = self.length_results[lengths]
        return results

    def typed(self, nsn: pa.StringArray) -> pa.BooleanArray:
        """Tell which numbers have a type here: phonenumbers' _number_type_helper is not UNKNOWN.

        Args:
            nsn: National significant numbers of this region's country code.
        """
        valid = _and(self._lengths_admitted(nsn, (self.general,)), self.general_match(nsn))
        lengths = byte_lengths(nsn)
        typed = _false(len(nsn))
        for length in np.unique(lengths[to_mask(valid)]).tolist():
            patterns = [desc.pattern for desc in self.types if desc.admits(length)]
            rows = _and(valid, pa.array(lengths == length))
            if patterns and _any(rows):
                combined = "|".join(f"(?:{pattern})" for pattern in patterns)
                matched = _fullmatch(nsn.filter(rows), combined)
                typed = _filled(pc.replace_with_mask(typed, rows, matched))
        return _and(valid, typed)

    def _lengths_admitted(self, nsn: pa.StringArray, descs: Sequence[_Desc]) -> pa.BooleanArray:
        """Tell which numbers have a length every description admits."""
        lengths = byte_lengths(nsn)
        admitted = np.ones(len(nsn), dtype=bool)
        for desc in descs:
            if desc.lengths:
                admitted &= np.isin(lengths, list(desc.lengths))
        return pa.array(admitted)


@dataclass(frozen=True)
class PhoneOutcome:
    """What the metadata decided about each number of a column.

    Attributes:
        e164: The number in E.164 where it is valid; anything elsewhere.
        valid: Numbers proven valid.
        invalid: Numbers proven invalid (`invalid_phone`).
        too_long: Valid numbers of more than 15 digits in E.164 (`too_long`).
    """

    e164: pa.StringArray
    valid: pa.BooleanArray
    invalid: pa.BooleanArray
    too_long: pa.BooleanArray

    @classmethod
    def undecided(cls, e164: pa.StringArray) -> PhoneOutcome:
        """Return an outcome that decides nothing about `e164`."""
        nothing = _false(len(e164))
        return cls(e164, nothing, nothing, nothing)

    def place(self, rows: pa.BooleanArray, other: PhoneOutcome) -> PhoneOutcome:
        """Return this outcome with `other`, computed for the selected rows, put in place."""
        return PhoneOutcome(
            pc.replace_with_mask(self.e164, rows, other.e164.cast(pa.string())),
            _filled(pc.replace_with_mask(self.valid, rows, other.valid)),
            _filled(pc.replace_with_mask(self.invalid, rows, other.invalid)),
            _filled(pc.replace_with_mask(self.too_long, rows, other.too_long)),
        )

    def only(self, rows: pa.BooleanArray) -> PhoneOutcome:
        """Return this outcome deciding only the selected rows."""
        return PhoneOutcome(
            self.e164,
            _and(self.valid, rows),
            _and(self.invalid, rows),
            _and(self.too_long, rows),
        )


@dataclass(frozen=True)
class _CountryPlan:
    """Normalizes national numbers of one country code: prefix, length, validity."""

    country_code: int
    parsing: _Region  # the metadata `phonenumbers.parse` strips the national prefix with
    regions: tuple[_Region | None, ...]  # the regions of the code, in the library's order

    def normalize_national_number(self, number: pa.StringArray) -> PhoneOutcome:
        """Normalize the digits that follow the country code."""
        nsn, decided = self.parsing.national_significant_number(number)
        return self.finish(nsn, decided)

    def finish(self, nsn: pa.StringArray, decided: pa.BooleanArray) -> PhoneOutcome:
        """Validate national significant numbers and write them in E.164."""
        valid, resolved = self._validity(nsn, decided)
        decided = _and(decided, resolved)
        fits = from_mask(byte_lengths(nsn) <= _MAX_E164_DIGITS - len(str(self.country_code)))
        return PhoneOutcome(
            _prefixed(f"+{self.country_code}", nsn),
            valid=_and(decided, valid, fits),
            invalid=_and(decided, pc.invert(valid)),
            too_long=_and(decided, valid, pc.invert(fits)),
        )

    def _validity(
        self, nsn: pa.StringArray, rows: pa.BooleanArray
    ) -> tuple[pa.BooleanArray, pa.BooleanArray]:
        """Follow `phonenumbers.is_valid_number` and its choice of region.

        With one region, that region decides. With several, the library tries them in order
        and settles on the first whose leading digits match (if it has leading digits) or
        that gives the number a type (if not); no such region means the number is invalid.

        Returns:
            Which numbers are valid, and which the metadata could resolve.
        """
        if len(self.regions) == 1 and self.regions[0] is not None:
            return self.regions[0].typed(nsn), _true(len(nsn))
        valid = _false(len(nsn))
        remaining = rows
        for region in self.regions:
            if not _any(remaining):
                break
            if region is None:  # RE2 cannot run its patterns: leave the rest to the library
                return valid, pc.invert(remaining)
            subset = nsn.filter(remaining)
            typed = region.typed(subset)
            if region.leading_digits is not None:
                chosen = _filled(pc.match_substring_regex(subset, region.leading_digits))
            else:
                chosen = typed
            valid = _filled(pc.replace_with_mask(valid, remaining, _and(chosen, typed)))
            remaining = _filled(pc.replace_with_mask(remaining, remaining, pc.invert(chosen)))
        return valid, _true(len(nsn))


@dataclass(frozen=True)
class _NationalPlan:
    """Normalizes numbers written without `+` in the default region."""

    region: _Region
    country: _CountryPlan  # how numbers read with the region's own country code are finished
    main: _CountryPlan  # the same after the library found the country code in the digits

    def normalize(self, digits: pa.StringArray) -> PhoneOutcome:
        """Follow `phonenumbers.parse` for national numbers in the default region."""
        region = self.region
        decided = _true(len(digits))
        if region.international_prefix is not None:
            dialled_abroad = _filled(pc.match_substring_regex(digits, region.international_prefix))
            decided = pc.invert(dialled_abroad)
        # The library reads a leading country code of the region itself (1 415 555 2671 in
        # the US) when the number is not viable with it and is viable without it, or is too
        # long with it: phonenumbers' _maybe_extract_country_code.
        code = str(region.country_code)
        with_code = _filled(pc.starts_with(digits, code))
        takes_code = _false(len(digits))
        after_code = digits
        if _any(with_code):
            after_code, stripped_decided = region.strip_national_prefix(
                pc.utf8_slice_codeunits(digits, len(code))
            )
            # Whether the code is taken depends on the stripped number: undecided with it.
            decided = _and(decided, _or(pc.invert(with_code), stripped_decided))
            better = _and(pc.invert(region.general_match(digits)), region.general_match(after_code))
            too_long = pa.array(region.length_result(digits) == _TOO_LONG)
            takes_code = _and(with_code, _or(better, too_long))
        nsn, nsn_decided = region.national_significant_number(digits)
        outcome = self.country.finish(nsn, _and(decided, nsn_decided, pc.invert(takes_code)))
        if _any(takes_code):
            coded = self.main.normalize_national_number(after_code.filter(takes_code))
            outcome = outcome.place(takes_code, coded.only(decided.filter(takes_code)))
        return outcome


@functools.cache
def _national_plan(region_code: str) -> _NationalPlan | None:
    """Return the plan of numbers written without a country code in a region, if any."""
    region = _region(region_code)
    if region is None:
        return None
    main = _country_plan(region.country_code)
    if main is None:
        return None
    country = _CountryPlan(region.country_code, region, main.regions)
    return _NationalPlan(region, country, main)


@functools.cache
def _country_plan(country_code: int) -> _CountryPlan | None:
    """Return the plan of a country code, or None if its numbers are left to the library."""
    region_codes = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    if not region_codes or _NON_GEOGRAPHIC in region_codes:
        return None
    regions = tuple(_region(code) for code in region_codes)
    main = regions[0]
    if main is None or main.country_code != country_code:
        return None
    return _CountryPlan(country_code, main, regions)


@functools.cache
def _region(region_code: str) -> _Region | None:
    """Read what the plans need from a region's metadata; None if RE2 cannot run it."""
    metadata = PhoneMetadata.metadata_for_region(region_code, None)
    if metadata is None or metadata.general_desc is None or metadata.country_code is None:
        return None
    general = _desc(metadata.general_desc)
    if general is None:
        return None
    type_descs = [
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
        metadata.fixed_line,
    ]
    # With the same pattern for both, the library never tries the mobile description.
    if not metadata.same_mobile_and_fixed_line_pattern:
        type_descs.append(metadata.mobile)
    types = tuple(desc for desc in map(_desc, type_descs) if desc is not None)
    national_prefix = metadata.national_prefix_for_parsing or None
    region = _Region(
        code=region_code,
        country_code=metadata.country_code,
        general=general,
        types=types,
        length_results=_length_results(metadata.general_desc),
        national_prefix=(
            rf"^(?P<prefix>{_non_capturing(national_prefix)})(?P<rest>.*)$"
            if national_prefix
            else None
        ),
        prefix_rewrites=bool(metadata.national_prefix_transform_rule),
        international_prefix=(
            f"^(?:{metadata.international_prefix})" if metadata.international_prefix else None
        ),
        leading_digits=f"^(?:{metadata.leading_digits})" if metadata.leading_digits else None,
    )
    return region if _runs_in_re2(region) else None


def _desc(desc: Any) -> _Desc | None:
    """Read a number description; None where the library would never match it."""
    if desc is None or not desc.national_number_pattern:
        return None
    return _Desc(desc.national_number_pattern, frozenset(desc.possible_length))


def _length_results(general: Any) -> np.ndarray[Any, np.dtype[np.int8]]:
    """Tabulate phonenumbers' _test_number_length for the general description by length."""
    possible = list(general.possible_length)
    local_only = set(general.possible_length_local_only)
    results = np.empty(_LENGTH_TABLE_SIZE, dtype=np.int8)
    for length in range(_LENGTH_TABLE_SIZE):
        if length in local_only:
            results[length] = _LOCAL_ONLY
        elif possible[0] == length:
            results[length] = _IS_POSSIBLE
        elif possible[0] > length:
            results[length] = _TOO_SHORT
        elif possible[-1] < length:
            results[length] = _TOO_LONG
        elif length in possible[1:]:
            results[length] = _IS_POSSIBLE
        else:
            results[length] = _INVALID_LENGTH
    return results


def _non_capturing(pattern: str) -> str:
    """Make every group non-capturing: Arrow's extract_regex wants only named groups."""
    return re.sub(r"(?<!\\)\((?!\?)", "(?:", pattern)


def _runs_in_re2(region: _Region) -> bool:
    """Check that RE2 compiles every pattern of a region, so that none fails mid-file."""
    probe = pa.array(["0"], pa.string())
    try:
        region.strip_national_prefix(probe)
        region.typed(probe)
        if region.leading_digits is not None:
            pc.match_substring_regex(probe, region.leading_digits)
        for desc in region.types:
            _fullmatch(probe, desc.pattern)
        if region.international_prefix is not None:
            pc.match_substring_regex(probe, region.international_prefix)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _fullmatch(values: pa.StringArray, pattern: str) -> pa.BooleanArray:
    """Match whole values, as Python's `re.fullmatch` does."""
    return _filled(pc.match_substring_regex(values, f"^(?:{pattern})$"))


def _prefixed(prefix: str, values: pa.StringArray) -> pa.StringArray:
    """Put the same prefix before every value."""
    joined = pc.binary_join_element_wise(prefix, values, "")  # type: ignore[call-overload]
    return cast(pa.StringArray, joined)


def _and(*masks: pa.BooleanArray) -> pa.BooleanArray:
    """Combine flags with and."""
    combined = masks[0]
    for mask in masks[1:]:
        combined = pc.and_(combined, mask)
    return combined


def _or(first: pa.BooleanArray, second: pa.BooleanArray) -> pa.BooleanArray:
    """Combine flags with or."""
    return pc.or_(first, second)


def _any(mask: pa.BooleanArray) -> bool:
    """Tell whether any flag is set."""
    return bool(pc.any(mask).as_py())


def _filled(mask: Any) -> pa.BooleanArray:
    """Read a null flag as False."""
    return from_mask(to_mask(mask))


def _false(length: int) -> pa.BooleanArray:
    """Return `length` False flags."""
    return pa.array(np.zeros(length, dtype=bool))


def _true(length: int) -> pa.BooleanArray:
    """Return `length` True flags."""
    return pa.array(np.ones(length, dtype=bool))
