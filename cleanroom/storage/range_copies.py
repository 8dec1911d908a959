"""The prefix-range copies of committed datasets, for engines whose executors read files.

With the Spark engine, each committed dataset also has a copy split by digest-prefix range
at the configured location (`cleanroom.matching.ranges`), written before the dataset
becomes visible and removed with it, by `DatasetFiles`.
"""

from __future__ import annotations

import logging

import pyarrow as pa

from cleanroom.errors import UnavailableError
from cleanroom.matching.engine import DatasetTable
from cleanroom.matching.ranges import RangeLocation, copy_key, write_ranges
from cleanroom.storage.refusals import storage_refusal

log = logging.getLogger(__name__)


class RangeCopies:
    """The copies under one location, each split into `ranges` prefix ranges."""

    def __init__(self, location: str, ranges: int) -> None:
        self.uri = location
        self.location = RangeLocation.parse(location)
        self.ranges = ranges
        self.location.filesystem.create_dir(self.location.root, recursive=True)

    def write(self, dataset: DatasetTable) -> None:
        """Writes the copy of a committed dataset, whole or not at all.

        Raises:
            UnavailableError: The location cannot be written (or ResourceExhaustedError:
                it is full); nothing of the copy is left.
        """
        key = copy_key(dataset.file_name)
        try:
            write_ranges(dataset, self.location, key, self.ranges)
        except (OSError, pa.ArrowException) as error:
            log.error("could not write the range copy of %s: %s", dataset.name, error)
            self._delete_quietly(key)
            raise storage_refusal(error) or UnavailableError(
                "COPY_LOCATION_UNAVAILABLE",
                "The server could not write the matching engine's copy of the dataset, so"
                " nothing was stored. Try again later; the operator's log has the error.",
            ) from None
        except BaseException:
            self._delete_quietly(key)
            raise

    def _delete_quietly(self, key: str) -> None:
        try:
            self.location.delete(key)
        except (OSError, pa.ArrowException) as error:  # the location is broken: left to start
            log.error("could not remove the partial range copy %s: %s", key, error)

    def has(self, file_name: str) -> bool:
        """Whether the dataset committed as `file_name` has a complete copy."""
        return self.location.manifest(copy_key(file_name)) is not None

    def delete(self, file_name: str) -> None:
        """Removes the copy of the dataset committed as `file_name`, every file of it."""
        self.location.delete(copy_key(file_name))

    def remove_orphans(self, keep: set[str]) -> list[str]:
        """Removes the copies of datasets not in `keep` (file names); returns their paths."""
        wanted = {copy_key(name) for name in keep}
        removed = []
        for key in self.location.stored_keys():
            if key not in wanted:
                self.location.delete(key)
                removed.append(self.location.path(key))
        return removed
