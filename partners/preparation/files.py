"""Files that appear only once complete, and private work folders beside them.

A digests file or a people file that a crash cut in half would look like a good one. So each
is written under a temporary name in the destination's folder and renamed into place only
once complete and on disk; on any failure, interrupts included, the partial file is removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from partners.errors import InputError


@contextlib.contextmanager
def replacing(destination: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `destination`.

    Raises:
        InputError: If the destination's folder cannot be written (DESTINATION_UNWRITABLE).
    """
    try:
        # In the destination's folder, so that the final rename stays on one file system.
        descriptor, name = tempfile.mkstemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial"
        )
    except OSError as error:
        raise unwritable(destination, error) from None
    os.close(descriptor)
    partial = Path(name)
    try:
        yield partial
        _flush_to_disk(partial)
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def work_folder(destination: Path) -> Iterator[Path]:
    """Yield a private folder beside `destination` for intermediate files; remove it after.

    Beside the destination rather than in the system's temporary folder: that may be a
    small RAM disk, and the work files of a large customer file are as large as its output.

    Raises:
        InputError: If the destination's folder cannot be written (DESTINATION_UNWRITABLE).
    """
    try:
        folder = tempfile.TemporaryDirectory(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".work"
        )
    except OSError as error:
        raise unwritable(destination, error) from None
    with folder as name:
        yield Path(name)


def write_new_private(
    path: Path,
    text: str,
    *,
    exists: Callable[[], InputError],
    unwritable: Callable[[OSError], InputError],
) -> None:
    """Creates `path` readable by its owner only and writes `text` (ASCII) into it.

    For keys and secrets: never over an existing file (O_EXCL: overwriting one would
    orphan everything made with it), never through a symbolic link, and mode 0600 from
    the start, so the file is never readable by others. A failed write removes the file.

    Raises:
        InputError: `exists()` if the file exists; `unwritable(error)` if it cannot be
            created or written.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise exists() from None
    except OSError as error:
        raise unwritable(error) from None
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(text)
    except OSError as error:
        path.unlink(missing_ok=True)
        raise unwritable(error) from None


def unwritable(destination: Path, error: OSError) -> InputError:
    """Describe a destination that cannot be written."""
    return InputError(
        "DESTINATION_UNWRITABLE",
        f"Cannot write {destination} ({error.strerror}); check that its folder exists and "
        "is writable.",
        {"path": str(destination)},
    )


def _flush_to_disk(path: Path) -> None:
    """Make sure a file's bytes are on disk before it is renamed into place."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
