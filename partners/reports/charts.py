"""The report's charts as inline SVG, drawn with matplotlib (and matplotlib-venn).

Every chart draws released figures only: a withheld count is a hatched, empty shape
labelled "suppressed", never a bar of height zero or a number. With noise, each bar
carries its 95% interval. Text stays text in the SVG (so the browser shapes every
script, and a test can read the labels from the DOM), and each bar, label and region
has an id (`upset-bar-3`, `venn-label-110`, ...) that says what it stands for.

matplotlib is imported when a chart is drawn, never when this module is imported.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from partners.figures import SUPPRESSED, Figure, Pattern, ReportFigures, difference, short

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as Canvas

RELEASED_COLOUR = "#3a6ea5"
WITHHELD_COLOUR = "#9a9a9a"
_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text as <text>: the browser's fonts shape Thai or CJK
    "svg.hashsalt": "cleanroom",  # the same SVG for the same report
    "text.parse_math": False,  # a `$` in a label is a dollar sign, not TeX
    "font.family": "sans-serif",
    "font.size": 9,
}


@contextmanager
def _canvas(width: float, height: float) -> Iterator[Canvas]:
    import matplotlib as mpl  # noqa: PLC0415 (heavy: only when a chart is drawn)
    from matplotlib.figure import Figure as MplFigure  # noqa: PLC0415

    with mpl.rc_context(_RC):  # type: ignore[arg-type]  # (a dict of str, as documented)
        yield MplFigure(figsize=(width, height), layout="constrained")


def _svg(canvas: Canvas, *, tight: bool = False) -> str:
    """The figure as SVG text; `tight` grows it to labels outside the axes (Venn sets)."""
    out = io.StringIO()
    with warnings.catch_warnings():
        # matplotlib measures text with its own font, which lacks Thai or CJK glyphs; the
        # SVG keeps the text as text, and the browser draws it with its fonts.
        warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
        canvas.savefig(
            out, format="svg", metadata={"Date": None}, bbox_inches="tight" if tight else None
        )
    text = out.getvalue()
    return text[text.index("<svg") :]  # no XML prolog inside HTML


def _bar_label(figure: Figure) -> str:
    if figure.value is None:
        return SUPPRESSED
    return f"≥ {figure.value:,}" if figure.at_least else f"{figure.value:,}"


def _height(bars: Sequence[Figure], scale: float | None) -> float:
    """The height the tallest bar, its interval and its label need."""
    tops = [(f.interval(scale) or (0, f.value or 0))[1] for f in bars if f.value is not None]
    return max([*tops, 1]) * 1.15


# Above this many bars a chart's numbers would overlap: the tables beside it give them.
MAX_LABELLED_BARS = 32
GAP = float("nan")  # breaks a line: one artist draws a whisker and its two caps


def _bars(
    ax: Axes,
    bars: Sequence[Figure],
    scale: float | None,
    prefix: str,
    height: float | None = None,
) -> None:
    """Bars of released counts with their intervals; hatched placeholders for withheld ones.

    Every bar's shape has an id saying what it is (`-bar-`, `-partial-`, `-withheld-`);
    withheld ones are always labelled "suppressed", counts are labelled up to
    MAX_LABELLED_BARS bars.
    """
    height = height or _height(bars, scale)
    numbered = len(bars) <= MAX_LABELLED_BARS
    kinds: dict[str, list[int]] = {"bar": [], "partial": [], "withheld": []}
    for i, figure in enumerate(bars):
        kind = "withheld" if figure.value is None else "partial" if figure.at_least else "bar"
        kinds[kind].append(i)
    styles: dict[str, dict[str, Any]] = {
        "bar": {"color": RELEASED_COLOUR},
        "partial": {
            "color": "#a9c1dc",
            "edgecolor": RELEASED_COLOUR,
            "hatch": "..",
            "linewidth": 0.8,
        },
        "withheld": {
            "color": "none",
            "edgecolor": WITHHELD_COLOUR,
            "hatch": "///",
            "linewidth": 0.8,
        },
    }
    for kind, indexes in kinds.items():
        if not indexes:
            continue
        tops = [height if kind == "withheld" else bars[i].value or 0 for i in indexes]
        for i, patch in zip(indexes, ax.bar(indexes, tops, **styles[kind]), strict=True):
            patch.set_gid(f"{prefix}-{kind}-{i}")
    for i, figure in enumerate(bars):
        if figure.value is None:
            label = ax.text(
                i,
                height / 2,
                SUPPRESSED,
                rotation=90,
                ha="center",
                va="center",
                color="#555555",
                fontsize=8,
            )
            label.set_gid(f"{prefix}-label-{i}")
            continue
        top = figure.value
        interval = figure.interval(scale)
        if interval is not None:
            low, high = interval
            (whisker,) = ax.plot(
                [i - 0.15, i + 0.15, GAP, i, i, GAP, i - 0.15, i + 0.15],
                [low, low, GAP, low, high, GAP, high, high],
                color="#222222",
                linewidth=1,
            )
            whisker.set_gid(f"{prefix}-interval-{i}")
            top = high
        if numbered:
            label = ax.text(i, top, _bar_label(figure), ha="center", va="bottom", fontsize=7)
            label.set_gid(f"{prefix}-label-{i}")
    ax.set_xlim(-0.6, len(bars) - 0.4)
    ax.set_ylim(0, height * 1.1)
    ax.spines[["top", "right"]].set_visible(False)


def upset_svg(found: ReportFigures) -> str:
    """An UpSet plot: one bar per membership pattern, the patterns as a dot matrix below."""
    patterns = found.patterns()
    datasets = found.datasets
    width = max(4.0, 1.2 + 0.42 * len(patterns))
    with _canvas(width, 2.6 + 0.3 * len(datasets)) as canvas:
        bars_ax, matrix_ax = canvas.subplots(
            2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 0.35 * len(datasets) + 0.3]}
        )
        _bars(bars_ax, [p.figure for p in patterns], found.scale, "upset")
        bars_ax.set_ylabel("base rows")
        bars_ax.tick_params(axis="x", bottom=False, labelbottom=False)
        # One collection each for the dots in and out and for the lines: a report of eight
        # datasets has 128 patterns, and an artist per dot would draw slowly.
        dots: dict[bool, tuple[list[int], list[int]]] = {True: ([], []), False: ([], [])}
        spans: tuple[list[int], list[int], list[int]] = ([], [], [])
        for i, pattern in enumerate(patterns):
            members = [0, *(1 + found.others.index(o) for o in pattern.matched)]
            for row in range(len(datasets)):
                dots[row in members][0].append(i)
                dots[row in members][1].append(row)
            for part, value in zip(spans, (i, min(members), max(members)), strict=True):
                part.append(value)
        for inside, colour in ((False, "#dddddd"), (True, "#222222")):
            matrix_ax.scatter(*dots[inside], s=40, color=colour, zorder=2)
        matrix_ax.vlines(*spans, color="#222222", linewidth=1.5)
        matrix_ax.set_yticks(range(len(datasets)), [found.who(d) for d in datasets])
        matrix_ax.set_ylim(len(datasets) - 0.5, -0.5)
        matrix_ax.tick_params(axis="x", bottom=False, labelbottom=False)
        for side in ("top", "right", "bottom", "left"):
            matrix_ax.spines[side].set_visible(False)
        return _svg(canvas)


def venn_regions(found: ReportFigures) -> dict[str, Figure]:
    """The Venn regions of a 2- or 3-dataset report, by matplotlib-venn's region ids.

    Regions inside the base are its membership patterns (summed over segments). Regions
    outside it are estimated by inclusion-exclusion from the other datasets' sizes and
    pairwise counts, with the base's both-matched cell standing in for the rows the two
    others share with the base (rows of different datasets: close, not equal), floored at
    zero; each says so in its `source`.
    """
    cells = {p.matched: p.figure for p in found.patterns()}
    others = found.others
    base = found.report.base_dataset
    if len(others) == 1:
        (o,) = others
        return {
            "10": cells[()],
            "11": cells[(o,)],
            "01": difference(
                [found.size(o)],
                [found.pair(o, base)],
                f"estimated: rows of {short(o)} minus its rows matching {short(base)}",
            ),
        }
    o1, o2 = others
    both = cells[(o1, o2)]

    def only(x: str, y: str) -> Figure:
        return difference(
            [found.size(x), both],
            [found.pair(x, base), found.pair(x, y)],
            f"estimated: rows of {short(x)} - those matching {short(base)} - those matching"
            f" {short(y)} + base rows matching both",
        )

    return {
        "100": cells[()],
        "110": cells[(o1,)],
        "101": cells[(o2,)],
        "111": both,
        "010": only(o1, o2),
        "001": only(o2, o1),
        "011": difference(
            [found.pair(o1, o2)],
            [both],
            f"estimated: rows of {short(o1)} matching {short(o2)} - base rows matching both",
        ),
    }


def venn_svg(found: ReportFigures) -> str | None:
    """An area-proportional Venn diagram of the base and its 1 or 2 others; None for more.

    A withheld region is drawn at the size of the threshold, hatched and labelled
    "suppressed": its true size is not known, so its area says nothing.
    """
    if len(found.others) not in (1, 2):
        return None
    from matplotlib_venn import venn2, venn3  # noqa: PLC0415 (heavy: only when drawn)

    regions = venn_regions(found)
    nominal = max(1, found.threshold)
    areas = {k: float(f.value if f.value is not None else nominal) for k, f in regions.items()}
    if not any(areas.values()):
        return None
    labels = tuple(found.who(d) for d in found.datasets)
    with _canvas(5.5, 4.2) as canvas:
        ax = canvas.subplots()
        draw: Any = venn2 if len(labels) == 2 else venn3
        with warnings.catch_warnings():
            # Three circles cannot show every set of seven areas exactly: matplotlib-venn
            # warns and draws its closest fit, which the caption says it is.
            warnings.filterwarnings("ignore", "Bad circle positioning", UserWarning)
            warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
            diagram = draw(subsets=areas, set_labels=labels, ax=ax)
        for region, figure in regions.items():
            patch = diagram.get_patch_by_id(region)
            if patch is not None:
                patch.set_gid(f"venn-region-{region}")
                if figure.value is None:
                    patch.set_hatch("///")
                    patch.set_facecolor("none")
                    patch.set_edgecolor(WITHHELD_COLOUR)
                elif figure.at_least:
                    patch.set_hatch("..")
            label = diagram.get_label_by_id(region)
            if label is None:
                continue
            interval = figure.interval(found.scale)
            text = _bar_label(figure)
            if interval is not None:
                text += f"\n({interval[0]:,}-{interval[1]:,})"
            label.set_text(text)
            label.set_fontsize(7)
            label.set_gid(f"venn-label-{region}")
        for i, letter in enumerate("ABC"[: len(labels)]):
            set_label = diagram.get_label_by_id(letter)
            if set_label is not None:
                set_label.set_gid(f"venn-set-{i}")
        return _svg(canvas, tight=True)


def heatmap_svg(found: ReportFigures) -> str:
    """The pairwise matrix as a heat map: the match rate of each row's dataset in each column's."""
    import numpy as np  # noqa: PLC0415

    datasets = found.datasets
    n = len(datasets)
    rates = np.full((n, n), np.nan)
    for i, x in enumerate(datasets):
        for j, y in enumerate(datasets):
            numerator, denominator = found.pair(x, y), found.size(x)
            if i != j and numerator.value is not None and denominator.value:
                rates[i, j] = min(1.0, numerator.value / denominator.value)
    side = max(3.2, 1.6 + 0.9 * n)
    with _canvas(side + 1.2, side) as canvas:
        ax = canvas.subplots()
        image = ax.imshow(np.ma.masked_invalid(rates), cmap="Blues", vmin=0, vmax=1)
        canvas.colorbar(image, ax=ax, label="match rate", shrink=0.8)
        for i, x in enumerate(datasets):
            for j, y in enumerate(datasets):
                if i == j:
                    continue
                figure = found.pair(x, y)
                if figure.value is None:
                    patch = ax.add_patch(
                        _rectangle((j - 0.5, i - 0.5), hatch="///", edgecolor=WITHHELD_COLOUR)
                    )
                    patch.set_gid(f"heatmap-withheld-{i}-{j}")
                    text = SUPPRESSED
                else:
                    text = f"{found.match_rate(x, y)}\n{figure.value:,}"
                dark = not np.isnan(rates[i, j]) and rates[i, j] > 0.6
                label = ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "#222222",
                )
                label.set_gid(f"heatmap-cell-{i}-{j}")
        names = [found.who(d) for d in datasets]
        ax.set_xticks(range(n), names, rotation=30, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_xlabel("matched against")
        ax.set_ylabel("rows of")
        return _svg(canvas)


def _rectangle(corner: tuple[float, float], **style: Any) -> Any:
    from matplotlib.patches import Rectangle  # noqa: PLC0415

    return Rectangle(corner, 1, 1, facecolor="none", linewidth=0.5, **style)


def segments_svg(found: ReportFigures) -> str | None:
    """The segment split as small multiples: the membership bars of each segment value."""
    if not found.report.segment_column:
        return None
    segments = found.segments
    patterns_count = 2 ** len(found.others)
    columns = min(3 if patterns_count <= 4 else 2 if patterns_count <= 8 else 1, len(segments))
    rows = -(-len(segments) // columns)
    patterns = found.patterns()
    width = max(2.6, 0.35 * len(patterns) + 1.2)
    with _canvas(width * columns, 2.3 * rows + 0.4) as canvas:
        axes = canvas.subplots(rows, columns, squeeze=False, sharey=True)
        split = []
        for segment in segments:
            by_pattern = {p.matched: p.figure for p in found.patterns(segment)}
            split.append([by_pattern.get(p.matched, Figure(None, SUPPRESSED)) for p in patterns])
        height = max(_height(bars, found.scale) for bars in split)
        for index, (segment, bars) in enumerate(zip(segments, split, strict=True)):
            ax = axes[index // columns][index % columns]
            _bars(ax, bars, found.scale, f"segment-{index}", height)
            ax.set_title(segment or "(none)", fontsize=9).set_gid(f"segment-{index}-title")
            if len(patterns) <= MAX_LABELLED_BARS:
                ax.set_xticks(
                    range(len(patterns)),
                    [_short_pattern(p, found.others) for p in patterns],
                    rotation=90,
                    fontsize=6,
                )
            else:
                ax.set_xticks([])
        for index in range(len(segments), rows * columns):
            axes[index // columns][index % columns].set_visible(False)
        canvas.supylabel("base rows")
        return _svg(canvas)


def _short_pattern(pattern: Pattern, others: Sequence[str]) -> str:
    if not pattern.matched:
        return "none"
    return "+".join(str(1 + others.index(o)) for o in pattern.matched)


__all__ = ["heatmap_svg", "segments_svg", "upset_svg", "venn_regions", "venn_svg"]
