"""Blind keys: made once, owner-only, never overwritten, refused for another collaboration."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from cleanroom.group import ristretto255
from partners import new_blind_key, read_blind_key, write_blind_key
from partners.cli import main
from partners.errors import InputError
from partners.masking.keys import GROUP_ORDER, blind_key_collaboration


def test_a_key_round_trips_through_an_owner_only_file(tmp_path: Path) -> None:
    key = new_blind_key()
    path = tmp_path / "spring.blindkey"
    write_blind_key(path, key, collaboration="spring-launch")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_blind_key(path, collaboration="spring-launch") == key
    assert read_blind_key(path) == key
    assert blind_key_collaboration(path) == "spring-launch"
    assert path.read_text().splitlines()[0] == "cleanroom-blind-key/v1 spring-launch"


def test_new_keys_are_random_non_zero_canonical_scalars() -> None:
    keys = {new_blind_key() for _ in range(64)}
    assert len(keys) == 64
    for key in keys:
        assert len(key) == ristretto255.SCALAR_BYTES
        assert 0 < int.from_bytes(key, "little") < GROUP_ORDER


def test_a_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = new_blind_key()
    write_blind_key(path, first, collaboration="spring-launch")
    with pytest.raises(InputError) as caught:
        write_blind_key(path, new_blind_key(), collaboration="spring-launch")
    assert caught.value.reason == "BLIND_KEY_FILE_EXISTS"
    assert read_blind_key(path) == first


def test_a_key_is_not_written_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(InputError) as caught:
        write_blind_key(tmp_path / "link", new_blind_key(), collaboration="spring-launch")
    assert caught.value.reason in {"BLIND_KEY_FILE_EXISTS", "BLIND_KEY_FILE_UNWRITABLE"}
    assert not target.exists()


def test_a_key_in_a_missing_folder_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        write_blind_key(tmp_path / "no" / "k", new_blind_key(), collaboration="spring-launch")
    assert caught.value.reason == "BLIND_KEY_FILE_UNWRITABLE"


@pytest.mark.parametrize(
    "key",
    [bytes(32), b"\x01" * 31, b"\x01" * 33, GROUP_ORDER.to_bytes(32, "little"), b"\xff" * 32],
    ids=["zero", "short", "long", "the-order", "above-the-order"],
)
def test_what_is_not_a_scalar_is_not_written(tmp_path: Path, key: bytes) -> None:
    with pytest.raises(InputError) as caught:
        write_blind_key(tmp_path / "k", key, collaboration="c")
    assert caught.value.reason == "INVALID_BLIND_KEY"
    assert not (tmp_path / "k").exists()


def test_a_bad_collaboration_id_is_not_written(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        write_blind_key(tmp_path / "k", new_blind_key(), collaboration="Spring Launch\n")
    assert caught.value.reason == "INVALID_COLLABORATION_ID"


def test_the_key_of_another_collaboration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    write_blind_key(path, new_blind_key(), collaboration="autumn-sale")
    with pytest.raises(InputError) as caught:
        read_blind_key(path, collaboration="spring-launch")
    assert caught.value.reason == "BLIND_KEY_OF_ANOTHER_COLLABORATION"
    assert "autumn-sale" in caught.value.message
    assert caught.value.metadata["key_collaboration"] == "autumn-sale"


def test_a_missing_key_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        read_blind_key(tmp_path / "absent")
    assert caught.value.reason == "BLIND_KEY_FILE_NOT_FOUND"
    assert "blind-key" in caught.value.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    write_blind_key(path, new_blind_key(), collaboration="spring-launch")
    path.chmod(0)
    with pytest.raises(InputError) as caught:
        read_blind_key(path)
    assert caught.value.reason == "BLIND_KEY_FILE_UNREADABLE"


def _valid_text() -> str:
    return f"cleanroom-blind-key/v1 spring-launch\n{new_blind_key().hex()}\n"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe garbage",
        new_blind_key().hex().encode() + b"\n",  # a bare key: no header
        _valid_text().replace("v1", "v2").encode(),
        _valid_text().encode()[:-10] + b"\n",  # cut short
        _valid_text().upper().encode(),  # not lowercase hex, header changed
        f"cleanroom-blind-key/v1 spring-launch\n{'00' * 32}\n".encode(),  # zero
        f"cleanroom-blind-key/v1 spring-launch\n{'ff' * 32}\n".encode(),  # not canonical
        f"cleanroom-blind-key/v1 spring-launch extra\n{new_blind_key().hex()}\n".encode(),
        (_valid_text() + new_blind_key().hex() + "\n").encode(),  # two keys
    ],
    ids=range(10),
)
def test_a_corrupt_key_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_blind_key(path, collaboration="spring-launch")
    assert caught.value.reason == "INVALID_BLIND_KEY"
    assert str(path) in caught.value.message


def test_the_command_writes_a_key_and_refuses_to_overwrite_it(tmp_path: Path) -> None:
    path = tmp_path / "spring.blindkey"
    args = ["blind-key", "--collaboration", "spring-launch", "--out", str(path)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    key = read_blind_key(path, collaboration="spring-launch")
    assert key.hex() not in first.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2, again.output
    assert "BLIND_KEY_FILE_EXISTS" in again.output
    assert read_blind_key(path) == key
