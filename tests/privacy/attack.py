"""What an attacking partner does in these tests: upload crafted audiences, ask reports.

An attack runs twice, in two worlds that differ only in another brand's rows (the target
person is in brightmart's list, or a stranger is in their place). What the attacker
observes must be the same in both: then nothing they saw told them which world it was.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cleanroom.tls.pki import DemoPki
from cleanroom.v1 import overlap_report_pb2
from partners.errors import ServerError
from tests.support import (
    COLLABORATION,
    RunningServer,
    dataset_name,
    running_server,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
_names = itertools.count()


def upload(
    server: RunningServer,
    brand: str,
    tmp_path: Path,
    digests: list[bytes],
    segments: list[str] | None = None,
    *,
    dataset_id: str | None = None,
) -> str:
    """Uploads one email-digest dataset for `brand` and returns its name."""
    return upload_columns(
        server,
        brand,
        tmp_path,
        {"email": digests},
        {"tier": segments} if segments else None,
        dataset_id=dataset_id,
    )


def upload_columns(
    server: RunningServer,
    brand: str,
    tmp_path: Path,
    columns: Mapping[str, Sequence[bytes | None]],
    segments: Mapping[str, Sequence[str | None]] | None = None,
    *,
    dataset_id: str | None = None,
) -> str:
    """Uploads a dataset of digest columns by type (None: no digest) and segment columns."""
    dataset_id = dataset_id or f"{brand}-{next(_names)}"
    path = write_digest_file(
        tmp_path / f"{dataset_id}-{next(_names)}.parquet",
        {t: pa.array(list(v), pa.binary(32)) for t, v in columns.items()},
        segments,
    )
    server.client(brand).upload(path, dataset_id=dataset_id)
    return dataset_name(dataset_id)


def fresh(rng: np.random.Generator, count: int) -> list[bytes]:
    """`count` new random digests."""
    return [bytes(row) for row in rng.integers(0, 256, size=(count, 32), dtype=np.uint8)]


@dataclass
class World:
    """One of the two worlds: a server, a scratch directory, and whether the target is in."""

    server: RunningServer
    tmp_path: Path
    member: bool

    def upload(self, brand: str, digests: list[bytes], segments: list[str] | None = None,
               *, dataset_id: str) -> str:  # fmt: skip
        return upload(self.server, brand, self.tmp_path, digests, segments, dataset_id=dataset_id)

    def report(self, brand: str, base: str, others: list[str], segment: str | None = None) -> Any:
        """What the attacker sees of one question: the report, or the refusal."""
        return observe(
            lambda: self.server.client(brand).create_report(
                PARENT, base=base, others=others, segment_column=segment
            )
        )


def observe(ask: Callable[[], overlap_report_pb2.OverlapReport]) -> Any:
    """A report without what differs between any two servers (its random name and time),
    or a refusal as the attacker reads it: code, reason, message and metadata."""
    try:
        report = ask()
    except ServerError as refused:
        return ("refused", refused.code, refused.reason, refused.message,
                sorted(refused.metadata.items()))  # fmt: skip
    report.ClearField("name")
    report.ClearField("create_time")
    return report.SerializeToString(deterministic=True)


def in_two_worlds(
    pki: DemoPki,
    tmp_path: Path,
    attack: Callable[[World], Any],
    *,
    collaboration: Mapping[str, Any] | None = None,
    **policy: Any,
) -> tuple[Any, Any]:
    """The attacker's observations in the world without the target, then with it."""
    seen = []
    for member in (False, True):
        where = tmp_path / ("with" if member else "without")
        where.mkdir()
        with running_server(pki, where / "data", collaboration=collaboration, **policy) as server:
            seen.append(attack(World(server, where, member)))
    return seen[0], seen[1]
