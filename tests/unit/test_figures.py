"""The figures every view shows: exact 95% intervals of the noise, shares, sources."""

from __future__ import annotations

import numpy as np
import pytest
from opendp.accuracy import discrete_laplacian_scale_to_accuracy

from partners import figures
from partners.figures import Figure, ReportFigures, noise_half_width
from tests.report_samples import EXACT_SIZES, OWNERS, dataset, sample_report


@pytest.mark.parametrize("scale", [0.3, 0.5, 1.0, 2.0, 2.5, 3.3, 10.0, 100.0, 1234.5])
def test_one_noise_interval_is_opendps_accuracy(scale: float) -> None:
    # OpenDP's accuracy a is where P(|noise| >= a) = 5%: the whole a below it is ours.
    accuracy = discrete_laplacian_scale_to_accuracy(scale, 0.05)
    assert noise_half_width(scale) == int(np.ceil(accuracy)) - 1


def _brute_force_sum(scale: float, terms: int) -> int:
    """The same half-width by direct convolution of the probabilities, term after term."""
    t = np.exp(-1 / scale)
    reach = int(scale * 40) + 5
    x = np.arange(-reach, reach + 1)
    one = (1 - t) / (1 + t) * t ** np.abs(x)
    total = one
    for _ in range(terms - 1):
        total = np.convolve(total, one)
    middle = len(total) // 2
    for a in range(middle + 1):
        if total[middle - a : middle + a + 1].sum() >= 0.95:
            return a
    raise AssertionError("no quantile")


@pytest.mark.parametrize(("scale", "terms"), [(0.5, 2), (1.0, 3), (2.0, 4), (2.5, 7), (4.0, 16)])
def test_sums_of_noises_have_the_exact_interval(scale: float, terms: int) -> None:
    assert noise_half_width(scale, terms) == _brute_force_sum(scale, terms)


def test_intervals_grow_with_the_figures_terms_and_stop_at_zero() -> None:
    assert noise_half_width(2.0, 16) > noise_half_width(2.0, 4) > noise_half_width(2.0)
    assert Figure(3, terms=1).interval(2.0) == (0, 3 + noise_half_width(2.0))
    assert Figure(100, terms=0).interval(2.0) is None  # exact
    assert Figure(None, "suppressed", 1).interval(2.0) is None
    assert Figure(100).interval(None) is None


def test_shares_are_over_released_cells_and_say_so() -> None:
    found = ReportFigures(sample_report())
    segment = found.segments[0]
    patterns = found.patterns(segment)
    shares, note = found.shares(patterns)
    released = [p.figure.value for p in patterns if p.figure.value is not None]
    assert len(released) == len(patterns) - 1
    assert [s.text for s in shares].count(figures.SUPPRESSED) == 1
    assert "1 cell withheld" in note
    assert f"{sum(released):,}" in note
    # The released shares add up to 100% (to the rounding of one decimal each).
    total = sum(float(s.text.rstrip("%")) for s in shares if s.text != figures.SUPPRESSED)
    assert abs(total - 100) <= 0.05 * len(released)


def test_a_two_way_share_equals_the_match_rate() -> None:
    # As the server releases a noisy report: the base's size and its matched rows are the
    # sums of its cells, so the share of "in the other only" and the match rate are one
    # figure, and the one rounding rule shows them alike (not 17.0% beside 16.5%).
    report = sample_report(others=("brightmart-crm",), segments=())
    cells = {tuple(c.matched_datasets): c.base_row_count.value for c in report.membership_cells}
    base, other = report.base_dataset, report.other_datasets[0]
    report.dataset_sizes[0].row_count.value = sum(cells.values())
    for pair in report.pairwise_overlaps:
        if pair.dataset == base:
            pair.matched_row_count.value = cells[(other,)]
    found = ReportFigures(report)
    patterns = found.patterns()
    shares, _ = found.shares(patterns)
    share = next(s for p, s in zip(patterns, shares, strict=True) if p.matched)
    assert share.text == found.match_rate(base, other) == "56.8%"


def test_a_sum_with_a_withheld_part_is_a_lower_bound_never_a_guess() -> None:
    found = ReportFigures(sample_report())
    overall = {p.matched: p.figure for p in found.patterns()}
    partial = [f for f in overall.values() if f.at_least]
    assert len(partial) == 2  # each sums one released segment; the other is withheld
    for figure in partial:
        assert figure.interval(found.scale) is None
        assert "at least" in figure.source
    by_segment = {s: {p.matched: p.figure for p in found.patterns(s)} for s in found.segments}
    for matched, figure in overall.items():
        parts = [cells[matched].value for cells in by_segment.values()]
        assert figure.value == sum(v for v in parts if v is not None)
    complete = [f for f in overall.values() if not f.at_least]
    assert all(f.terms == 2 and "sum over 2 segments" in f.source for f in complete)
    # Nothing derived from a bound: the Venn regions that need one are withheld.
    assert figures.difference([partial[0]], [], "x").value is None
    assert figures.total([Figure(None), Figure(None)], "x").value is None


def test_owners_and_exact_sizes() -> None:
    found = ReportFigures(sample_report(), OWNERS, EXACT_SIZES)
    assert found.who(dataset("acme-crm")) == "acme-crm (acme)"
    assert found.who(dataset("corvid-app-users")) == "corvid-app-users"
    base = found.size(dataset("acme-crm"))
    assert base.terms == len(found.report.membership_cells)
    assert base.source == "sum of the membership cells"
    assert found.match_rate(dataset("acme-crm"), dataset("corvid-app-users")) == "21.5%"


def test_very_wide_sums_use_the_normal_quantile_which_agrees_with_the_exact_one() -> None:
    # Below the switch (exact convolution) and above it (normal): a sum's half-width grows
    # with the square root of its terms, to well within 1% across the switch.
    exact, normal = noise_half_width(1000.0, 150), noise_half_width(1000.0, 250)
    assert normal / exact == pytest.approx((250 / 150) ** 0.5, rel=0.01)
    assert noise_half_width(1e6, 1000) > 0  # a tiny epsilon still gets an interval at once
