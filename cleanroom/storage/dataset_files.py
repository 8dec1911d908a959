"""The columnar files of committed datasets, one Arrow IPC file each, under the data directory.

A file reaches its final place only whole: it is written under `tmp/`, flushed to disk,
then renamed. Files that no catalog row names (left by a crash) are removed at start.

With the Spark engine, each committed dataset also gets a copy split by prefix range
(`RangeCopies`), written before `commit` returns and removed by `delete`.

Each file holds one record batch, so that every column is one contiguous buffer: opened
memory-mapped, a digest column is a NumPy view of the page cache, read by the matcher
without a copy (the layout of the rows is `cleanroom.matching.layout.sorted_layout`'s).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
from pyarrow import ipc

from cleanroom.matching.engine import DatasetTable
from cleanroom.names import DatasetName
from cleanroom.storage.range_copies import RangeCopies


class DatasetFiles:
    """The dataset files under `root/datasets` and the upload scratch space `root/tmp`."""

    def __init__(self, root: Path, copies: RangeCopies | None = None) -> None:
        self.copies = copies
        self.datasets_dir = root / "datasets"
        self.tmp_dir = root / "tmp"
        # Owner-only, whatever the umask: the files hold the brands' digests.
        self.datasets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def scratch_file(self, suffix: str) -> Path:
        """A fresh path under `tmp/` for a file being written."""
        return self.tmp_dir / f"{uuid.uuid4().hex}{suffix}"

    def commit(
        self,
        table: pa.Table,
        *,
        collaboration: str,
        dataset: str,
        identifier_types: tuple[str, ...] = (),
        segment_columns: tuple[str, ...] = (),
        matched: bool = True,
    ) -> str:
        """Writes `table` durably to its final place (and its range copy) and returns its name.

        The copy, when there are copies, needs the table's identifier types and segment
        columns; if it cannot be written, the file goes too. A table that no engine will
        match as it is (`matched` false: a double-blind dataset being masked) gets none.
        """
        file_name = f"{collaboration}--{dataset}--{uuid.uuid4().hex}.arrow"
        scratch = self.scratch_file(".arrow")
        try:
            with pa.OSFile(str(scratch), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table.combine_chunks(), max_chunksize=max(1, table.num_rows))
            scratch.chmod(0o600)
            _fsync(scratch)
            os.replace(scratch, self.datasets_dir / file_name)
            _fsync(self.datasets_dir)
        finally:
            scratch.unlink(missing_ok=True)
        if self.copies is not None and matched:
            name = DatasetName(collaboration, dataset)
            try:
                self.copies.write(
                    DatasetTable(name, table, identifier_types, segment_columns, file_name)
                )
            except BaseException:  # the copy removed what it wrote; the file goes too
                (self.datasets_dir / file_name).unlink(missing_ok=True)
                _fsync(self.datasets_dir)
                raise
        return file_name

    def open(self, file_name: str) -> pa.Table:
        """The table of a committed file, memory-mapped rather than read."""
        source = pa.memory_map(str(self.datasets_dir / file_name), "r")
        return ipc.open_file(source).read_all()

    def delete(self, file_name: str) -> None:
        """Removes a committed file, and its range copy (if it has one), for good."""
        (self.datasets_dir / file_name).unlink(missing_ok=True)
        _fsync(self.datasets_dir)
        if self.copies is not None:
            self.copies.delete(file_name)

    def remove_orphans(self, keep: set[str]) -> list[str]:
        """Removes scratch files and dataset files not in `keep`; returns what it removed."""
        removed = []
        for path in [*self.tmp_dir.iterdir(), *self.datasets_dir.iterdir()]:
            if path.parent == self.tmp_dir or path.name not in keep:
                path.unlink()
                removed.append(str(path))
        if self.copies is not None:
            removed.extend(self.copies.remove_orphans(keep))
        return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
