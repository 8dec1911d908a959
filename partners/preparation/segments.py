"""The rules a segment column must meet, checked by `prepare` before anything is written.

These restate the server's (`cleanroom.usecases.upload`: segment names, labels, distinct
values), which the toolkit cannot import; a test keeps the two in step. A segment that breaks
them would be refused at upload, after its values were sent.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

from partners.errors import InputError

MAX_SEGMENT_VALUES = 100
"""The most distinct labels a segment column may hold."""

MAX_SEGMENT_LABEL = 64
"""The most characters of one label."""

SEGMENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
"""What a segment column is named in the room: lowercase ASCII, digits and underscores."""


def segment_mapping(segments: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """Source column to name in the room, from a mapping or a list of columns kept as named.

    Raises:
        InputError: If a column is given twice (DUPLICATE_SEGMENT_COLUMN).
    """
    if isinstance(segments, Mapping):
        return dict(segments)
    mapping: dict[str, str] = {}
    for column in segments:
        if column in mapping:
            raise InputError(
                "DUPLICATE_SEGMENT_COLUMN",
                f"Segment column {column!r} is given more than once; name each segment once.",
                {"column": column},
            )
        mapping[column] = column
    return mapping


def check_segment_names(mapping: Mapping[str, str], identifier_types: Sequence[str]) -> None:
    """Refuse segment names the server would refuse, or that repeat.

    Raises:
        InputError: INVALID_SEGMENT_NAME (with a name to use instead), or
            DUPLICATE_SEGMENT_COLUMN when two columns get one name.
    """
    seen: dict[str, str] = {}
    for column, name in mapping.items():
        if not SEGMENT_NAME.fullmatch(name):
            suggestion = suggested_name(column)
            raise InputError(
                "INVALID_SEGMENT_NAME",
                f"Segment name {name!r} is not allowed in the room: use 1 to 63 lowercase"
                " letters, digits or underscores, starting with a letter. Rename it as you"
                f' keep it, for example --segment "{column}={suggestion}".',
                {"column": column, "segment": name, "suggestion": suggestion},
            )
        if name in seen:
            raise InputError(
                "DUPLICATE_SEGMENT_COLUMN",
                f"Columns {seen[name]!r} and {column!r} are both kept as segment {name!r};"
                " give each its own name.",
                {"column": column, "segment": name},
            )
        seen[name] = column
        if name in identifier_types:
            raise InputError(
                "COLUMN_NAME_CONFLICT",
                f"Segment name {name!r} is the name of the digest column of that identifier"
                f' type; rename it, for example --segment "{column}={name}_segment".',
                {"column": column, "segment": name},
            )


def suggested_name(column: str) -> str:
    """A segment name derived from a column name: `Member Tier` gives `member_tier`."""
    ascii_text = unicodedata.normalize("NFKD", column).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = f"segment_{name}" if name else "segment"
    return name[:63].rstrip("_")
