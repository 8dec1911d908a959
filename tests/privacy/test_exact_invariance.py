"""Over random worlds, exact mode's refusals and withheld segments read the analyst's side only.

Each example draws acme's base dataset (rows shared with others or not, a segment column
whose values hold from 1 to 60 rows, so some fall below k), a question (one to three
other datasets, by segment or not, sometimes naming one of acme's own datasets), and two
versions of brightmart's dataset that differ only in their rows (both at least the
minimum size: a dataset below it reads as a missing one, see test_probes). The same
question is asked against each version, on the real server. Whether it is refused (and
how), and which segment values of the base are withheld, must be the same.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom.v1 import overlap_report_pb2
from tests.privacy.attack import World, fresh
from tests.support import RunningServer

_ids = itertools.count()
LABELS = ("gold", "silver", "bronze", "tin")


def _view(seen: object) -> tuple[object, ...]:
    """The parts of an answer that may not depend on brightmart's rows."""
    if isinstance(seen, tuple):  # refused: the whole refusal, minus the dataset names
        return ("refused", seen[1], seen[2])
    report = overlap_report_pb2.OverlapReport.FromString(seen)  # type: ignore[arg-type]
    segments = sorted({c.segment for c in report.membership_cells})
    return ("released", tuple(report.withheld_segments), tuple(segments))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    segment_sizes=st.lists(st.integers(1, 60), min_size=1, max_size=4),
    shared=st.integers(0, 80),
    others=st.integers(1, 3),
    by_segment=st.booleans(),
    own_other=st.booleans(),
    changed=st.integers(1, 40),
)
@pytest.mark.slow
def test_refusals_and_withheld_segments_do_not_depend_on_another_brands_rows(
    server: RunningServer,
    tmp_path: Path,
    *,
    seed: int,
    segment_sizes: list[int],
    shared: int,
    others: int,
    by_segment: bool,
    own_other: bool,
    changed: int,
) -> None:
    rng = np.random.default_rng(seed)
    world = World(server, tmp_path, member=True)
    pool = fresh(rng, 200)
    rows = [pool[i] for i in rng.choice(200, size=shared, replace=False)]
    rows += fresh(rng, max(sum(segment_sizes) - len(rows), 0) + 10)
    tiers = [t for t, n in zip(LABELS, segment_sizes, strict=False) for _ in range(n)]
    tiers += ["gold"] * (len(rows) - len(tiers))
    base = world.upload("acme", rows, tiers, dataset_id=f"acme-base-{next(_ids)}")
    # brightmart's two versions: the same list, then some rows swapped for others.
    first = [pool[i] for i in rng.choice(200, size=120, replace=False)] + fresh(rng, 30)
    second = first[changed:] + [pool[i] for i in rng.choice(200, size=changed)]
    second = list(dict.fromkeys(second)) + fresh(rng, changed)
    # The rest of the question is the same datasets in both worlds (uploaded twice, so
    # that each world's question is its first over them).
    corvid = [pool[i] for i in rng.choice(200, size=80, replace=False)] + fresh(rng, 20)
    mine = fresh(rng, 50) + rows[:30]
    answers = []
    for version in (first, second):
        asked = [world.upload("brightmart", version, dataset_id=f"brightmart-{next(_ids)}")]
        if others >= 2:
            asked.append(world.upload("corvid", corvid, dataset_id=f"corvid-{next(_ids)}"))
        if others >= 3 or own_other:
            owner = "acme" if own_other else "brightmart"
            asked.append(world.upload(owner, mine, dataset_id=f"{owner}-{next(_ids)}"))
        answers.append(_view(world.report("acme", base, asked, "tier" if by_segment else None)))
    assert answers[0] == answers[1]
    if own_other:
        assert answers[0][:2] == ("refused", "FAILED_PRECONDITION")
    elif by_segment:
        small = tuple(sorted(t for t in set(tiers) if tiers.count(t) < 10))  # k = 10
        assert answers[0][1] == small
