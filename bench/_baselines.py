"""The plain baselines each figure stands beside, measured in the same run on the same files."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import ipc

from bench._data import DIGEST_BYTES, SEGMENT, Dataset


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


# What a user would do with DuckDB or Polars ---------------------------------------------


@dataclass
class Prepared:
    """One dataset as a user would prepare it once, before any report (not timed).

    The same idea as our sort at upload: per identifier type, the rows holding a digest,
    sorted by its first 8 bytes read as a big-endian unsigned integer (`p`), with the
    digest (`d`, 32 bytes) and the row (`row`).
    """

    name: str
    rows: int
    by_type: dict[str, pa.Table]
    tiers: pa.Array | None


@dataclass
class Overlap:
    """A baseline's figures: the seconds it took and the counts it found."""

    seconds: float
    pairwise: dict[tuple[str, str], int]
    cells: dict[tuple[str, frozenset[str]], int]


def prepare(datasets: Sequence[Dataset], *, segment: bool) -> list[Prepared]:
    """Reads the digests files and sorts each type by prefix (what precedes every report)."""
    prepared = []
    for dataset in datasets:
        table = pq.read_table(dataset.path)
        by_type = {}
        for identifier_type in dataset.types:
            column = table.column(identifier_type).combine_chunks()
            rows = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False))
            data = np.frombuffer(column.buffers()[1], dtype=np.uint8).reshape(-1, DIGEST_BYTES)
            digests = data[column.offset : column.offset + len(column)][rows]
            keys = np.ascontiguousarray(digests[:, :8]).view(">u8").reshape(-1).astype(np.uint64)
            order = np.argsort(keys, kind="stable")
            by_type[identifier_type] = pa.table(
                {
                    "p": keys[order],
                    "d": pa.FixedSizeBinaryArray.from_buffers(
                        pa.binary(DIGEST_BYTES),
                        len(order),
                        [None, pa.py_buffer(np.ascontiguousarray(digests[order]).data)],
                    ),
                    "row": rows[order].astype(np.uint32),
                }
            )
        tiers = table.column(SEGMENT).combine_chunks().cast(pa.string()) if segment else None
        prepared.append(Prepared(dataset.name, dataset.rows, by_type, tiers))
    return prepared


def polars_overlap(datasets: Sequence[Prepared]) -> Overlap:
    """Polars: per type and pair, an inner join on the sorted prefixes, confirmed on `d`.

    The fastest exact formulation found: the prefixes flagged sorted (a sorted-merge join
    on a 64-bit key), then a filter on the 32-byte digests; a row matches another
    dataset when it does so over any type (`n_unique` of the matched rows over types).
    Pattern cells: the base's matched rows as bits, grouped with the segment by Polars.
    """
    import polars as pl  # noqa: PLC0415 (a benchmark's optional dependency)

    frames = {
        (k, t): cast("pl.DataFrame", pl.from_arrow(table)).with_columns(pl.col("p").set_sorted())
        for k, d in enumerate(datasets)
        for t, table in d.by_type.items()
    }
    tiers = None if datasets[0].tiers is None else pl.from_arrow(datasets[0].tiers)
    started = time.perf_counter()
    matched: dict[tuple[int, int], list[pl.Series]] = {}
    for (x, t), left in frames.items():
        for (y, u), right in frames.items():
            if u != t or y <= x:
                continue
            joined = (
                left.join(right, on="p", how="inner")
                .filter(pl.col("d") == pl.col("d_right"))
                .select("row", "row_right")
            )
            matched.setdefault((x, y), []).append(joined["row"])
            matched.setdefault((y, x), []).append(joined["row_right"])
    counts = {
        pair: len(rows[0]) if len(rows) == 1 else pl.concat(rows).n_unique()
        for pair, rows in matched.items()
    }
    pattern = np.zeros(datasets[0].rows, dtype=np.int64)
    for y in range(1, len(datasets)):
        for rows in matched.get((0, y), []):
            pattern[rows.to_numpy()] |= 1 << (y - 1)
    frame = pl.DataFrame({"pattern": pattern})
    if tiers is not None:
        frame = frame.with_columns(tier=tiers)
    grouped = frame.group_by(frame.columns).len()
    seconds = time.perf_counter() - started
    return _overlap(datasets, seconds, counts, grouped.rows(named=True))


def duckdb_overlap(datasets: Sequence[Prepared], threads: int) -> Overlap:
    """DuckDB: every dataset's rows of a type in one table, joined with itself once.

    The fastest exact formulation found: per type, a self-join of the union on the
    32-byte digest across datasets (a hash join on the BLOB beat one on the prefix and
    the digest, and one on the prefix filtered by the digest); each row's matched
    datasets as a bitmask (`bit_or`), then the pairwise counts and the base's cells
    from those masks. For a single pair of one type, a plain join count (every digest
    is in one row of each).
    Tables are loaded into DuckDB first (not timed).
    """
    import duckdb  # noqa: PLC0415 (a benchmark's optional dependency)

    db = duckdb.connect(config={"threads": threads})
    types = list(dict.fromkeys(t for d in datasets for t in d.by_type))
    for number, identifier_type in enumerate(types):
        parts = []
        for k, dataset in enumerate(datasets):
            if identifier_type in dataset.by_type:
                db.register(f"arrow_{k}", dataset.by_type[identifier_type])
                parts.append(f"SELECT {k}::UTINYINT AS ds, row, p, d FROM arrow_{k}")  # noqa: S608 (table numbers only)
        db.execute(f"CREATE TABLE type_{number} AS {' UNION ALL '.join(parts)}")
        for k in range(len(datasets)):
            db.unregister(f"arrow_{k}")
    if datasets[0].tiers is not None:
        db.register("tiers_arrow", pa.table({"tier": datasets[0].tiers}))
        db.execute(
            "CREATE TABLE tiers AS SELECT row_number() OVER () - 1 AS row, tier FROM tiers_arrow"
        )
    started = time.perf_counter()
    if len(datasets) == 2 and len(types) == 1:
        (found,) = db.execute(
            "SELECT count(*) FROM type_0 a JOIN type_0 b ON a.d = b.d AND a.ds = 0 AND b.ds = 1"
        ).fetchone()
        counts = {(0, 1): found, (1, 0): found}
        base = [{"pattern": 1, "len": found}, {"pattern": 0, "len": datasets[0].rows - found}]
    else:
        pairs = " UNION ALL ".join(
            f"SELECT a.ds AS x, a.row, b.ds AS y FROM type_{n} a JOIN type_{n} b"  # noqa: S608 (table numbers only)
            " ON a.p = b.p AND a.d = b.d AND a.ds <> b.ds"
            for n in range(len(types))
        )
        db.execute(
            f"CREATE TEMP TABLE masks AS SELECT x, row, bit_or(1::BIGINT << y) AS m"  # noqa: S608 (table numbers only)
            f" FROM ({pairs}) GROUP BY x, row"
        )
        counts = {}
        for x, y, found in db.execute(
            "SELECT x, y.y, count(*) FROM masks, range(0, ?) y(y)"
            " WHERE (m >> y.y) & 1 = 1 GROUP BY x, y.y",
            [len(datasets)],
        ).fetchall():
            counts[int(x), int(y)] = int(found)
        segment = datasets[0].tiers is not None
        base = [
            {"pattern": int(pattern), "len": int(found), **({"tier": tier} if segment else {})}
            for pattern, found, tier in db.execute(
                "SELECT coalesce(m, 0) >> 1, count(*), "  # noqa: S608 (table numbers only)
                + ("t.tier" if segment else "NULL")
                + " FROM "
                + ("tiers t" if segment else "range(0, ?) t(row)")
                + " LEFT JOIN (SELECT row, m FROM masks WHERE x = 0) s ON s.row = t.row"
                " GROUP BY ALL",
                [] if segment else [datasets[0].rows],
            ).fetchall()
        ]
    seconds = time.perf_counter() - started
    db.close()
    return _overlap(datasets, seconds, counts, base)


def _overlap(
    datasets: Sequence[Prepared],
    seconds: float,
    counts: dict[tuple[int, int], int],
    base: list[dict[str, Any]],
) -> Overlap:
    """A baseline's figures keyed as `ExpectedReport`'s: names and sets of other names."""
    names = [d.name for d in datasets]
    pairwise = {
        (names[x], names[y]): counts.get((x, y), 0)
        for x, y in itertools.permutations(range(len(names)), 2)
    }
    cells: dict[tuple[str, frozenset[str]], int] = {}
    for cell in base:
        matched = frozenset(names[1 + b] for b in range(len(names) - 1) if cell["pattern"] >> b & 1)
        key = (cell.get("tier") or "", matched)
        cells[key] = cells.get(key, 0) + int(cell["len"])
    return Overlap(seconds, pairwise, cells)
