"""The plain baselines each figure stands beside, measured in the same run on the same files."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import ipc

from bench._data import Dataset


def local_copy_seconds(source: Path, target: Path) -> float:
    """Reading the digests file and writing it as an Arrow IPC file, flushed to disk.

    What any upload must at least do on this machine, with no network, no TLS, no
    checks and no sorting: the floor an upload's time stands above.
    """
    started = time.perf_counter()
    table = pq.read_table(source)
    with pa.OSFile(str(target), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    descriptor = os.open(target, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def pandas_merge(x: Dataset, y: Dataset) -> tuple[float, int]:
    """The obvious implementation: a pandas merge of the two digest columns (Python bytes).

    Times the merge alone, not reading the files into pandas. Returns the seconds and
    the rows of `x` that found a row of `y` (each digest is in one row of each).
    """
    left = pq.read_table(x.path, columns=["email"]).to_pandas()
    right = pq.read_table(y.path, columns=["email"]).to_pandas()
    started = time.perf_counter()
    merged = left.merge(right, on="email", how="inner")
    seconds = time.perf_counter() - started
    return seconds, len(merged)


def hash_overlap(datasets: Sequence[Dataset]) -> tuple[float, dict[tuple[str, str], int]]:
    """The first implementation of the matcher: Arrow hash-set membership (`is_in`) per pair.

    For every ordered pair and every shared type, a hash table of one column and a probe
    with the other (C++ throughout), then per-row `or` over types. Times the matching
    alone, with the columns already in memory. Returns the seconds and the pairwise counts.
    """
    tables = {d.name: pq.read_table(d.path, columns=list(d.types)) for d in datasets}
    columns = {
        (d.name, t): tables[d.name].column(t).combine_chunks() for d in datasets for t in d.types
    }
    started = time.perf_counter()
    pairwise = {}
    for x, y in itertools.permutations(datasets, 2):
        found = np.zeros(x.rows, dtype=np.bool_)
        for identifier_type in x.types:
            if identifier_type not in y.types:
                continue
            member = pc.is_in(
                columns[x.name, identifier_type],
                value_set=columns[y.name, identifier_type],
                skip_nulls=True,
            )
            found |= member.to_numpy(zero_copy_only=False)
        pairwise[x.name, y.name] = int(found.sum())
    return time.perf_counter() - started, pairwise
