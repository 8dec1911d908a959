"""The HTML report of a real report, opened in headless Chromium and read back from its DOM.

A three-way report with noise, split by a segment with Thai and Vietnamese labels, comes
from the real server; `cleanroom-partner report html` writes it; Chromium loads the file
with no network; the test counts each chart's bars and labels in the DOM, checks that a
withheld cell is drawn as suppressed (a hatched shape labelled "suppressed", no number, no
bar), and takes a screenshot. `UPDATE_DOCS=1` copies the screenshot to docs/, where the
README shows it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from partners.cli import main
from partners.figures import Figure, ReportFigures
from tests.chromium import chromium_or_skip, open_page
from tests.integration.test_partner_cli import env_for
from tests.support import (
    COLLABORATION,
    RunningServer,
    dataset_name,
    digest_array,
    random_digests,
    running_server,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
DOCS = Path(__file__).resolve().parents[2] / "docs"
SEGMENTS = ("ลูกค้าทอง", "Khách hàng bạc")
# One identifier type keeps the sensitivity at 6; epsilon 6 gives a noise scale near 1, so
# that the empty cells (true count 0) stay below k = 10 but for a chance of about 1e-4.
NOISE = {"noise": True, "epsilon_budget": 30.0, "epsilon_per_report": 6.0}  # a brand gets 1/3


def _label(figure: Figure) -> str:
    """How a chart labels a figure: the count, a lower bound, or "suppressed"."""
    if figure.value is None:
        return "suppressed"
    return f"≥ {figure.value:,}" if figure.at_least else f"{figure.value:,}"


def _upload(server: RunningServer, tmp_path: Path, brand: str, ids: list[int]) -> str:
    pool = random_digests(np.random.default_rng(7), 1200)
    path = write_digest_file(
        tmp_path / f"{brand}.parquet",
        {"email": digest_array(pool[ids])},
        {"tier": [SEGMENTS[i % 2] for i in ids]},
    )
    dataset_id = f"{brand}-customers"
    server.client(brand).upload(path, dataset_id=dataset_id)
    return dataset_name(dataset_id)


@pytest.fixture
def noisy_server(pki, tmp_path: Path):  # type: ignore[no-untyped-def]
    with running_server(pki, tmp_path / "data", **NOISE) as running:
        yield running


@pytest.mark.slow
def test_the_html_report_in_a_real_browser(noisy_server: RunningServer, tmp_path: Path) -> None:
    chromium_or_skip()
    server = noisy_server
    base = _upload(server, tmp_path, "acme", list(range(600)))
    brightmart = _upload(server, tmp_path, "brightmart", list(range(300, 900)))
    # Corvid also holds 30 persons of acme and brightmart, all in the first segment: the
    # cell "in both" is released there and withheld (empty) in the second.
    corvid = _upload(
        server, tmp_path, "corvid", [*range(200), *range(300, 360, 2), *range(800, 1100)]
    )
    report = server.client("acme").create_report(
        PARENT, base=base, others=[brightmart, corvid], segment_column="tier"
    )
    assert report.HasField("noise")
    page_file = tmp_path / "report.html"
    result = CliRunner().invoke(
        main, ["report", "html", report.name, "--out", str(page_file)], env=env_for(server, "acme")
    )
    assert result.exit_code == 0, result.output
    html = page_file.read_text(encoding="utf-8")
    # Self-contained: nothing to fetch, and a policy that forbids fetching anything.
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|@import|url\((?!#)", html)
    assert "default-src 'none'" in html

    found = ReportFigures(report)
    patterns = found.patterns()
    partial = [i for i, p in enumerate(patterns) if p.figure.at_least]
    withheld = [i for i, p in enumerate(patterns) if p.figure.value is None]
    assert partial == [3], "the cell in both others is withheld in one segment only"

    with open_page(page_file.as_uri(), tmp_path / "profile") as page:
        dom = page.evaluate(_READ_DOM)
        shot = page.screenshot(tmp_path / "report.png")
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_DOCS") == "1":
        shutil.copy(shot, DOCS / "html-report.png")

    assert dom["resources"] == 0  # the browser loaded nothing besides the file
    assert sorted(dom["charts"]) == ["heatmap", "segments", "upset", "venn"]
    assert all(chart["width"] > 200 for chart in dom["charts"].values())

    # UpSet: one bar or one hatched placeholder per pattern, each with one label.
    upset = dom["ids"]["upset"]
    assert len(upset["bar"]) + len(upset["withheld"]) + len(upset["partial"]) == len(patterns)
    assert len(patterns) == 4
    assert sorted(upset["withheld"]) == withheld
    assert sorted(upset["partial"]) == partial
    assert len(upset["interval"]) == len(upset["bar"])  # a whisker on every released bar
    for i, pattern in enumerate(patterns):
        assert dom["labels"][f"upset-label-{i}"] == _label(pattern.figure)

    # Venn: seven regions for three datasets, the withheld ones labelled, never numbered.
    venn = {k: v for k, v in dom["labels"].items() if k.startswith("venn-label-")}
    assert 1 <= len(venn) <= 7
    assert dom["labels"]["venn-label-111"] == _label(patterns[3].figure)  # a lower bound
    assert dom["labels"]["venn-label-111"].startswith("≥ ")
    assert [dom["labels"][f"venn-set-{i}"] for i in range(3)] == [
        "acme-customers (acme)", "brightmart-customers (brightmart)", "corvid-customers (corvid)",
    ]  # fmt: skip

    # Heat map: a cell for every ordered pair of the three datasets.
    cells = {k: v for k, v in dom["labels"].items() if k.startswith("heatmap-cell-")}
    assert len(cells) == 6
    for key, text in cells.items():
        i, j = (int(n) for n in key.rsplit("-", 2)[1:])
        pair = found.pair(found.datasets[i], found.datasets[j])
        if pair.value is None:
            assert text == "suppressed"
            assert f"heatmap-withheld-{i}-{j}" in dom["all_ids"]
        else:
            assert f"{pair.value:,}" in text

    # Small multiples: one chart per segment, titled with its label, four bars each.
    assert sorted(found.segments) == sorted(SEGMENTS)
    for s, segment in enumerate(found.segments):
        assert dom["labels"][f"segment-{s}-title"] == segment
        bars = [k for k in dom["all_ids"] if re.fullmatch(rf"segment-{s}-(bar|withheld)-\d+", k)]
        assert len(bars) == 4
        for i, pattern in enumerate(found.patterns(segment)):
            label = dom["labels"][f"segment-{s}-label-{i}"]
            assert (label == "suppressed") == (pattern.figure.value is None)
            if pattern.figure.value is not None:
                assert label == f"{pattern.figure.value:,}"
    segment_withheld = [k for k in dom["all_ids"] if re.fullmatch(r"segment-\d-withheld-\d", k)]
    assert segment_withheld, "the empty cell of the second segment is withheld"

    # No withheld shape anywhere carries a number.
    for key in dom["all_ids"]:
        if "-withheld-" in key:
            label_key = key.replace("-withheld-", "-label-")
            if label_key in dom["labels"]:
                assert not re.search(r"\d", dom["labels"][label_key]), (key, label_key)
    # The tables say the same: withheld cells read "suppressed", in the suppressed style.
    assert dom["suppressed_cells"]
    assert all(t.startswith("suppressed") for t in dom["suppressed_cells"])


_READ_DOM = """
(() => {
  const charts = {};
  for (const figure of document.querySelectorAll('figure[data-chart]')) {
    const svg = figure.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0};
    charts[figure.dataset.chart] = {width: box.width};
  }
  const all_ids = [...document.querySelectorAll('svg [id]')].map(e => e.id);
  const labels = {};
  for (const id of all_ids) {
    const texts = [...document.getElementById(id).querySelectorAll('text')];
    if (texts.length) labels[id] = texts.map(t => t.textContent.trim()).join('\\n');
  }
  const ids = {upset: {bar: [], withheld: [], partial: [], interval: []}};
  for (const id of all_ids) {
    const m = id.match(/^upset-(bar|withheld|partial|interval)-(\\d+)$/);
    if (m && !ids.upset[m[1]].includes(+m[2])) ids.upset[m[1]].push(+m[2]);
  }
  return {
    charts, all_ids, labels, ids,
    resources: performance.getEntriesByType('resource').length,
    suppressed_cells: [...document.querySelectorAll('td.suppressed')].map(e => e.textContent.trim()),
  };
})()
"""


def test_tables_list_and_spreadsheets_from_the_real_server(
    server: RunningServer, tmp_path: Path
) -> None:
    from openpyxl import load_workbook

    base = _upload(server, tmp_path, "acme", list(range(400)))
    other = _upload(server, tmp_path, "brightmart", list(range(100, 405)))
    report = server.client("acme").create_report(
        PARENT, base=base, others=[other], segment_column="tier"
    )
    env = {**env_for(server, "acme"), "COLUMNS": "160"}

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    table = run("report", "get", report.name)
    assert "acme-customers (acme)" in table  # short id with its owner
    assert "brightmart-customers (brightmart)" in table
    assert "collaborations/" not in table.split("\n", 1)[1]  # short ids in the tables
    assert "exact (your upload)" in table
    assert "┃" not in table  # piped: plain text
    listed = run("report", "list", f"--collaboration={COLLABORATION}")
    for words in ("base", "others", "segment", "mode", "epsilon", "tier", "exact"):
        assert words in listed

    wide = run("report", "get", report.name, "--csv", "wide").splitlines()
    assert wide[0] == (
        "tier,acme-customers,brightmart-customers,base_rows,interval_low,interval_high,share,"
        "suppression"
    )
    assert len(wide) == 1 + 2 * 2  # two segments, two patterns each
    # Exact mode: no intervals; every row says yes for the base and yes/no for the other.
    for row in wide[1:]:
        fields = row.split(",")
        assert fields[1] == "yes"
        assert fields[2] in ("yes", "no")
        assert fields[4:6] == ["", ""]
    long_form = run("report", "get", report.name, "--csv").splitlines()
    assert long_form[0].startswith("figure,")

    refused = CliRunner().invoke(main, ["report", "get", report.name, "--format", "xlsx"], env=env)
    assert refused.exit_code == 2
    assert "add --out FILE" in refused.output

    book_path = tmp_path / "report.xlsx"
    assert "wrote" in run("report", "get", report.name, "--format", "xlsx", "--out", str(book_path))
    book = load_workbook(book_path, read_only=True)
    assert book.sheetnames == ["Facts", "Datasets", "Pairwise", "Membership"]
    membership = list(book["Membership"].iter_rows(values_only=True))
    assert [str(v) for v in membership[0]] == wide[0].split(",")
    assert len(membership) == len(wide)
    datasets = list(book["Datasets"].iter_rows(values_only=True))
    assert datasets[1][0] == "acme-customers"
    assert datasets[1][6] == 400  # the exact size of acme's own upload
    book.close()
