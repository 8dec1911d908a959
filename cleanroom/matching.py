"""Exact deterministic matching of digest datasets (SPEC section 4).

`Matcher` is the seam: the report path asks it for an `ExactOverlap` and knows nothing of
how it is computed, so an out-of-core or distributed engine can take over. `ArrowMatcher`
works in memory on Arrow columns with hash-based set membership, with no per-row Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from cleanroom.names import DatasetName
from cleanroom.overlap import ExactOverlap, OverlapQuestion

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class DatasetTable:
    """The rows of one committed dataset: digest columns by type and segment columns."""

    name: DatasetName
    table: pa.Table
    identifier_types: tuple[str, ...]
    segment_columns: tuple[str, ...]

    @property
    def row_count(self) -> int:
        """The number of rows."""
        return int(self.table.num_rows)


class Matcher(Protocol):
    """Computes the exact counts of a question over the datasets it names."""

    def overlap(
        self, question: OverlapQuestion, tables: Mapping[DatasetName, DatasetTable]
    ) -> ExactOverlap:
        """The exact counts of `question`; `tables` holds every dataset it names."""
        ...


class ArrowMatcher:
    """Matches in memory with Arrow's hash-based `is_in`, one column pair at a time."""

    def matches(self, rows_of: DatasetTable, against: DatasetTable) -> BoolArray:
        """For each row of `rows_of`, whether some row of `against` shares a digest of a type."""
        matched = np.zeros(rows_of.row_count, dtype=np.bool_)
        for identifier_type in rows_of.identifier_types:
            if identifier_type not in against.identifier_types:
                continue
            found = pc.is_in(
                rows_of.table.column(identifier_type),
                value_set=against.table.column(identifier_type),
                skip_nulls=True,
            )
            matched |= found.to_numpy(zero_copy_only=False).astype(np.bool_, copy=False)
        return matched

    def overlap(
        self, question: OverlapQuestion, tables: Mapping[DatasetName, DatasetTable]
    ) -> ExactOverlap:
        """The exact counts of `question` (see `ExactOverlap`)."""
        base = tables[question.base]
        masks = np.zeros(base.row_count, dtype=np.int64)
        for bit, other in enumerate(question.others):
            masks |= self.matches(base, tables[other]).astype(np.int64) << bit
        patterns = 1 << len(question.others)
        labels, codes = _segment_codes(base, question.segment_column)
        counts = np.bincount(codes * patterns + masks, minlength=len(labels) * patterns)
        cells = {
            (label, mask): int(counts[i * patterns + mask])
            for i, label in enumerate(labels)
            for mask in range(patterns)
        }
        pairwise = {
            (x, y): int(np.count_nonzero(self.matches(tables[x], tables[y])))
            for x, y in question.ordered_pairs()
        }
        sizes = {d: tables[d].row_count for d in question.datasets}
        return ExactOverlap(question=question, sizes=sizes, cells=cells, pairwise=pairwise)


def _segment_codes(
    base: DatasetTable, segment_column: str | None
) -> tuple[list[str | None], npt.NDArray[np.int64]]:
    """The segment labels (sorted, None for rows without a value) and each row's label index."""
    if segment_column is None:
        return [None], np.zeros(base.row_count, dtype=np.int64)
    column = base.table.column(segment_column).combine_chunks()
    encoded = cast(
        "pa.DictionaryArray[Any, Any]", pc.dictionary_encode(column, null_encoding="encode")
    )
    dictionary: list[str | None] = encoded.dictionary.to_pylist()
    labels = sorted(dictionary, key=lambda v: (v is not None, v or ""))
    position = {label: i for i, label in enumerate(labels)}
    remap = np.array([position[v] for v in dictionary], dtype=np.int64)
    indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return labels, remap[indices] if len(remap) else indices
