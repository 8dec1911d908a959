"""What an attacking partner does in these tests: upload crafted audiences, ask reports."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa

from tests.support import RunningServer, dataset_name, write_digest_file

_names = itertools.count()


def upload(
    server: RunningServer,
    brand: str,
    tmp_path: Path,
    digests: list[bytes],
    segments: list[str] | None = None,
) -> str:
    """Uploads one email-digest dataset for `brand` and returns its name."""
    dataset_id = f"{brand}-{next(_names)}"
    columns = {"email": pa.array(digests, pa.binary(32))}
    path = write_digest_file(
        tmp_path / f"{dataset_id}.parquet", columns, {"tier": segments} if segments else None
    )
    server.client(brand).upload(path, dataset_id=dataset_id)
    return dataset_name(dataset_id)


def fresh(rng: np.random.Generator, count: int) -> list[bytes]:
    """`count` new random digests."""
    return [bytes(row) for row in rng.integers(0, 256, size=(count, 32), dtype=np.uint8)]
