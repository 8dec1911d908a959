"""Text from the server or a file, made inert before a terminal shows it.

Ids and names are checked by the server, but labels, messages and whatever an older or
hostile server sends are not: a value could clear the screen (ANSI escapes), draw a fake
table row (a newline), reverse the text around it (bidi controls) or hide itself (rich
markup such as `[conceal]`). Every command prints such values through `inert`.
"""

from __future__ import annotations

from rich.markup import escape


def inert(value: object, *, markup: bool = True) -> str:
    r"""`value` as text a terminal shows as it is, with nothing in it that acts.

    Characters that are not printable (C0 and C1 controls, DEL, line and paragraph
    separators, format characters such as bidi overrides) become their Python escapes
    (`\x1b`, `\n`, `\u202e`); with `markup`, rich markup is escaped too, for text that
    goes to a rich console or table.

    Args:
        value: What to show; anything but a string is shown as `str(value)`.
        markup: Whether the text goes where rich reads markup (tables, `console.print`).
    """
    text = str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return escape(text) if markup and "[" in text else text


def inert_json(text: str) -> str:
    r"""JSON text with every character that is not printable written as a `\uXXXX` escape.

    `json.dumps` escapes C0 controls only; C1 controls (which some terminals read as
    escape sequences) and bidi overrides pass through when it keeps non-ASCII text. Such
    characters occur only inside JSON strings, where the escape means the same character.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else _json_escape(c) for c in text)


def _json_escape(character: str) -> str:
    code = ord(character)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes characters beyond the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
