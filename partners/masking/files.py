"""Digests files masked by `prepare --blind-key`: ready to upload to a double-blind room.

The file keeps the format of a digests file (`partners.preparation.pipeline`); its identifier
columns hold `k_b · P(d)` instead of `d`, its rows are shuffled, and its metadata says
`cleanroom.matching = double_blind`, so that `upload` sends it as it is.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from partners.errors import InputError
from partners.masking import rows
from partners.preparation.pipeline import (
    DOUBLE_BLIND,
    META_MATCHING,
    ROW_GROUP_ROWS,
    DigestFile,
    read_digest_file,
)


def mask_digest_file(
    path: Path, key: bytes, *, progress: Callable[[int], None] | None = None
) -> DigestFile:
    """Masks a digests file in place with a blind key and shuffles its rows.

    Args:
        path: A digests file `prepare` wrote, not masked yet.
        key: The brand's blind key for the file's collaboration.
        progress: Called with the rows masked, once per identifier column.

    Returns:
        The masked file's description.

    Raises:
        InputError: The file is not a digests file, or is masked already
            (DIGESTS_ALREADY_MASKED), or cannot be written (DESTINATION_UNWRITABLE).
    """
    info = read_digest_file(path)
    if info.matching == DOUBLE_BLIND:
        raise already_masked(path)
    table = pq.read_table(path)
    metadata = {**(table.schema.metadata or {}), META_MATCHING: DOUBLE_BLIND.encode()}
    masked = rows.mask_digests(table, key, info.identifier_types, progress=progress)
    shuffled = rows.shuffled(masked).replace_schema_metadata(metadata)
    try:
        descriptor, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".partial"
        )
    except OSError as error:
        raise _unwritable(path, error) from None
    os.close(descriptor)
    partial = Path(name)
    try:
        # Elements are random bytes, as digests are: no dictionary, statistics or compression.
        pq.write_table(
            shuffled,
            partial,
            row_group_size=ROW_GROUP_ROWS,
            use_dictionary=list(info.segment_columns),  # type: ignore[arg-type]
            write_statistics=list(info.segment_columns),
            compression={
                **dict.fromkeys(info.identifier_types, "none"),
                **dict.fromkeys(info.segment_columns, "snappy"),
            },
        )
        with partial.open("rb") as file:
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise _unwritable(path, error) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return read_digest_file(path)


def already_masked(path: Path) -> InputError:
    """The error for a digests file masked already, which a second mask would spoil."""
    return InputError(
        "DIGESTS_ALREADY_MASKED",
        f"{path} was masked with a blind key already (`prepare --blind-key`); upload it as it"
        " is, without --blind-key: masking it twice would match nothing.",
        {"path": str(path)},
    )


def _unwritable(path: Path, error: OSError) -> InputError:
    return InputError(
        "DESTINATION_UNWRITABLE",
        f"Cannot write {path} ({error.strerror}); check that its folder exists and is writable.",
        {"path": str(path)},
    )
