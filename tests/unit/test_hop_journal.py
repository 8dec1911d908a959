"""The hop journal: entries written atomically, damaged ones dropped, one worker at a time."""

from __future__ import annotations

import stat
from pathlib import Path

import pyarrow as pa
import pytest

from partners.errors import InputError
from partners.masking.journal import HopJournal, JournalEntry, default_journal

HOP = "collaborations/spring-launch/datasets/acme-crm/maskingHops/brightmart"
OTHER = "collaborations/autumn-sale/datasets/acme-crm/maskingHops/brightmart"


def _entry(hop: str = HOP, attempt: str = "a" * 32, count: int = 40) -> JournalEntry:
    rows = pa.table(
        {
            "email": pa.array([bytes([i]) * 32 if i % 5 else None for i in range(count)],
                              pa.binary(32)),
            "_row_tag": pa.array([i.to_bytes(16, "little") for i in range(count)], pa.binary(16)),
        }
    )  # fmt: skip
    return JournalEntry(hop, attempt, "c" * 64, rows)


def test_an_entry_round_trips_in_a_private_folder(tmp_path: Path) -> None:
    journal = HopJournal(tmp_path / "hops")
    entry = _entry()
    journal.write(entry)
    assert stat.S_IMODE((tmp_path / "hops").stat().st_mode) == 0o700
    (file,) = (tmp_path / "hops").glob("*.hop")
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert journal.read(HOP) == entry
    assert journal.hops("collaborations/spring-launch") == [HOP]
    assert journal.hops("collaborations/autumn-sale") == []
    assert journal.hops("collaborations/spring") == []  # a prefix of another id


def test_a_new_attempt_replaces_the_entry_and_removal_empties_it(tmp_path: Path) -> None:
    journal = HopJournal(tmp_path)
    journal.write(_entry(attempt="a" * 32))
    journal.write(_entry(attempt="b" * 32))
    journal.write(_entry(hop=OTHER))
    read = journal.read(HOP)
    assert read is not None
    assert read.attempt_id == "b" * 32
    journal.remove(HOP)
    assert journal.read(HOP) is None
    assert journal.hops("collaborations/spring-launch") == []
    assert journal.hops("collaborations/autumn-sale") == [OTHER]


@pytest.mark.parametrize("where", ["header", "body", "cut", "empty"])
def test_a_damaged_entry_is_dropped_never_sent(tmp_path: Path, where: str) -> None:
    journal = HopJournal(tmp_path)
    journal.write(_entry())
    (file,) = tmp_path.glob("*.hop")
    content = bytearray(file.read_bytes())
    if where == "header":
        content[2] ^= 1
    elif where == "body":
        content[-40] ^= 1  # a bit of an element: still a valid Arrow stream
    elif where == "cut":
        del content[-100:]
    else:
        content.clear()
    file.write_bytes(bytes(content))
    assert journal.read(HOP) is None
    assert not file.exists()


def test_partial_files_are_not_entries(tmp_path: Path) -> None:
    journal = HopJournal(tmp_path)
    name = HOP.replace("/", "+")
    (tmp_path / f".{name}.hop.x.partial").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("mine")
    assert journal.hops("collaborations/spring-launch") == []


def test_a_name_that_is_not_a_hop_is_never_a_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a masking hop"):
        HopJournal(tmp_path).write(_entry(hop="collaborations/x/datasets/../../../etc/passwd"))


def test_one_worker_at_a_time(tmp_path: Path) -> None:
    journal = HopJournal(tmp_path / "hops")
    with journal.locked():
        with pytest.raises(InputError) as caught, HopJournal(tmp_path / "hops").locked():
            pass
        assert caught.value.reason == "HOP_JOURNAL_IN_USE"
    with HopJournal(tmp_path / "hops").locked():  # released with the first
        pass


def test_an_unusable_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(InputError) as caught, HopJournal(tmp_path / "file" / "hops").locked():
        pass
    assert caught.value.reason == "HOP_JOURNAL_UNWRITABLE"


def test_the_default_folder_is_the_users_state_folder(tmp_path: Path) -> None:
    state = default_journal({"XDG_STATE_HOME": str(tmp_path)})
    assert state == tmp_path / "cleanroom-partner" / "hops"
    assert default_journal({"HOME": "/nowhere"}).parts[-3:] == (
        "state",
        "cleanroom-partner",
        "hops",
    )
