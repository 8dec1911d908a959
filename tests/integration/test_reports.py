"""Report counts over the real server equal an independent brute force with Python sets.

Every test here runs twice: on the in-memory engine and on the Spark engine (local[2]).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import overlap_report_pb2
from tests.support import (
    COLLABORATION,
    RunningServer,
    dataset_name,
    random_digests,
    running_server,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
SUPPRESSED = overlap_report_pb2.SUPPRESSION_REASON_SUPPRESSED
TYPES = ("email", "phone")
TIERS = ("bronze", "silver", "gold", None)


@pytest.fixture(params=["memory", pytest.param("spark", marks=pytest.mark.slow)])
def server(request: pytest.FixtureRequest, pki: DemoPki, tmp_path: Path) -> Iterator[RunningServer]:
    """A real server matching in memory, or on Spark with its copies under `tmp_path`."""
    engine = {}
    if request.param == "spark":
        spark = request.getfixturevalue("spark_engine")
        copies = {"location": str(tmp_path / "ranges"), "ranges": 8, "driver_rows": 0}
        engine = {"engine": {**spark, **copies}}  # every question on Spark, however small
    with running_server(pki, tmp_path / "data", server=engine) as running:
        yield running


def make_dataset(
    rng: np.random.Generator, pool: dict[str, np.ndarray], rows: int, types: tuple[str, ...]
):
    """Rows that draw each type's digest from a shared pool (so datasets overlap), or omit it."""
    columns = {}
    present_any = np.zeros(rows, dtype=bool)
    picks = {}
    for t in types:
        index = rng.choice(len(pool[t]), size=rows, replace=False)
        present = rng.random(rows) < 0.8
        picks[t] = [bytes(pool[t][i]) if p else None for i, p in zip(index, present, strict=True)]
        present_any |= present
    keep = np.flatnonzero(present_any)
    for t in types:
        columns[t] = [picks[t][i] for i in keep]
    segment = [TIERS[i] for i in rng.integers(0, len(TIERS), size=len(keep))]
    return columns, segment


def brute_force(datasets: list[dict[str, list[bytes | None]]]) -> dict[str, object]:
    """Sizes, membership cells (by segment) and pairwise counts, computed with sets."""
    sets = [{t: {v for v in cols[t] if v is not None} for t in cols} for cols in datasets]

    def row_matches(cols: dict[str, list], row: int, other: int) -> bool:
        return any(
            cols[t][row] is not None and cols[t][row] in sets[other].get(t, ()) for t in cols
        )

    sizes = [len(next(iter(cols.values()))) for cols in datasets]
    pairwise = {
        (x, y): sum(row_matches(datasets[x], r, y) for r in range(sizes[x]))
        for x, y in itertools.permutations(range(len(datasets)), 2)
    }
    patterns = [
        tuple(row_matches(datasets[0], r, o) for o in range(1, len(datasets)))
        for r in range(sizes[0])
    ]
    return {"sizes": sizes, "pairwise": pairwise, "patterns": patterns}


@pytest.mark.parametrize("others", [1, 2, 3])
def test_report_equals_brute_force(server: RunningServer, tmp_path: Path, others: int) -> None:
    rng = np.random.default_rng(others)
    pool = {t: np.unique(random_digests(rng, 3000), axis=0) for t in TYPES}
    # Exact reports compare the base with other brands' datasets only.
    brands = ("acme", "brightmart", "corvid", "brightmart")[: others + 1]
    data, segments, names = [], [], []
    for i, brand in enumerate(brands):
        types = TYPES if i % 2 == 0 else TYPES[::-1][: 1 + i % 2]
        rows = int(rng.integers(800, 1600))
        columns, segment = make_dataset(rng, pool, rows, types)
        data.append(columns)
        segments.append(segment)
        path = write_digest_file(
            tmp_path / f"d{i}.parquet",
            {t: pa.array(columns[t], type=pa.binary(32)) for t in types},
            {"tier": segment},
        )
        dataset_id = f"{brand}-audience-{i}"
        server.client(brand).upload(path, dataset_id=dataset_id)
        names.append(dataset_name(dataset_id))

    report = server.client("acme").create_report(
        PARENT, base=names[0], others=names[1:], segment_column="tier"
    )
    truth = brute_force(data)
    k = report.minimum_threshold
    assert k == 10

    def expect(value: int, released) -> None:
        if value < k or not released.HasField("value"):
            # Below k, or withheld so that no count below k can be worked out: one mark.
            assert not released.HasField("value")
            assert released.suppression_reason == SUPPRESSED
        else:
            assert released.value == value

    for size, expected in zip(report.dataset_sizes, truth["sizes"], strict=True):
        expect(expected, size.row_count)
    index = {n: i for i, n in enumerate(names)}
    assert len(report.pairwise_overlaps) == len(names) * (len(names) - 1)
    for pair in report.pairwise_overlaps:
        expected = truth["pairwise"][index[pair.dataset], index[pair.matched_dataset]]
        expect(expected, pair.matched_row_count)
    cells: dict[tuple[str, tuple[bool, ...]], int] = {}
    for tier, pattern in zip(segments[0], truth["patterns"], strict=True):
        key = (tier or "", pattern)
        cells[key] = cells.get(key, 0) + 1
    # Tiers of fewer than k base rows are withheld, by the base's own rows alone.
    tier_sizes: dict[str, int] = {}
    for tier in segments[0]:
        tier_sizes[tier or ""] = tier_sizes.get(tier or "", 0) + 1
    withheld = sorted(t for t, n in tier_sizes.items() if n < k)
    assert list(report.withheld_segments) == withheld
    assert len(report.membership_cells) == (4 - len(withheld)) * 2**others
    for cell in report.membership_cells:
        pattern = tuple(n in cell.matched_datasets for n in names[1:])
        expect(cells.get((cell.segment, pattern), 0), cell.base_row_count)
    assert server.client("acme").get_report(report.name) == report


VENN_REGIONS = list(itertools.product([False, True], repeat=3))[1:]  # membership in (A, B, C)
region_sizes = st.lists(st.integers(0, 30), min_size=len(VENN_REGIONS), max_size=7)
_uploads = itertools.count()
PADDING = 30


# On Spark every report and difference check is a Spark job (about a second on this
# shared machine), and the checks grow with the datasets uploaded: fewer examples there.
EXAMPLES = {"memory": 25, "spark": 4}


def test_no_count_below_threshold_is_released(server: RunningServer, tmp_path: Path) -> None:
    """Venn regions of random small sizes around k: no released count is ever below k."""

    @settings(
        max_examples=EXAMPLES[server.config.server.engine.kind],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(sizes=region_sizes, split=st.booleans())
    def check(sizes: list[int], split: bool) -> None:
        no_count_below_threshold(server, tmp_path, sizes, split)

    check()


def no_count_below_threshold(
    server: RunningServer, tmp_path: Path, sizes: list[int], split: bool
) -> None:
    rng = np.random.default_rng(next(_uploads))  # fresh digests: no near-duplicate datasets
    rows: list[list[bytes]] = [[], [], []]
    tiers: list[str] = []
    for region, size in zip(VENN_REGIONS, sizes, strict=True):
        for digest in random_digests(rng, size):
            for member, dataset_rows in zip(region, rows, strict=True):
                if member:
                    dataset_rows.append(bytes(digest))
            if region[0]:
                tiers.append(str(rng.choice(["x", "y"])))
    names = []
    for i, (brand, dataset_rows) in enumerate(
        zip(("acme", "brightmart", "corvid"), rows, strict=True)
    ):
        # Unmatched rows: every dataset reaches the minimum size, and the base is large
        # enough that withholding its unmatched rows can hide the rest.
        padding = [bytes(d) for d in random_digests(rng, PADDING)]
        values = dataset_rows + padding
        segment = {"tier": (tiers + ["x"] * PADDING) if i == 0 else ["x"] * len(values)}
        path = write_digest_file(
            tmp_path / f"{next(_uploads)}.parquet",
            {"email": pa.array(values, pa.binary(32))},
            segment,
        )
        dataset_id = f"{brand}-{next(_uploads)}"
        server.client(brand).upload(path, dataset_id=dataset_id)
        names.append(dataset_name(dataset_id))
    # Exact mode never refuses for what the data holds: that would itself be an answer.
    report = server.client("acme").create_report(
        PARENT, base=names[0], others=names[1:], segment_column="tier" if split else None
    )
    counts = [
        *(s.row_count for s in report.dataset_sizes),
        *(c.base_row_count for c in report.membership_cells),
        *(p.matched_row_count for p in report.pairwise_overlaps),
    ]
    for count in counts:
        if count.HasField("value"):
            assert count.value >= report.minimum_threshold
        else:
            assert count.suppression_reason == SUPPRESSED
    assert report.released_count + report.suppressed_count == len(counts)
    # The pairwise count of A against B is the planted A∩B regions, exactly or suppressed.
    a_b = sum(s for r, s in zip(VENN_REGIONS, sizes, strict=True) if r[0] and r[1])
    first = report.pairwise_overlaps[0]
    assert (first.dataset, first.matched_dataset) == (names[0], names[1])
    if first.matched_row_count.HasField("value"):
        assert first.matched_row_count.value == a_b
    else:
        assert first.matched_row_count.suppression_reason == SUPPRESSED
