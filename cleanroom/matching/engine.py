"""The seam between the report path and a matching engine.

`Matcher` computes the exact counts of a question; the report path knows nothing of how,
so that an out-of-core or distributed engine can take over (README, "Scaling").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
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
    # The committed file the table was read from: engines that keep their own copy of
    # each dataset (`cleanroom.matching.ranges`) find it by this name.
    file_name: str = field(default="", compare=False)

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


class Cancellation:
    """Asks the work of one call to stop, for engines that can stop (a Spark job can).

    The service layer opens one per call that matches (`cancellable`) and cancels it when
    the call ends early; an engine registers, while it works, how to stop itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._stops: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        """Whether the call asked its work to stop."""
        return self._cancelled

    def cancel(self) -> None:
        """Stops the work registered now and any registered later."""
        with self._lock:
            self._cancelled = True
            stops, self._stops = self._stops, []
        for stop in stops:
            stop()

    @contextmanager
    def stopping_with(self, stop: Callable[[], None]) -> Iterator[None]:
        """Runs `stop` if the call is cancelled during the block (at once if it was)."""
        with self._lock:
            cancelled = self._cancelled
            if not cancelled:
                self._stops.append(stop)
        if cancelled:
            stop()
        try:
            yield
        finally:
            with self._lock:
                if stop in self._stops:
                    self._stops.remove(stop)


_CANCELLATION: ContextVar[Cancellation | None] = ContextVar("cancellation", default=None)


@contextmanager
def cancellable() -> Iterator[Cancellation]:
    """A cancellation for the matching done in this block, on this thread."""
    cancellation = Cancellation()
    token = _CANCELLATION.set(cancellation)
    try:
        yield cancellation
    finally:
        _CANCELLATION.reset(token)


def current_cancellation() -> Cancellation:
    """The cancellation of the call being served here (one that never fires, outside calls)."""
    return _CANCELLATION.get() or Cancellation()
