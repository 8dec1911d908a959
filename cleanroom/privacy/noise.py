"""Differential privacy noise for reports, from OpenDP: discrete Laplace on integer counts.

Noise is never hand-made: floating-point Laplace noise leaks through the low bits of its
output (Mironov 2012). OpenDP's integer Laplace mechanism samples the discrete Laplace
distribution exactly, and its privacy map states the epsilon that a given scale spends for
a given L1 sensitivity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import opendp.prelude as dp

from cleanroom.matching.question import OverlapQuestion
from cleanroom.names import DatasetName
from cleanroom.privacy.report import NoiseParameters

dp.enable_features("contrib")


def sensitivity(question: OverlapQuestion, types: Mapping[DatasetName, Sequence[str]]) -> int:
    """The largest L1 change one row of any input dataset makes to the noisy measurements.

    The measurements are the membership cells, the sizes of the other datasets, and the
    pairwise counts (X, Y) for X other than the base. Uploads keep each digest of a type in
    at most one row (SPEC section 3), so one row matches at most `shared(X, Y)` rows of Y,
    the number of identifier types X and Y share.

    A base row moves one cell by 1 and may newly match up to `shared` rows of each other
    dataset. A row of other dataset i changes its size by 1, moves up to `shared(base, i)`
    base rows from one cell to another (2 each), may itself match each of the n other
    datasets of the report, and may newly match up to `shared` rows of each other
    non-base dataset.
    """

    def shared(x: DatasetName, y: DatasetName) -> int:
        return len(set(types[x]) & set(types[y]))

    base, others = question.base, question.others
    worst = 1 + sum(shared(o, base) for o in others)
    for other in others:
        worst = max(
            worst,
            1
            + 2 * shared(base, other)
            + len(others)
            + sum(shared(o, other) for o in others if o != other),
        )
    return worst


@lru_cache(maxsize=256)
def calibrate(l1_sensitivity: int, epsilon: float) -> NoiseParameters:
    """The smallest discrete Laplace scale that OpenDP certifies spends at most `epsilon`."""
    scale = dp.binary_search_param(_measurement, d_in=l1_sensitivity, d_out=epsilon, T=float)
    return NoiseParameters(l1_sensitivity, epsilon, float(scale))


def _measurement(scale: float) -> Any:
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
    return space >> dp.m.then_laplace(scale=scale)


def add_noise(counts: Sequence[int], parameters: NoiseParameters) -> list[int]:
    """The counts with independent discrete Laplace noise of the parameters' scale."""
    measurement = _measurement(parameters.scale)
    if measurement.map(d_in=parameters.sensitivity) > parameters.epsilon * (1 + 1e-9):
        raise ValueError("the noise scale spends more than its epsilon")  # a bug, never input
    return [int(v) for v in measurement([int(c) for c in counts])]


def interval_half_width(scale: float, terms: int = 1, confidence: float = 0.95) -> int:
    """Half the width of the interval holding a noisy count's exact value with `confidence`.

    For one discrete Laplace draw of `scale`, P(|X| > t) = 2 q^(t+1) / (1 + q) with
    q = e^(-1/scale): the smallest such t is exact. For a sum of `terms` independent
    draws (a figure summed from noisy cells) it is the normal approximation with the
    sum's variance, and never less than one draw's.
    """
    q = math.exp(-1 / scale)
    miss = 1 - confidence
    single = max(math.ceil(math.log(miss * (1 + q) / 2) / math.log(q)) - 1, 0)
    if terms <= 1:
        return single
    variance = 2 * q / (1 - q) ** 2
    z = NormalDist().inv_cdf(1 - miss / 2)
    return max(single, math.ceil(z * math.sqrt(terms * variance)))
