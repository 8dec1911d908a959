"""The HTML report: one self-contained file from a Jinja2 template and the charts' SVG.

Jinja2 escapes every value from the server (dataset ids, segment labels); the charts are
SVG that matplotlib wrote, with the same values escaped as XML text. Nothing is loaded
from the network: no script, no style sheet, no font; a Content-Security-Policy says so
to the browser too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cleanroom.v1 import overlap_report_pb2
from partners.errors import InputError
from partners.figures import CONFIDENCE, Figure, ReportFigures, short

EXTRA = "reports"


def _missing(error: ImportError) -> InputError:
    return InputError(
        "REPORT_LIBRARIES_MISSING",
        f"Drawing an HTML report needs {error.name}: install the toolkit with its"
        f" '{EXTRA}' extra (pip install 'cleanroom-partner[{EXTRA}]').",
        {"module": str(error.name)},
    )


def _interval(figure: Figure, scale: float | None) -> str:
    interval = figure.interval(scale)
    return "" if interval is None else f"{interval[0]:,} to {interval[1]:,}"


def _value(figure: Figure) -> str:
    return figure.withheld if figure.value is None else f"{figure.value:,}"


def _context(found: ReportFigures) -> dict[str, Any]:
    from partners.reports import charts  # noqa: PLC0415 (matplotlib, on use)

    report = found.report
    scale = found.scale
    base = report.base_dataset
    facts: list[tuple[str, str]] = [
        ("report", report.name),
        ("requested by", short(report.creator) or "-"),
        ("released", f"{report.create_time.ToDatetime():%Y-%m-%d %H:%M:%S} UTC"),
        ("threshold (k)", f"{found.threshold:,}: every count below it is suppressed"),
    ]
    if report.HasField("noise"):
        facts += [
            ("noise", f"{report.noise.mechanism or 'discrete_laplace'} (OpenDP)"),
            ("epsilon", f"{report.noise.epsilon:g}"),
            ("noise scale", f"{report.noise.scale:g} (sensitivity {report.noise.sensitivity})"),
            ("intervals", f"{CONFIDENCE:.0%}: the count before noise lies inside"),
        ]
    else:
        facts.append(("noise", "none: exact counts, protected by suppression"))
    facts += [
        ("counts", f"{report.released_count} released, {report.suppressed_count} suppressed"),
        ("inputs deleted since", ", ".join(short(d) for d in report.deleted_inputs) or "none"),
    ]
    sizes = []
    for dataset in found.datasets:
        figure = found.size(dataset)
        exact = found.exact_sizes.get(dataset)
        sizes.append(
            {
                "id": short(dataset),
                "owner": short(found.owners.get(dataset, "")) or "-",
                "role": "base" if dataset == base else "other",
                "value": _value(figure),
                "withheld": figure.value is None,
                "interval": _interval(figure, scale),
                "exact": "" if exact is None else f"{exact:,}",
                "source": figure.source,
            }
        )
    pairs = []
    for p in report.pairwise_overlaps:
        figure = found.pair(p.dataset, p.matched_dataset)
        pairs.append(
            {
                "dataset": short(p.dataset),
                "matched": short(p.matched_dataset),
                "value": _value(figure),
                "withheld": figure.value is None,
                "interval": _interval(figure, scale),
                "rate": found.match_rate(p.dataset, p.matched_dataset),
                "source": figure.source,
            }
        )
    cells, cell_notes = [], []
    for segment in found.segments if report.segment_column else [None]:
        patterns = found.patterns(segment)
        shares, note = found.shares(patterns)
        cell_notes.append(f"{segment or '(none)'}: {note}" if report.segment_column else note)
        for pattern, share in zip(patterns, shares, strict=True):
            cells.append(
                {
                    "segment": segment or "(none)",
                    "label": pattern.label(found.others),
                    "value": _value(pattern.figure),
                    "withheld": pattern.figure.value is None,
                    "interval": _interval(pattern.figure, scale),
                    "share": share.text,
                }
            )
    regions = charts.venn_regions(found) if len(found.others) in (1, 2) else {}
    return {
        "report_id": short(report.name),
        "question": f"How {found.who(base)} overlaps "
        + ", ".join(found.who(o) for o in found.others)
        + (f", split by {report.segment_column}" if report.segment_column else ""),
        "facts": facts,
        "noisy": bool(scale),
        "base_id": short(base),
        "sizes": sizes,
        "pairs": pairs,
        "cells": cells,
        "cell_notes": cell_notes,
        "segmented": bool(report.segment_column),
        "segment_column": report.segment_column,
        "venn_notes": sorted({f.source for k, f in regions.items() if "estimated" in f.source}),
        "venn_withheld": any(f.value is None for f in regions.values()),
        "legend": ", ".join(f"{i + 1} = {short(o)}" for i, o in enumerate(found.others)),
        "charts": charts,
    }


def render_html(
    report: overlap_report_pb2.OverlapReport,
    *,
    owners: Mapping[str, str] | None = None,
    exact_sizes: Mapping[str, int] | None = None,
) -> str:
    """The report as one self-contained HTML page (charts inline as SVG).

    Args:
        report: The report, as `CleanRoomClient.get_report` returns it.
        owners: Dataset name to owner (`partners/...`), e.g. from `list_shared_datasets`.
        exact_sizes: The exact row counts of the caller's own datasets, shown beside the
            report's figures (`CleanRoomClient.list_datasets`).

    Raises:
        InputError: The `reports` extra (matplotlib, matplotlib-venn, Jinja2) is missing.
    """
    found = ReportFigures(report, owners or {}, exact_sizes or {})
    try:
        import jinja2  # noqa: PLC0415 (on use: the toolkit imports it for reports only)
        from markupsafe import Markup  # noqa: PLC0415

        context = _context(found)
        charts = context.pop("charts")
        # The SVG is matplotlib's, with every label already escaped: inserted as it is.
        context["upset"] = Markup(charts.upset_svg(found))  # noqa: S704
        context["heatmap"] = Markup(charts.heatmap_svg(found))  # noqa: S704
        venn = charts.venn_svg(found)
        context["venn"] = Markup(venn) if venn else None  # noqa: S704
        segments = charts.segments_svg(found)
        context["segments"] = Markup(segments) if segments else None  # noqa: S704
    except ImportError as error:
        raise _missing(error) from None
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("partners.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return environment.get_template("report.html.j2").render(context)


def write_html(
    report: overlap_report_pb2.OverlapReport,
    path: Path,
    *,
    owners: Mapping[str, str] | None = None,
    exact_sizes: Mapping[str, int] | None = None,
) -> Path:
    """Writes `render_html` of the report to `path` (UTF-8) and returns the path."""
    path.write_text(render_html(report, owners=owners, exact_sizes=exact_sizes), encoding="utf-8")
    return path
