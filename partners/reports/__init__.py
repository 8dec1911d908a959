"""Reports for people: the self-contained HTML report and the spreadsheet workbook.

`render_html` / `write_html` draw a report's charts (Venn, UpSet, heat map, small
multiples) with matplotlib into inline SVG and lay them out with a Jinja2 template;
`write_workbook` writes an `.xlsx` with openpyxl. Those libraries come with the toolkit's
`reports` extra and are imported only when a report is drawn or written, never when this
package is. Imports `partners.figures` (the numbers every view shares), `partners.errors`
and the generated API; nothing of the server. The names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from partners.reports.page import render_html, write_html
    from partners.reports.workbook import write_workbook

_EXPORTS = {
    "render_html": "partners.reports.page",
    "write_html": "partners.reports.page",
    "write_workbook": "partners.reports.workbook",
}

__all__ = ["render_html", "write_html", "write_workbook"]


def __getattr__(name: str) -> Any:
    """Loads an exported name from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'partners.reports' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
