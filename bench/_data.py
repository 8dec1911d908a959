"""Synthetic digest datasets whose overlaps are known by construction.

A universe of people each has random 32-byte digests (one per identifier type, so no two
people share one); a dataset is a set of people, each with some of their digests. Which
rows match is then a question about people, answered here with NumPy on person numbers,
independently of the digests the server matches (`expected_report`).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from bench._world import COLLABORATION, KCV
from partners.preparation import pipeline as preparation

TIERS = ("bronze", "silver", "gold", "platinum")
SEGMENT = "tier"
DIGEST_BYTES = 32


@dataclass
class Universe:
    """The people and their digests, one (people, 32) byte matrix per identifier type."""

    digests: dict[str, npt.NDArray[np.uint8]]

    @classmethod
    def random(cls, rng: np.random.Generator, people: int, types: tuple[str, ...]) -> Universe:
        """`people` people with a random digest of each type."""
        return cls(
            {
                t: np.frombuffer(rng.bytes(people * DIGEST_BYTES), dtype=np.uint8).reshape(
                    people, DIGEST_BYTES
                )
                for t in types
            }
        )

    @property
    def people(self) -> int:
        """How many people there are."""
        return len(next(iter(self.digests.values())))


@dataclass
class Dataset:
    """One generated dataset: who is in it, which digests each row carries, and its file."""

    dataset_id: str
    brand: str
    path: Path
    people: npt.NDArray[np.int64]
    present: dict[str, npt.NDArray[np.bool_]]
    tiers: npt.NDArray[np.int8] | None = None
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"collaborations/{COLLABORATION}/datasets/{self.dataset_id}"

    @property
    def rows(self) -> int:
        """The dataset's rows."""
        return len(self.people)

    @property
    def types(self) -> tuple[str, ...]:
        """Its identifier types."""
        return tuple(self.present)


def pair(
    directory: Path, rows: int, rng: np.random.Generator, brands: tuple[str, str]
) -> tuple[Dataset, Dataset]:
    """Two one-type datasets of `rows` rows each, half of each in the other."""
    universe = Universe.random(rng, rows + rows // 2, ("email",))
    first = rng.permutation(rows)
    second = rng.permutation(np.arange(rows // 2, rows // 2 + rows))
    datasets = []
    for brand, people in zip(brands, (first, second), strict=True):
        dataset = Dataset(
            f"{brand}-pair-{rows}",
            brand,
            directory / f"{brand}-pair-{rows}.parquet",
            people,
            {"email": np.ones(rows, dtype=np.bool_)},
        )
        write(dataset, universe)
        datasets.append(dataset)
    return datasets[0], datasets[1]


def group(
    directory: Path, rows: int, rng: np.random.Generator, brands: tuple[str, ...]
) -> list[Dataset]:
    """Datasets of `rows` rows with emails (90%) and phones (70%) and a segment column.

    Each is a random half of a universe of twice `rows` people, so every pair overlaps
    by about half.
    """
    universe = Universe.random(rng, 2 * rows, ("email", "phone"))
    datasets = []
    for brand in brands:
        people = rng.choice(universe.people, size=rows, replace=False)
        email = rng.random(rows) < 0.9
        phone = rng.random(rows) < 0.7
        email |= ~phone  # every row carries at least one digest
        dataset = Dataset(
            f"{brand}-group-{rows}",
            brand,
            directory / f"{brand}-group-{rows}.parquet",
            people,
            {"email": email, "phone": phone},
            rng.integers(0, len(TIERS), size=rows, dtype=np.int8),
        )
        write(dataset, universe)
        datasets.append(dataset)
    return datasets


def write(dataset: Dataset, universe: Universe) -> None:
    """Writes the dataset's digests file as `cleanroom-partner prepare` does (its metadata)."""
    columns: dict[str, pa.Array[Any]] = {}
    for identifier_type, present in dataset.present.items():
        values = universe.digests[identifier_type][dataset.people]
        validity = None
        if not present.all():
            validity = pa.py_buffer(np.packbits(present, bitorder="little").data)
        columns[identifier_type] = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(DIGEST_BYTES),
            dataset.rows,
            [validity, pa.py_buffer(values.data)],
            null_count=int(dataset.rows - present.sum()),
        )
    segments = []
    if dataset.tiers is not None:
        columns[SEGMENT] = pa.DictionaryArray.from_arrays(
            pa.array(dataset.tiers), pa.array(TIERS)
        ).cast(pa.string())
        segments.append(SEGMENT)
    metadata = {
        preparation.META_FORMAT: preparation.DIGEST_FORMAT.encode(),
        preparation.META_COLLABORATION: COLLABORATION.encode(),
        preparation.META_KEY_CHECK_VALUE: KCV.encode(),
        preparation.META_IDENTIFIER_TYPES: json.dumps(list(dataset.present)).encode(),
        preparation.META_SEGMENT_COLUMNS: json.dumps(segments).encode(),
    }
    table = pa.table(columns).replace_schema_metadata(metadata)
    pq.write_table(
        table,
        dataset.path,
        row_group_size=preparation.ROW_GROUP_ROWS,
        compression="none",  # digests do not compress
        use_dictionary=[SEGMENT] if segments else False,
        write_statistics=False,
    )


# What a report must say -------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedReport:
    """The exact figures of a report: sizes, pairwise counts and membership cells."""

    sizes: dict[str, int]
    pairwise: dict[tuple[str, str], int]
    cells: dict[tuple[str, frozenset[str]], int]


def matched_rows(x: Dataset, y: Dataset, people: int) -> npt.NDArray[np.bool_]:
    """For each row of `x`, whether `y` has the same person with a digest of a type both hold."""
    found = np.zeros(x.rows, dtype=np.bool_)
    for identifier_type in set(x.types) & set(y.types):
        held = np.zeros(people, dtype=np.bool_)
        held[y.people[y.present[identifier_type]]] = True
        found |= x.present[identifier_type] & held[x.people]
    return found


def expected_report(
    base: Dataset, others: list[Dataset], people: int, *, segment: bool
) -> ExpectedReport:
    """The figures a report over these datasets must release, from person numbers alone."""
    datasets = [base, *others]
    pairwise = {
        (x.name, y.name): int(matched_rows(x, y, people).sum())
        for x, y in itertools.permutations(datasets, 2)
    }
    patterns = np.zeros(base.rows, dtype=np.int64)
    for bit, other in enumerate(others):
        patterns |= matched_rows(base, other, people).astype(np.int64) << bit
    labels = base.tiers if segment and base.tiers is not None else np.zeros(base.rows, np.int8)
    counts = Counter(zip(labels.tolist(), patterns.tolist(), strict=True))
    cells = {}
    for label, pattern in itertools.product(
        range(len(TIERS) if segment else 1), range(1 << len(others))
    ):
        matched = frozenset(o.name for bit, o in enumerate(others) if pattern >> bit & 1)
        cells[TIERS[label] if segment else "", matched] = counts.get((label, pattern), 0)
    return ExpectedReport({d.name: d.rows for d in datasets}, pairwise, cells)


def brute_force_report(base: Dataset, others: list[Dataset], *, segment: bool) -> ExpectedReport:
    """The same figures from the digests files themselves, with Python sets: slow, for samples."""
    datasets = [base, *others]
    tables = {d.name: pq.read_table(d.path).to_pydict() for d in datasets}
    types = {d.name: d.types for d in datasets}
    sets = {
        (name, t): {v for v in table[t] if v is not None}
        for name, table in tables.items()
        for t in types[name]
    }

    def row_matches(x: str, row: int, y: str) -> bool:
        return any(
            tables[x][t][row] is not None and tables[x][t][row] in sets.get((y, t), ())
            for t in types[x]
        )

    sizes = {d.name: d.rows for d in datasets}
    pairwise = {
        (x.name, y.name): sum(row_matches(x.name, r, y.name) for r in range(x.rows))
        for x, y in itertools.permutations(datasets, 2)
    }
    counted: Counter[tuple[str, frozenset[str]]] = Counter()
    for row in range(base.rows):
        matched = frozenset(o.name for o in others if row_matches(base.name, row, o.name))
        label = tables[base.name][SEGMENT][row] if segment else ""
        counted[label, matched] += 1
    subsets = [
        frozenset(c)
        for n in range(len(others) + 1)
        for c in itertools.combinations([o.name for o in others], n)
    ]
    labels = TIERS if segment else ("",)
    cells = {(label, s): counted.get((label, s), 0) for label in labels for s in subsets}
    return ExpectedReport(sizes, pairwise, cells)


def compare(report: Any, expected: ExpectedReport) -> list[str]:
    """The differences between a released report (protobuf) and the expected figures."""
    k = report.minimum_threshold
    problems = []

    def check(what: str, released: Any, value: int) -> None:
        if released.HasField("value"):
            if released.value != value:
                problems.append(f"{what}: released {released.value}, expected {value}")
        elif value >= k and released.suppression_reason == 0:
            problems.append(f"{what}: withheld without a reason, expected {value}")

    for size in report.dataset_sizes:
        check(f"size of {size.dataset}", size.row_count, expected.sizes[size.dataset])
    for pair in report.pairwise_overlaps:
        value = expected.pairwise[pair.dataset, pair.matched_dataset]
        check(f"{pair.dataset} in {pair.matched_dataset}", pair.matched_row_count, value)
    for cell in report.membership_cells:
        key = (cell.segment, frozenset(cell.matched_datasets))
        check(f"cell {key}", cell.base_row_count, expected.cells.get(key, 0))
    if len(report.membership_cells) != len(expected.cells):
        problems.append(
            f"{len(report.membership_cells)} cells released, {len(expected.cells)} expected"
        )
    return problems


def figures(report: Any) -> int:
    """How many counts a released report holds."""
    return len(report.dataset_sizes) + len(report.pairwise_overlaps) + len(report.membership_cells)
