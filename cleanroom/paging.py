"""Page sizes and opaque page tokens for the List methods (AIP-158)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import TypeVar

from cleanroom.errors import InvalidArgumentError

Position = TypeVar("Position", str, int)
Item = TypeVar("Item")

MAX_PAGE_SIZE = 1000


def page_size(requested: int, *, default: int) -> int:
    """The page size to use: the default for 0, at most MAX_PAGE_SIZE; negative is an error."""
    if requested < 0:
        raise InvalidArgumentError(
            "INVALID_PAGE_SIZE",
            f"`page_size` must not be negative, got {requested}.",
            field="page_size",
        )
    return min(requested or default, MAX_PAGE_SIZE)


def encode_token(kind: str, parent: str, position: str | int) -> str:
    """A token that continues a listing of `kind` under `parent` after `position`."""
    data = json.dumps([kind, parent, position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def next_page(
    items: list[Item], limit: int, kind: str, parent: str, position: Callable[[Item], str | int]
) -> tuple[list[Item], str]:
    """One page of `items`, fetched `limit + 1` long, and the token of the page after it."""
    if len(items) <= limit:
        return items, ""
    page = items[:limit]
    return page, encode_token(kind, parent, position(page[-1]))


def decode_token(token: str, kind: str, parent: str, start: Position) -> Position:
    """The position a token continues from; `start` for an empty token.

    Raises:
        InvalidArgumentError: The token is malformed or belongs to another listing.
    """
    if not token:
        return start
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        token_kind, token_parent, position = data
    except (ValueError, TypeError, binascii.Error):
        position = token_kind = token_parent = None
    out_of_range = isinstance(position, int) and not -1 <= position < 2**63
    if (
        token_kind != kind
        or token_parent != parent
        or type(position) is not type(start)
        or out_of_range
    ):
        raise InvalidArgumentError(
            "INVALID_PAGE_TOKEN",
            "`page_token` is not a token of this listing: pass the `next_page_token` of the"
            " previous page of the same request, or none to start over.",
            field="page_token",
        )
    return position
