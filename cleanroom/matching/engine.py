"""The seam between the report path and a matching engine.

`Matcher` computes the exact counts of a question; the report path knows nothing of how,
so that an out-of-core or distributed engine can take over (README, "Scaling").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from cleanroom.matching.question import ExactOverlap, OverlapQuestion
from cleanroom.names import DatasetName

BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.intp]
WordArray = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class DatasetTable:
    """The rows of one committed dataset: digest columns by type and segment columns.

    A table in the sorted layout (as `DatasetFiles.open` returns committed datasets)
    carries its sorted digests; any other table is sorted when it is matched.
    """

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

    def matches(self, rows_of: DatasetTable, against: DatasetTable) -> BoolArray:
        """For each row of `rows_of`, whether some row of `against` shares a digest of a type."""
        ...

    def overlap(
        self, question: OverlapQuestion, tables: Mapping[DatasetName, DatasetTable]
    ) -> ExactOverlap:
        """The exact counts of `question`; `tables` holds every dataset it names."""
        ...
