"""The released report: figures after the privacy rules, as stored and returned.

Exact counts (`cleanroom.matching.question.ExactOverlap`) never leave the server: only an
`OverlapReport`, made from them by `cleanroom.privacy.release`, is stored and returned.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cleanroom.matching.question import OverlapQuestion
from cleanroom.names import DatasetName, OverlapReportName


class SuppressionReason(enum.StrEnum):
    """That a count is withheld: one mark, whatever the cause (SPEC section 5).

    A reason that told "below the threshold" from "withheld to protect another count"
    would give the analyst a range for the count, so there is only one.
    """

    SUPPRESSED = "SUPPRESSED"


@dataclass(frozen=True)
class ReleasedCount:
    """A count as released: its value (with its noise and 95% interval), or suppressed.

    `noise_scale` is the discrete Laplace scale of a noisy count (0 when exact), and
    `interval` the 95% interval around the value, set only for noisy released counts.
    """

    value: int | None
    suppression: SuppressionReason | None = None
    noise_scale: float = 0.0
    interval: tuple[int, int] | None = None

    @classmethod
    def suppressed(cls) -> ReleasedCount:
        """A suppressed count."""
        return cls(None, SuppressionReason.SUPPRESSED)

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "value": self.value,
            "suppression": self.suppression,
            "noise_scale": self.noise_scale,
            "interval": list(self.interval) if self.interval else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReleasedCount:
        """Reads the stored form (reports stored before one mark read as suppressed)."""
        if data["value"] is None:
            return cls.suppressed()
        interval = data.get("interval")
        return cls(
            data["value"],
            None,
            data.get("noise_scale", 0.0),
            (int(interval[0]), int(interval[1])) if interval else None,
        )


@dataclass(frozen=True)
class DatasetSize:
    """The released size of one dataset of a report."""

    dataset: DatasetName
    row_count: ReleasedCount


@dataclass(frozen=True)
class MembershipCell:
    """The base rows (of one segment) matching exactly the datasets in `matched`."""

    segment: str | None
    matched: tuple[DatasetName, ...]
    base_row_count: ReleasedCount


@dataclass(frozen=True)
class PairwiseOverlap:
    """The rows of `dataset` that match some row of `matched_dataset`.

    `match_rate` comes from released counts only; when it is above the collaboration's
    cap, it is the cap and `match_rate_capped` is set.
    """

    dataset: DatasetName
    matched_dataset: DatasetName
    matched_row_count: ReleasedCount
    match_rate: float | None
    match_rate_capped: bool = False


@dataclass(frozen=True)
class NoiseParameters:
    """The noise of a report: an L1 sensitivity, the epsilon spent, the Laplace scale."""

    sensitivity: int
    epsilon: float
    scale: float
    mechanism: str = "discrete_laplace"


@dataclass(frozen=True)
class OverlapReport:
    """One released report: aggregate figures only, exactly as stored and returned."""

    name: OverlapReportName
    question: OverlapQuestion
    creator: str
    create_time: datetime
    minimum_threshold: int
    dataset_sizes: tuple[DatasetSize, ...]
    membership_cells: tuple[MembershipCell, ...]
    pairwise_overlaps: tuple[PairwiseOverlap, ...]
    noise: NoiseParameters | None = None
    fingerprint: str = ""
    inputs: tuple[tuple[DatasetName, datetime], ...] = ()
    withheld_segments: tuple[str, ...] = ()

    def released_counts(self) -> list[ReleasedCount]:
        """Every count of the report."""
        return [
            *(s.row_count for s in self.dataset_sizes),
            *(c.base_row_count for c in self.membership_cells),
            *(p.matched_row_count for p in self.pairwise_overlaps),
        ]

    @property
    def released_count(self) -> int:
        """How many counts carry a value."""
        return sum(c.value is not None for c in self.released_counts())

    @property
    def suppressed_count(self) -> int:
        """How many counts are suppressed."""
        return sum(c.value is None for c in self.released_counts())

    def to_json(self) -> str:
        """The stored form: canonical JSON."""
        q = self.question
        data = {
            "name": str(self.name),
            "base": str(q.base),
            "others": [str(o) for o in q.others],
            "segment_column": q.segment_column,
            "creator": self.creator,
            "create_time": self.create_time.isoformat(),
            "minimum_threshold": self.minimum_threshold,
            "sizes": [[str(s.dataset), s.row_count.to_json()] for s in self.dataset_sizes],
            "cells": [
                [c.segment, [str(m) for m in c.matched], c.base_row_count.to_json()]
                for c in self.membership_cells
            ],
            "pairwise": [
                [
                    str(p.dataset),
                    str(p.matched_dataset),
                    p.matched_row_count.to_json(),
                    p.match_rate,
                    p.match_rate_capped,
                ]
                for p in self.pairwise_overlaps
            ],
            "noise": vars(self.noise) if self.noise else None,
            "fingerprint": self.fingerprint,
            "inputs": [[str(n), created.isoformat()] for n, created in self.inputs],
            "withheld_segments": list(self.withheld_segments),
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> OverlapReport:
        """Reads the stored form."""
        data = json.loads(text)
        return cls(
            name=OverlapReportName.parse(data["name"]),
            question=OverlapQuestion(
                base=DatasetName.parse(data["base"]),
                others=tuple(DatasetName.parse(o) for o in data["others"]),
                segment_column=data["segment_column"],
            ),
            creator=data["creator"],
            create_time=datetime.fromisoformat(data["create_time"]),
            minimum_threshold=data["minimum_threshold"],
            dataset_sizes=tuple(
                DatasetSize(DatasetName.parse(d), ReleasedCount.from_json(c))
                for d, c in data["sizes"]
            ),
            membership_cells=tuple(
                MembershipCell(
                    segment,
                    tuple(DatasetName.parse(m) for m in matched),
                    ReleasedCount.from_json(count),
                )
                for segment, matched, count in data["cells"]
            ),
            pairwise_overlaps=tuple(
                PairwiseOverlap(
                    DatasetName.parse(x),
                    DatasetName.parse(y),
                    ReleasedCount.from_json(c),
                    rate,
                    capped,
                )
                for x, y, c, rate, capped in data["pairwise"]
            ),
            noise=NoiseParameters(**data["noise"]) if data["noise"] else None,
            fingerprint=data["fingerprint"],
            inputs=tuple(
                (DatasetName.parse(n), datetime.fromisoformat(c)) for n, c in data["inputs"]
            ),
            withheld_segments=tuple(data.get("withheld_segments", ())),
        )
