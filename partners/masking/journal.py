"""The local journal of masking hops: each result is on disk before it is sent.

A hop's result costs one multiplication per element; a crash or a Ctrl-C between computing
it and the server's acknowledgement must not cost it again, and must never make a hop be
applied twice. So the result is written here first, under the hop's name with the attempt
it answers, then sent; the entry is removed once the server has applied the hop (or said
that it had). The server stays the source of truth: an entry is only ever re-sent, and the
server refuses it if its attempt is no longer the hop's newest.

An entry is one file, written atomically (a temporary file, fsync, rename): a line of JSON
naming the hop, the attempt, the checksum of the rows the attempt sent and the SHA-256 of
what follows, then the result as an Arrow IPC stream. An entry whose SHA-256 does not match
is dropped, never sent: a flipped bit in a valid element would otherwise be accepted and
silently spoil matching.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pyarrow import ipc

from partners.errors import InputError

JOURNAL_FORMAT = "cleanroom-hop-journal/v1"
_SUFFIX = ".hop"
_HOP_NAME = re.compile(r"collaborations/[a-z0-9-]+/datasets/[a-z0-9-]+/maskingHops/[a-z0-9-]+")


@dataclass(frozen=True)
class JournalEntry:
    """A hop's result, computed and kept until the server has applied it.

    Attributes:
        hop: The hop's name.
        attempt_id: The attempt the result answers.
        attempt_checksum: The checksum of the rows that attempt sent.
        rows: The result: every element multiplied by the blind key, rows shuffled.
    """

    hop: str
    attempt_id: str
    attempt_checksum: str
    rows: pa.Table


class HopJournal:
    """A folder of journal entries, one per hop, private to the user who runs the toolkit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the journal for one worker: a second one at the same time is refused.

        Raises:
            InputError: Another worker holds it (HOP_JOURNAL_IN_USE), or the folder cannot
                be made (HOP_JOURNAL_UNWRITABLE).
        """
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise self._unwritable(error) from None
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise self._unwritable(error) from None
                raise InputError(
                    "HOP_JOURNAL_IN_USE",
                    f"Another `blind work` uses the hop journal {self.directory}; let it finish,"
                    " or give this one another folder with --journal.",
                    {"journal": str(self.directory)},
                ) from None
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def hops(self, parent: str) -> list[str]:
        """The names of the hops of collaboration `parent` that have an entry, sorted."""
        prefix = _file_name(f"{parent}/")
        if not self.directory.is_dir():
            return []
        found = [
            path.name[: -len(_SUFFIX)].replace("+", "/")
            for path in self.directory.iterdir()
            if path.name.startswith(prefix) and path.name.endswith(_SUFFIX)
        ]
        return sorted(name for name in found if _HOP_NAME.fullmatch(name))

    def read(self, hop: str) -> JournalEntry | None:
        """The entry of a hop, or None if it has none or its entry was damaged (then removed)."""
        path = self._path(hop)
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise self._unwritable(error) from None
        entry = _parsed(hop, content)
        if entry is None:
            path.unlink(missing_ok=True)
        return entry

    def write(self, entry: JournalEntry) -> None:
        """Writes an entry atomically, replacing the hop's earlier one.

        Raises:
            InputError: The journal cannot be written (HOP_JOURNAL_UNWRITABLE).
        """
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, entry.rows.schema) as writer:
            writer.write_table(entry.rows)
        body = sink.getvalue().to_pybytes()
        header = {
            "format": JOURNAL_FORMAT,
            "hop": entry.hop,
            "attempt_id": entry.attempt_id,
            "attempt_checksum": entry.attempt_checksum,
            "row_count": entry.rows.num_rows,
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        path = self._path(entry.hop)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor, partial = tempfile.mkstemp(
                dir=self.directory, prefix=f".{path.name}.", suffix=".partial"
            )
        except OSError as error:
            raise self._unwritable(error) from None
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(json.dumps(header).encode() + b"\n" + body)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
            _sync_folder(self.directory)
        except OSError as error:
            Path(partial).unlink(missing_ok=True)
            raise self._unwritable(error) from None
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise

    def remove(self, hop: str) -> None:
        """Removes the entry of a hop, if it has one."""
        self._path(hop).unlink(missing_ok=True)
        _sync_folder(self.directory)

    def _path(self, hop: str) -> Path:
        if _HOP_NAME.fullmatch(hop) is None:  # a bug, or a server sending odd names
            raise ValueError(f"not a masking hop's name: {hop!r}")
        return self.directory / (_file_name(hop) + _SUFFIX)

    def _unwritable(self, error: OSError) -> InputError:
        return InputError(
            "HOP_JOURNAL_UNWRITABLE",
            f"The hop journal {self.directory} cannot be used ({error.strerror}); check that"
            " its folder is writable, or choose another with --journal.",
            {"journal": str(self.directory)},
        )


def default_journal(environ: dict[str, str] | None = None) -> Path:
    """The default journal folder: `$XDG_STATE_HOME/cleanroom-partner/hops`."""
    environ = dict(os.environ) if environ is None else environ
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cleanroom-partner" / "hops"


def _parsed(hop: str, content: bytes) -> JournalEntry | None:
    """The entry a journal file holds, or None if it is damaged or not the hop's."""
    head, _, body = content.partition(b"\n")
    try:
        header = json.loads(head)
        if not isinstance(header, dict) or header.get("format") != JOURNAL_FORMAT:
            return None
        if header.get("hop") != hop or hashlib.sha256(body).hexdigest() != header.get("sha256"):
            return None
        rows = ipc.open_stream(body).read_all()
    except (ValueError, pa.ArrowException):
        return None
    if rows.num_rows != header.get("row_count"):
        return None
    return JournalEntry(hop, str(header["attempt_id"]), str(header["attempt_checksum"]), rows)


def _file_name(hop: str) -> str:
    """A hop's name as a file name: its slashes become `+`, which names never hold."""
    return hop.replace("/", "+")


def _sync_folder(directory: Path) -> None:
    """Makes a rename or removal in `directory` durable."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
