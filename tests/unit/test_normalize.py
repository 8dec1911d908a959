"""Normalization of identifiers (SPEC section 2): the rules every partner must apply alike."""

from __future__ import annotations

import base64
import hashlib
import random
import string
from collections import Counter
from uuid import UUID

import phonenumbers
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partners.errors import InputError
from partners.preparation._columns import column_normalizer_for
from partners.preparation.normalize import (
    BUILTIN_TYPES,
    InvalidIdentifierError,
    Normalized,
    explain_declared,
    explain_email,
    explain_maid,
    explain_phone,
    explainer_for,
    normalize_declared,
    normalize_email,
    normalize_maid,
    normalize_phone,
    normalizer_for,
    region_of,
)

# The examples UID2 publishes in "Normalization and Encoding", with the SHA-256 of each
# normalized address: a partner holding UID2 hashes must get the same bytes from us.
UID2_EMAIL_EXAMPLES = {
    "myemail@example.com": (
        ["MyEmail@example.com", "MYEMAIL@example.com"],
        "16c18d336f0b250f0e2d907452ceb9658a74ecdae8bc94864c23122a72cc27a5",
    ),
    "my.email@example.com": (
        ["My.Email@example.com"],
        "e22b53bc6f871274f3a62ab37a3caed7214fc14d676215a96a242fcfada1c81f",
    ),
    "janesaoirse@example.com": (
        ["JANESAOIRSE@example.com", "JaneSaoirse@example.com"],
        "d6670e7a92007f1b5ff785f1fc81e53aa6d3d7bd06bdf5c473cdc7286c284b6d",
    ),
    "jane.saoirse@example.com": (
        ["jane.saoirse@example.com", "Jane.Saoirse@example.com"],
        "b196432c7b989a2ca91c83799957c515da53e6c13abf20b78fea94f117e90bf8",
    ),
    "janesaoirse+work@example.com": (
        ["JaneSaoirse+Work@example.com"],
        "28aaee4815230cd3b4ebd88c515226550666e91ac019929e3adac3f66c288180",
    ),
    "janesaoirse@gmail.com": (
        [
            "JANE.SAOIRSE@gmail.com",
            "Jane.Saoirse@gmail.com",
            "JaneSaoirse+Work@gmail.com",
            "JANESaoirse@gmail.com",
        ],
        "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
    ),
    "user@example.com": (
        ["user@example.com"],
        "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514",
    ),
}


@pytest.mark.parametrize(
    ("raw", "normalized", "sha256_hex"),
    [
        (raw, normalized, sha256_hex)
        for normalized, (raws, sha256_hex) in UID2_EMAIL_EXAMPLES.items()
        for raw in raws
    ],
)
def test_email_matches_uid2_published_examples(raw: str, normalized: str, sha256_hex: str) -> None:
    assert normalize_email(raw) == normalized
    assert hashlib.sha256(normalized.encode()).hexdigest() == sha256_hex


# The Base64 form of the same hashes, as UID2 publishes them beside the hex ones; EUID
# publishes the same rules, and the janesaoirse@gmail.com example with the same value.
UID2_EMAIL_BASE64 = {
    "myemail@example.com": "FsGNM28LJQ8OLZB0Us65ZYp07NrovJSGTCMSKnLMJ6U=",
    "my.email@example.com": "4itTvG+HEnTzpiqzejyu1yFPwU1nYhWpaiQvz62hyB8=",
    "janesaoirse@example.com": "1mcOepIAfxtf94Xx/IHlOqbT170GvfXEc83HKGwoS20=",
    "jane.saoirse@example.com": "sZZDLHuYmiypHIN5mVfFFdpT5sE6vyC3j+qU8RfpC/g=",
    "janesaoirse+work@example.com": "KKruSBUjDNO069iMUVImVQZm6RrAGZKeOtrD9mwogYA=",
    "janesaoirse@gmail.com": "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
    "user@example.com": "tMmiiTI7IaAcPpQPFQ65uMVCWH8av9jw4cwf/F5HVRQ=",
}


@pytest.mark.parametrize(("normalized", "base64_hash"), UID2_EMAIL_BASE64.items())
def test_email_matches_uid2_published_base64_hashes(normalized: str, base64_hash: str) -> None:
    digest = hashlib.sha256(normalized.encode()).digest()
    assert base64.b64encode(digest).decode() == base64_hash
    assert digest.hex() == UID2_EMAIL_EXAMPLES[normalized][1]


@pytest.mark.parametrize(
    ("raw", "unnormalized_base64"),
    [
        # UID2's and EUID's warning: hashing without normalizing gives another value.
        ("JANESaoirse@gmail.com", "VpLXEp5N1bj/V1WzjgZsC+FfuYdntAOywSVIO00FD/E="),
        ("Jane.Saoirse@gmail.com", "f8upG1hJazYKK8aEtAMq3j7loeAf5aA4lSq6qYOBR/w="),
    ],
)
def test_email_hashing_without_normalizing_differs_as_uid2_and_euid_warn(
    raw: str, unnormalized_base64: str
) -> None:
    assert base64.b64encode(hashlib.sha256(raw.encode()).digest()).decode() == unnormalized_base64
    normalized = hashlib.sha256(normalize_email(raw).encode()).digest()
    assert base64.b64encode(normalized).decode() == UID2_EMAIL_BASE64["janesaoirse@gmail.com"]


def test_email_inner_whitespace_is_refused_not_rewritten() -> None:
    # SPEC section 2 (like UID2, Google and Meta) trims only surrounding whitespace: an
    # address with a space inside is neither rewritten into another person's address nor
    # counted as valid (issue 14: `somchai j@gmail.com` is not an address).
    assert explain_email(" jane@example.com\t") == Normalized("jane@example.com", ("trimmed",))
    for raw in (" jane doe@example.com\t", "jane.doe @gmail.com", "somchai j@gmail.com"):
        with pytest.raises(InvalidIdentifierError) as caught:
            explain_email(raw)
        assert caught.value.reason == "contains_whitespace"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("mailto:a@example.com", "mailto_prefix"),
        ('"Somchai Jaidee" <somchai@example.co.th>', "display_name"),
        ("somchai@example.co.th>", "display_name"),
        ("a\u200b@example.com", "unsafe_character"),
        ("a..b@example.com", "invalid_local_part"),
        (".a@example.com", "invalid_local_part"),
        ("a,b@example.com", "invalid_local_part"),
        ("a@example", "invalid_domain"),
        ("a@example..com", "invalid_domain"),
        ("a@-example.com", "invalid_domain"),
        ("a@example.123", "invalid_domain"),
        ("a@host.localhost", "invalid_domain"),
        ("a@ab--cd.com", "invalid_domain"),
        ("a@" + "b" * 64 + ".com", "invalid_domain"),
        ("a" * 250 + "@b.com", "too_long"),
    ],
)
def test_email_syntax_is_checked_by_email_validator(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifierError) as caught:
        explain_email(raw)
    assert caught.value.reason == reason
    assert raw not in str(caught.value)


def test_email_syntax_check_keeps_uid2_normalization() -> None:
    # email-validator's own normalization (NFC, lowercased domain, IDNA) is not applied.
    assert normalize_email("Nguyễn.Văn@Example.VN") == "nguyễn.văn@example.vn"
    assert normalize_email("x@xn--80ak6aa92e.com") == "x@xn--80ak6aa92e.com"
    assert normalize_email("Jane.Doe+Promo@GMAIL.com") == "janedoe@gmail.com"


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("jane.doe@gmail.com", "janedoe@gmail.com"),
        ("janedoe+home@gmail.com", "janedoe@gmail.com"),
        ("j.a.n.e+a+b.c@gmail.com", "jane@gmail.com"),
        ("Jane.Doe+Home@GMAIL.COM", "janedoe@gmail.com"),
        # Only gmail.com: other domains, Google's included, keep dots and tags.
        ("jane.doe+home@googlemail.com", "jane.doe+home@googlemail.com"),
        ("jane.doe+home@mail.gmail.com", "jane.doe+home@mail.gmail.com"),
        ("jane.doe+home@gmail.co.uk", "jane.doe+home@gmail.co.uk"),
        ("jane.doe+home@example.com", "jane.doe+home@example.com"),
    ],
)
def test_email_gmail_rules_apply_to_gmail_com_only(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "  user@example.com",
        "user@example.com  ",
        "\tuser@example.com\r\n",
        "\u00a0user@example.com",
    ],
)
def test_email_surrounding_whitespace_is_trimmed(raw: str) -> None:
    assert explain_email(raw) == Normalized("user@example.com", ("trimmed",))


def test_email_non_ascii_is_kept_and_only_ascii_is_lowercased() -> None:
    # UID2 lowercases A-Z only; Unicode case mapping would differ from UID2 hashes.
    assert normalize_email("JÖRG.Müller@Exämple.DE") == "jÖrg.müller@exämple.de"
    assert normalize_email("ÉLODIE@example.com") == "Élodie@example.com"
    assert normalize_email("用户@例子.广告") == "用户@例子.广告"


def test_email_explain_reports_each_change() -> None:
    assert explain_email("user@example.com").changes == ()
    assert explain_email(" Jane.Doe+x@Gmail.com ").changes == (
        "trimmed",
        "lowercased",
        "gmail_tag_removed",
        "gmail_dots_removed",
    )
    assert explain_email("jane.doe@gmail.com").changes == ("gmail_dots_removed",)
    assert explain_email("janedoe+x@gmail.com").changes == ("gmail_tag_removed",)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("user.example.com", "missing_at_sign"),
        ("user@@example.com", "multiple_at_signs"),
        ("a@b@example.com", "multiple_at_signs"),
        ("@example.com", "empty_local_part"),
        ("user@", "empty_domain"),
        ("@", "empty_domain"),
        ("+tag@gmail.com", "empty_local_part"),
        ("...@gmail.com", "invalid_local_part"),
    ],
)
def test_email_invalid_values_give_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifierError) as caught:
        normalize_email(raw)
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)


# Emails as brands hold them: ASCII and non-ASCII letters, the usual punctuation, upper
# case, and whitespace around. (Whitespace inside an address is left alone by SPEC section 2.)
_EMAIL_CHARS = st.sampled_from(string.ascii_letters + string.digits + ".+-_'ÄéßİΣ用")
_LOCAL_PARTS = st.text(_EMAIL_CHARS, min_size=0, max_size=20)
_DOMAINS = st.one_of(st.sampled_from(["gmail.com", "GMail.COM", "example.com"]), _LOCAL_PARTS)
_PADDING = st.text(" \t\n\u00a0", max_size=3)


@given(local=_LOCAL_PARTS, domain=_DOMAINS, before=_PADDING, after=_PADDING)
def test_email_normalization_is_idempotent(
    local: str, domain: str, before: str, after: str
) -> None:
    try:
        once = normalize_email(f"{before}{local}@{domain}{after}")
    except InvalidIdentifierError:
        return
    assert explain_email(once) == Normalized(once, ())
    assert once.count("@") == 1
    assert once == once.strip()


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        # UID2's published examples.
        ("1 (234) 567-8901", "US", "+12345678901"),
        ("(02) 1234 5678", "AU", "+61212345678"),
        # United States, written in several ways.
        ("(415) 555-2671", "US", "+14155552671"),
        ("415-555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("1 415 555 2671", "US", "+14155552671"),
        ("+1 415 555 2671", None, "+14155552671"),
        ("tel:+1-415-555-2671", None, "+14155552671"),
        ("(415) 555-2671", "us", "+14155552671"),
        # United Kingdom: trunk prefix 0, international prefix 00, the "(0)" habit.
        ("020 7946 0958", "GB", "+442079460958"),
        ("0044 20 7946 0958", "GB", "+442079460958"),
        ("+44 (0)20 7946 0958", None, "+442079460958"),
        ("07911 123456", "GB", "+447911123456"),
        # Germany and France.
        ("030 901820", "DE", "+4930901820"),
        ("030/901820", "DE", "+4930901820"),
        ("+49 30 901820", None, "+4930901820"),
        ("01 42 68 53 00", "FR", "+33142685300"),
        # A country code in the value wins over the default region.
        ("+33 1 42 68 53 00", "US", "+33142685300"),
    ],
)
def test_phone_is_normalized_to_e164(raw: str, region: str | None, e164: str) -> None:
    assert normalize_phone(raw, region) == e164


def test_phone_uid2_hash_example() -> None:
    normalized = normalize_phone("+12345678901", None)
    assert hashlib.sha256(normalized.encode()).hexdigest() == (
        "10e6f0b47054a83359477dcb35231db6de5c69fb1816e1a6b98e192de9e5b9ee"
    )
    digest = hashlib.sha256(normalized.encode()).digest()
    assert base64.b64encode(digest).decode() == "EObwtHBUqDNZR33LNSMdtt5cafsYFuGmuY4ZLenlue4="


def test_phone_uid2_singapore_example_is_not_a_valid_number() -> None:
    # UID2's page writes "65 1243 5678" normalized to "+6512345678": the digits differ (a
    # typo), and Singapore numbers start with 3, 6, 8 or 9, so the phone library's metadata
    # rejects both. A valid Singapore number in the same layout normalizes as expected.
    for raw in ("65 1243 5678", "+65 1234 5678"):
        with pytest.raises(InvalidIdentifierError) as caught:
            normalize_phone(raw, "SG")
        assert caught.value.reason == "invalid_phone"
    assert normalize_phone("+65 6123 4567", None) == "+6561234567"


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        (
            "\uff0b\uff11 \uff14\uff11\uff15 \uff15\uff15\uff15 \uff12\uff16\uff17\uff11",
            None,
            "+14155552671",
        ),  # full-width
        (
            "\u0664\u0661\u0665\u0665\u0665\u0665\u0662\u0666\u0667\u0661",
            "US",
            "+14155552671",
        ),  # Arabic-Indic
        ("\u00a0+1 415 555 2671\u3000", None, "+14155552671"),  # non-ASCII spaces around
        ("415 555 2671", "US", "+14155552671"),  # inner spaces are formatting
    ],
)
def test_phone_non_ascii_digits_and_spaces(raw: str, region: str | None, e164: str) -> None:
    assert normalize_phone(raw, region) == e164


def test_phone_explain_reports_changes() -> None:
    assert explain_phone("+14155552671", None) == Normalized("+14155552671", ())
    assert explain_phone(" +14155552671 ", None).changes == ("trimmed",)
    assert explain_phone("(415) 555-2671", "US").changes == ("phone_reformatted",)


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("", "US", "empty"),
        (" ", None, "empty"),
        ("not a phone", "US", "unparseable_phone"),
        ("+", "US", "unparseable_phone"),
        ("12345", "US", "invalid_phone"),
        ("555-555-5555", "US", "invalid_phone"),
        ("020 7946 095", "GB", "invalid_phone"),
        ("4155552671", None, "missing_country_code"),
        ("+999 12345678", None, "unknown_country_code"),
        ("+1415555267123456789012", None, "too_long"),
    ],
)
def test_phone_invalid_values_give_a_reason(raw: str, region: str | None, reason: str) -> None:
    with pytest.raises(InvalidIdentifierError) as caught:
        normalize_phone(raw, region)
    assert caught.value.reason == reason


def test_phone_unknown_region_is_an_input_error() -> None:
    with pytest.raises(InputError) as caught:
        normalize_phone("415-555-2671", "XX")
    assert caught.value.reason == "UNKNOWN_REGION"
    assert caught.value.metadata == {"default_region": "XX"}


@given(st.integers(min_value=2_000_000_000, max_value=9_999_999_999))
def test_phone_normalization_is_idempotent(national: int) -> None:
    try:
        once = normalize_phone(str(national), "US")
    except InvalidIdentifierError:
        return
    assert once.startswith("+1")
    assert once[1:].isdigit()
    assert len(once) - 1 <= 15
    assert explain_phone(once, None) == Normalized(once, ())


@pytest.mark.parametrize(
    ("raw", "normalized", "changes"),
    [
        ("6d92078a-8246-4ba4-ae5b-76104861e7dc", "6d92078a-8246-4ba4-ae5b-76104861e7dc", ()),
        (
            "6D92078A-8246-4BA4-AE5B-76104861E7DC",
            "6d92078a-8246-4ba4-ae5b-76104861e7dc",
            ("lowercased",),
        ),
        (
            "  6D92078A-8246-4ba4-ae5b-76104861e7dc\n",
            "6d92078a-8246-4ba4-ae5b-76104861e7dc",
            ("trimmed", "lowercased"),
        ),
        (
            "EA7583CD-A667-48BC-B806-42ECB2B48606",
            "ea7583cd-a667-48bc-b806-42ecb2b48606",
            ("lowercased",),
        ),
    ],
)
def test_maid_is_lowercase_hyphenated(raw: str, normalized: str, changes: tuple[str, ...]) -> None:
    assert explain_maid(raw) == Normalized(normalized, changes)
    assert normalize_maid(raw) == normalized


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("00000000-0000-0000-0000-000000000000", "zero_maid"),
        (" 00000000-0000-0000-0000-000000000000 ", "zero_maid"),
        ("6d92078a82464ba4ae5b76104861e7dc", "malformed_maid"),
        ("{6d92078a-8246-4ba4-ae5b-76104861e7dc}", "malformed_maid"),
        ("6d92078a-8246-4ba4-ae5b-76104861e7d", "malformed_maid"),
        ("6d92078a-8246-4ba4-ae5b-76104861e7dcf", "malformed_maid"),
        ("6d92078g-8246-4ba4-ae5b-76104861e7dc", "malformed_maid"),
        ("6d92078a-82464-ba4-ae5b-76104861e7dc", "malformed_maid"),
        ("６d92078a-8246-4ba4-ae5b-76104861e7dc", "malformed_maid"),  # noqa: RUF001 (a full-width digit)
    ],
)
def test_maid_invalid_values_give_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifierError) as caught:
        normalize_maid(raw)
    assert caught.value.reason == reason


@given(st.uuids(), st.booleans())
def test_maid_normalization_is_idempotent(uuid: UUID, upper: bool) -> None:
    raw = str(uuid).upper() if upper else str(uuid)
    try:
        once = normalize_maid(raw)
    except InvalidIdentifierError:
        return
    assert once == str(uuid)
    assert explain_maid(once) == Normalized(once, ())


def test_declared_type_is_trimmed_only() -> None:
    assert normalize_declared("  Loyalty-ABC.123  ") == "Loyalty-ABC.123"
    assert explain_declared("ABC") == Normalized("ABC", ())
    assert explain_declared(" ABC").changes == ("trimmed",)
    with pytest.raises(InvalidIdentifierError) as caught:
        normalize_declared(" \t ")
    assert caught.value.reason == "empty"


def test_normalizer_for_builtin_types() -> None:
    assert BUILTIN_TYPES == ("email", "phone", "maid")
    assert normalizer_for("email", default_region=None)("A@Example.com") == "a@example.com"
    assert normalizer_for("phone", default_region="GB")("020 7946 0958") == "+442079460958"
    maid = normalizer_for("maid", default_region=None)
    assert maid("6D92078A-8246-4BA4-AE5B-76104861E7DC") == "6d92078a-8246-4ba4-ae5b-76104861e7dc"


def test_normalizer_for_declared_type() -> None:
    loyalty = normalizer_for("loyalty_id", default_region=None, declared_types=("loyalty_id",))
    assert loyalty(" L-1 ") == "L-1"
    explain = explainer_for("loyalty_id", default_region=None, declared_types={"loyalty_id"})
    assert explain(" L-1 ") == Normalized("L-1", ("trimmed",))


def test_normalizer_for_raises_invalid_identifier_error() -> None:
    with pytest.raises(InvalidIdentifierError):
        normalizer_for("email", default_region=None)("nobody")


def test_normalizer_for_unknown_type() -> None:
    with pytest.raises(InputError) as caught:
        normalizer_for("loyalty_id", default_region=None, declared_types=("member_no",))
    assert caught.value.reason == "UNKNOWN_IDENTIFIER_TYPE"
    assert "loyalty_id" in caught.value.message
    assert "email, phone, maid, member_no" in caught.value.message
    assert caught.value.metadata["identifier_type"] == "loyalty_id"


def test_normalizer_for_checks_the_region_once() -> None:
    with pytest.raises(InputError) as caught:
        normalizer_for("phone", default_region="Narnia")
    assert caught.value.reason == "UNKNOWN_REGION"
    # A region is not needed, and so not checked, for the other types.
    assert normalizer_for("email", default_region="Narnia")("a@b.c") == "a@b.c"


# --- The column rules agree with the row-by-row rules ------------------------------------


def scalar_column(identifier_type: str, cells: list[str | None], region: str | None = None):  # type: ignore[no-untyped-def]
    """What the row-by-row rule gives for a column: values, values read, reasons, changes."""
    explain = explainer_for(identifier_type, default_region=region, declared_types=["loyalty_id"])
    values: list[str | None] = []
    read, invalid, changes = 0, Counter[str](), Counter[str]()
    for cell in cells:
        if not cell:
            values.append(None)
            continue
        try:
            value, made = explain(cell)
        except InvalidIdentifierError as error:
            values.append(None)
            if error.reason != "empty":
                read += 1
                invalid[error.reason] += 1
            continue
        read += 1
        values.append(value)
        changes.update(made)
    return values, read, invalid, changes


def assert_column_matches_scalar(
    identifier_type: str, cells: list[str | None], region: str | None = None
) -> None:
    normalizer = column_normalizer_for(
        identifier_type, default_region=region, declared_types=["loyalty_id"]
    )
    column = normalizer(pa.array(cells, pa.string()))
    values, read, invalid, changes = scalar_column(identifier_type, cells, region)
    assert column.values.to_pylist() == values
    assert column.values_read == read
    assert +column.invalid == +invalid
    assert +column.changes == +changes


_TRICKY = st.sampled_from(
    [*"aAzZ09@.+-_' ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0",
     "\u2028", "\u3000", "\u0130", "\u212a", "\u00e9", "\u00c9", "\u7528", "@gmail.com",
     "@GMAIL.COM", "gmail.com", "@example.com"]
)  # fmt: skip
_CELLS = st.lists(st.one_of(st.none(), st.lists(_TRICKY, max_size=10).map("".join)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(_CELLS)
def test_email_column_matches_row_by_row(cells: list[str | None]) -> None:
    assert_column_matches_scalar("email", cells)


_EMAIL_SYNTAX = st.sampled_from(
    [*"aZ09.-+_!#$%&'*/=?^`{|}~@:<>\"(),;[] ", "\u200b", "xn--", "--", "..", ".test",
     ".localhost", ".local", ".arpa", ".onion", ".invalid", ".com", ".vn", ".123", "@gmail.com",
     "mailto:", "ễ", "b" * 64]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_EMAIL_SYNTAX, max_size=8).map("".join), max_size=30))
def test_email_syntax_column_matches_email_validator_row_by_row(cells: list[str]) -> None:
    # The vectorized rule proves syntax only where email-validator would accept it.
    assert_column_matches_scalar("email", [f"{cell}@example{cell}.com" for cell in cells])
    assert_column_matches_scalar("email", [f"a{cell}" for cell in cells])


_MAID_CHARS = st.sampled_from([*"0123456789abcdefABCDEFg- ", "\t", "\xa0", "\uff10"])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.text(_MAID_CHARS, max_size=40),
            st.uuids().map(str),
            st.uuids().map(lambda uuid: f" {str(uuid).upper()}\n"),
            st.just("00000000-0000-0000-0000-000000000000"),
        ),
        max_size=30,
    )
)
def test_maid_column_matches_row_by_row(cells: list[str | None]) -> None:
    assert_column_matches_scalar("maid", cells)


@settings(max_examples=100, deadline=None)
@given(_CELLS)
def test_declared_column_matches_row_by_row(cells: list[str | None]) -> None:
    assert_column_matches_scalar("loyalty_id", cells)


PHONE_REGIONS = ["US", "CA", "GB", "DE", "FR", "AU", "IN", "BR", "AR", "MX", "JP", "IT", "SG", "RU"]


def random_phones(seed: int, count: int) -> list[str | None]:
    """Phone numbers as customer files hold them: every format, valid or not, plus junk."""
    rng = random.Random(seed)
    examples = [
        number
        for region in PHONE_REGIONS
        for kind in (
            phonenumbers.PhoneNumberType.FIXED_LINE,
            phonenumbers.PhoneNumberType.MOBILE,
            phonenumbers.PhoneNumberType.TOLL_FREE,
        )
        if (number := phonenumbers.example_number_for_type(region, kind)) is not None
    ]

    def formatted(digits: str) -> str:
        return "".join(
            rng.choice([" ", "-", ".", "(", ")", ""]) + digit if rng.random() < 0.2 else digit
            for digit in digits
        )

    cells: list[str | None] = []
    for _ in range(count):
        draw = rng.random()
        if draw < 0.6:
            number = rng.choice(examples)
            nsn = "".join(
                digit if rng.random() > 0.3 else str(rng.randint(0, 9))
                for digit in phonenumbers.national_significant_number(number)
            )
            code = str(number.country_code)
            cells.append(
                rng.choice(
                    [
                        "+" + formatted(code + nsn),
                        formatted("0" + nsn),
                        formatted(code + nsn),
                        formatted("00" + code + nsn),
                        formatted("011" + code + nsn),
                        f"+{code} (0){formatted(nsn)}",
                        formatted(nsn),
                        f" {formatted(nsn)}\t",
                    ]
                )
            )
        elif draw < 0.9:
            digits = "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(1, 18)))
            cells.append(
                rng.choice(["", "+", "1", "0", "00", "+1", "+44", "+0", "+7"]) + formatted(digits)
            )
        else:
            cells.append(
                rng.choice(
                    [None, "", " ", "+", "abc", "(415) 555-2671 x12", "tel:+14155552671",
                     "1-800-FLOWERS", "++14155552671", "(+44) 20 7946 0958", "+44(0)2079460958",
                     "\uff0b\uff11 415 555 2671", "415/555 2671", "#31#4155552671"]
                )
            )  # fmt: skip
    return cells


@pytest.mark.parametrize("region", [*PHONE_REGIONS, None])
def test_phone_column_matches_the_phone_library_on_a_large_random_sample(
    region: str | None,
) -> None:
    # Numbers of many regions, in many formats: the metadata path decides most, the phone
    # library the rest, and together they must give exactly what the library gives alone.
    assert_column_matches_scalar("phone", random_phones(hash(region) % 1000, 1500), region)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.text(st.sampled_from([*"0123456789", "+", " ", "-", ".", "(", ")"]), max_size=20),
        max_size=25,
    ),
    st.sampled_from(["US", "GB", "DE", "AU", "BR"]),
)
def test_phone_column_matches_row_by_row_on_digits_and_separators(
    cells: list[str | None], region: str
) -> None:
    assert_column_matches_scalar("phone", cells, region)


def test_phone_column_decides_common_formats_without_the_library() -> None:
    # The metadata path, not the library, handles national and international formats.
    from partners.preparation._phone_plans import PhoneFastPath

    numbers = ["(415) 555-2671", "1-415-555-2671", "555-555-5555", "+44 20 7946 0958"]
    text = pa.array(numbers + ["+44 20 7946 0958"] * 15)  # enough of a country for a plan
    outcome = PhoneFastPath("US").normalize(text, pa.array([True] * len(text)))
    assert outcome.valid.to_pylist()[:4] == [True, True, False, True]
    assert outcome.invalid.to_pylist()[:4] == [False, False, True, False]
    assert outcome.e164.to_pylist()[:2] == ["+14155552671", "+14155552671"]
    assert outcome.e164.to_pylist()[3] == "+442079460958"
    # One number of a rare country code is left to the library, which is exact but slower.
    alone = PhoneFastPath("US").normalize(pa.array(["+44 20 7946 0958"]), pa.array([True]))
    assert alone.valid.to_pylist() == alone.invalid.to_pylist() == [False]


@pytest.mark.parametrize(
    ("cell", "region"),
    [("TH", "TH"), (" vn ", "VN"), ("Thailand", "TH"), ("THAILAND", "TH"),
     ("ประเทศไทย", "TH"), ("Việt Nam", "VN"), ("vietnam", "VN"), ("Singapore", "SG"),
     ("XX", None), ("Siam", None), ("", None)],
)  # fmt: skip
def test_region_cells_are_codes_or_country_names(cell: str, region: str | None) -> None:
    assert region_of(cell) == region
