"""The digest cryptography (SPEC section 2), checked against an independent implementation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partners.errors import InputError
from partners.preparation.digest import (
    SECRET_BYTES,
    decode_sha256,
    decode_sha256_column,
    digest_column,
    digest_normalized,
    digest_sha256,
    digest_sha256_column,
    key_check_value,
    new_secret,
    read_secret,
    type_key,
    write_secret,
)
from partners.preparation.normalize import InvalidIdentifierError

SECRET = bytes(range(32))
COLLABORATION = "collaborations/acme-globex"


def reference_hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 for 32 bytes (RFC 5869), written with the standard library only."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def reference_digest(secret: bytes, collaboration: str, identifier_type: str, value: str) -> bytes:
    key = reference_hkdf(secret, collaboration.encode(), f"cleanroom/v1/{identifier_type}".encode())
    return hmac.new(key, hashlib.sha256(value.encode()).digest(), hashlib.sha256).digest()


def reference_kcv(secret: bytes, collaboration: str) -> str:
    key = reference_hkdf(secret, collaboration.encode(), b"cleanroom/v1/kcv")
    return hmac.new(key, b"cleanroom key check", hashlib.sha256).digest()[:8].hex()


def test_hkdf_reference_matches_rfc_5869_case_1() -> None:
    # The reference itself must be right: RFC 5869 test case 1, first 32 bytes.
    ikm = bytes.fromhex("0b" * 22)
    okm = reference_hkdf(
        ikm, bytes.fromhex("000102030405060708090a0b0c"), bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    )
    assert okm.hex() == "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"


@pytest.mark.parametrize("identifier_type", ["email", "phone", "maid", "loyalty_id"])
def test_type_key_is_hkdf_sha256(identifier_type: str) -> None:
    expected = reference_hkdf(
        SECRET, COLLABORATION.encode(), f"cleanroom/v1/{identifier_type}".encode()
    )
    assert type_key(SECRET, COLLABORATION, identifier_type) == expected


def test_digest_normalized_is_hmac_of_sha256() -> None:
    values = [
        "user@example.com",
        "+14155552671",
        "6d92078a-8246-4ba4-ae5b-76104861e7dc",
        "ü@例子.de",
    ]
    key = type_key(SECRET, COLLABORATION, "email")
    assert digest_normalized(key, values) == [
        reference_digest(SECRET, COLLABORATION, "email", value) for value in values
    ]


def test_digest_normalized_of_nothing() -> None:
    assert digest_normalized(type_key(SECRET, COLLABORATION, "email"), []) == []


@given(st.lists(st.text(max_size=40), max_size=20), st.binary(min_size=32, max_size=64))
def test_digest_normalized_matches_reference(values: list[str], secret: bytes) -> None:
    key = type_key(secret, "c", "email")
    digests = digest_normalized(key, values)
    assert digests == [reference_digest(secret, "c", "email", value) for value in values]
    assert all(len(digest) == 32 for digest in digests)


def test_known_answer() -> None:
    # Pinned so that any change to the derivation is noticed: it would break matching
    # between partners running different versions of the toolkit.
    key = type_key(SECRET, COLLABORATION, "email")
    [digest] = digest_normalized(key, ["user@example.com"])
    assert digest.hex() == "93948abe406fc48f1f806e8a308e0f8c0d95cc03b2f4a03cf06224a1de486d22"
    assert key_check_value(SECRET, COLLABORATION) == "58a3ad04a9532352"


def test_key_check_value_is_16_lowercase_hex() -> None:
    kcv = key_check_value(SECRET, COLLABORATION)
    assert len(kcv) == 16
    assert all(char in "0123456789abcdef" for char in kcv)
    assert kcv == reference_kcv(SECRET, COLLABORATION)


def test_key_check_value_reveals_no_type_key() -> None:
    kcv = key_check_value(SECRET, COLLABORATION)
    for identifier_type in ("email", "phone", "maid", "kcv"):
        assert kcv not in type_key(SECRET, COLLABORATION, identifier_type).hex()


def test_keys_differ_by_collaboration_type_and_secret() -> None:
    keys = {
        type_key(SECRET, "collaborations/a", "email"),
        type_key(SECRET, "collaborations/b", "email"),
        type_key(SECRET, "collaborations/a", "phone"),
        type_key(bytes(32), "collaborations/a", "email"),
    }
    assert len(keys) == 4
    kcvs = {
        key_check_value(SECRET, "collaborations/a"),
        key_check_value(SECRET, "collaborations/b"),
        key_check_value(bytes(32), "collaborations/a"),
    }
    assert len(kcvs) == 3


def test_same_value_digests_differently_per_type() -> None:
    email = digest_normalized(type_key(SECRET, COLLABORATION, "email"), ["x"])
    loyalty = digest_normalized(type_key(SECRET, COLLABORATION, "loyalty_id"), ["x"])
    assert email != loyalty


def test_sha256_input_gives_the_same_digest_as_the_raw_value() -> None:
    key = type_key(SECRET, COLLABORATION, "email")
    raw = ["user@example.com", "janesaoirse@gmail.com"]
    hashes = [hashlib.sha256(value.encode()).digest() for value in raw]
    assert digest_sha256(key, hashes) == digest_normalized(key, raw)


def test_decode_sha256_takes_uid2_hex_and_base64() -> None:
    # UID2's published hash of user@example.com, in both of its encodings.
    hex_form = "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"
    base64_form = "tMmiiTI7IaAcPpQPFQ65uMVCWH8av9jw4cwf/F5HVRQ="
    expected = hashlib.sha256(b"user@example.com").digest()
    assert decode_sha256(hex_form) == expected
    assert decode_sha256(hex_form.upper()) == expected
    assert decode_sha256(f" {base64_form}\n") == expected
    key = type_key(SECRET, COLLABORATION, "email")
    assert digest_sha256(key, [decode_sha256(base64_form)]) == digest_normalized(
        key, ["user@example.com"]
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "b4c9a289",
        "z4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514",
        "tMmiiTI7IaAcPpQPFQ65uMVCWH8av9jw4cwf/F5HVR!=",
        base64.b64encode(b"x" * 33).decode(),
    ],
)
def test_decode_sha256_refuses_other_text(text: str) -> None:
    with pytest.raises(InvalidIdentifierError) as caught:
        decode_sha256(text)
    assert caught.value.reason == "malformed_sha256"


def test_digest_sha256_refuses_wrong_length() -> None:
    with pytest.raises(InvalidIdentifierError) as caught:
        digest_sha256(type_key(SECRET, COLLABORATION, "email"), [b"\x00" * 31])
    assert caught.value.reason == "malformed_sha256"


def test_short_secret_is_refused() -> None:
    for call in (
        lambda: type_key(b"s" * 31, COLLABORATION, "email"),
        lambda: key_check_value(b"s" * 31, COLLABORATION),
    ):
        with pytest.raises(InputError) as caught:
            call()
        assert caught.value.reason == "SECRET_TOO_SHORT"
        assert caught.value.metadata["secret_bytes"] == "31"


def test_longer_secrets_are_accepted() -> None:
    assert len(type_key(b"s" * 64, COLLABORATION, "email")) == 32


def test_new_secret_is_random() -> None:
    secrets = {new_secret() for _ in range(8)}
    assert len(secrets) == 8
    assert all(len(secret) == SECRET_BYTES == 32 for secret in secrets)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("umask_022")
def test_secret_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "collaboration.secret"
    secret = new_secret()
    write_secret(path, secret)
    assert path.read_text(encoding="ascii") == secret.hex() + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_secret(path) == secret
    assert read_secret(str(path)) == secret


def test_secret_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "collaboration.secret"
    write_secret(path, SECRET)
    with pytest.raises(InputError) as caught:
        write_secret(path, new_secret())
    assert caught.value.reason == "SECRET_FILE_EXISTS"
    assert str(path) in caught.value.message
    assert caught.value.metadata == {"path": str(path)}
    assert read_secret(path) == SECRET


def test_secret_file_is_not_written_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "collaboration.secret"
    link.symlink_to(target)
    with pytest.raises(InputError) as caught:
        write_secret(link, SECRET)
    assert caught.value.reason == "SECRET_FILE_EXISTS"
    assert not target.exists()


def test_secret_file_in_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        write_secret(tmp_path / "missing" / "collaboration.secret", SECRET)
    assert caught.value.reason == "SECRET_FILE_UNWRITABLE"


def test_short_secret_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "collaboration.secret"
    with pytest.raises(InputError) as caught:
        write_secret(path, b"short")
    assert caught.value.reason == "SECRET_TOO_SHORT"
    assert not path.exists()


def test_read_secret_accepts_uppercase_and_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "collaboration.secret"
    path.write_text(f"  {SECRET.hex().upper()}\r\n\n", encoding="ascii")
    assert read_secret(path) == SECRET


def test_read_secret_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.secret"
    with pytest.raises(InputError) as caught:
        read_secret(path)
    assert caught.value.reason == "SECRET_FILE_NOT_FOUND"
    assert str(path) in caught.value.message


def test_read_secret_of_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        read_secret(tmp_path)
    assert caught.value.reason == "SECRET_FILE_UNREADABLE"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        b"not a secret",
        b"00" * 31 + b"0",  # odd number of digits
        b"00 11" * 16,  # spaces inside
        b"\xff\xfe" + b"00" * 32,
        ("\u0660" * 64).encode(),  # Arabic-Indic digits are digits, but not hex
    ],
)
def test_read_secret_refuses_non_hex(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "collaboration.secret"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_secret(path)
    assert caught.value.reason == "SECRET_NOT_HEX"


def test_read_secret_refuses_short_secret(tmp_path: Path) -> None:
    path = tmp_path / "collaboration.secret"
    path.write_text("ab" * 16 + "\n", encoding="ascii")
    with pytest.raises(InputError) as caught:
        read_secret(path)
    assert caught.value.reason == "SECRET_TOO_SHORT"
    assert caught.value.metadata == {"secret_bytes": "16", "minimum_bytes": "32", "path": str(path)}
    assert "at least 32" in caught.value.message


# --- Whole columns at once ---------------------------------------------------------------


@given(st.lists(st.one_of(st.none(), st.text(max_size=30)), max_size=30))
def test_digest_column_matches_digest_normalized(values: list[str | None]) -> None:
    key = type_key(SECRET, COLLABORATION, "email")
    column = digest_column(key, pa.array(values, pa.string()))
    assert column.type == pa.binary(32)
    assert column.to_pylist() == [
        None if value is None else digest_normalized(key, [value])[0] for value in values
    ]


def test_digest_column_of_a_slice() -> None:
    key = type_key(SECRET, COLLABORATION, "email")
    values = pa.array(["a", None, "b", "c"]).slice(1, 2)
    assert digest_column(key, values).to_pylist() == [None, digest_normalized(key, ["b"])[0]]


def test_digest_sha256_column_matches_the_raw_values() -> None:
    key = type_key(SECRET, COLLABORATION, "email")
    raw = ["user@example.com", None, "janesaoirse@gmail.com"]
    hashes = pa.array(
        [None if value is None else hashlib.sha256(value.encode()).digest() for value in raw],
        pa.binary(32),
    )
    assert (
        digest_sha256_column(key, hashes).to_pylist()
        == digest_column(key, pa.array(raw)).to_pylist()
    )


_HASH_TEXT = st.one_of(
    st.none(),
    st.binary(min_size=32, max_size=32).map(lambda digest: digest.hex()),
    st.binary(min_size=32, max_size=32).map(lambda digest: digest.hex().upper()),
    st.binary(min_size=32, max_size=32).map(lambda digest: base64.b64encode(digest).decode()),
    st.binary(min_size=31, max_size=33).map(lambda digest: base64.b64encode(digest).decode()),
    st.binary(min_size=32, max_size=32).map(lambda digest: f" {digest.hex()}\n"),
    st.binary(min_size=32, max_size=32).map(lambda digest: f"\u00a0{digest.hex()}"),
    st.text(st.sampled_from("0123456789abcdefABCDEFgz+/= \t\u00e9"), max_size=66),
)


@settings(max_examples=200)
@given(st.lists(_HASH_TEXT, max_size=20))
def test_decode_sha256_column_matches_decode_sha256(cells: list[str | None]) -> None:
    decoded = decode_sha256_column(pa.array(cells, pa.string()))
    expected: list[bytes | None] = []
    read = malformed = 0
    for cell in cells:
        if cell is None or not cell.strip():
            expected.append(None)
            continue
        read += 1
        try:
            expected.append(decode_sha256(cell))
        except InvalidIdentifierError:
            expected.append(None)
            malformed += 1
    assert decoded.hashes.to_pylist() == expected
    assert (decoded.values_read, decoded.malformed) == (read, malformed)


def test_decode_sha256_column_takes_non_canonical_base64_as_python_does() -> None:
    # The last character of a 32-byte base64 value carries two unused bits; like Python's
    # decoder, the column decoder ignores them rather than refusing the value.
    canonical = "tMmiiTI7IaAcPpQPFQ65uMVCWH8av9jw4cwf/F5HVRQ="
    loose = canonical[:-2] + "R="
    decoded = decode_sha256_column(pa.array([canonical, loose]))
    assert decoded.hashes.to_pylist() == [decode_sha256(canonical), decode_sha256(loose)]
    assert decoded.malformed == 0
