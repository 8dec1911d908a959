"""Normalizing and digesting the identifier columns of one batch.

Everything works on whole columns except the HMAC of each value, a Python call of about a
microsecond. `digest_batch` is what worker processes run (`partners.preparation._worker_pool`),
so its plan is plain picklable data, checked in the calling process before any work starts.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from partners.preparation import normalize
from partners.preparation._columns import (
    ColumnNormalizer,
    NormalizedColumn,
    column_normalizer_for,
)
from partners.preparation.digest import (
    MALFORMED_SHA256,
    decode_sha256_column,
    digest_column,
    digest_sha256_column,
)


@dataclass(frozen=True)
class ColumnPlan:
    """How one input column becomes one digest column.

    Attributes:
        identifier_type: The identifier type, which names the digest column.
        column: The input column.
        hashed: Whether the column holds SHA-256 hashes of normalized values (hex or base64)
            rather than raw values.
        key: The type key of the collaboration.
    """

    identifier_type: str
    column: str
    hashed: bool
    key: bytes = field(repr=False)  # a repr in a traceback must not show the type key


@dataclass(frozen=True)
class DigestPlan:
    """Everything a worker needs to digest batches: picklable, checked before work starts.

    Attributes:
        columns: The identifier columns, in the order of the digest columns.
        default_region: The region of phone numbers written without a country code.
        declared_types: The extra identifier types the collaboration declared.
        region_column: A column of each row's phone region (ISO 3166-1 alpha-2), or None.
    """

    columns: tuple[ColumnPlan, ...]
    default_region: str | None
    declared_types: tuple[str, ...]
    region_column: str | None = None

    def check(self) -> None:
        """Raise the `InputError` a worker would raise for an unknown type or region."""
        _normalizers(self.default_region, self.declared_types, self._raw_types())
        for column in self.columns:
            if column.hashed:  # no normalizer, but still a type the collaboration knows
                normalize.explainer_for(
                    column.identifier_type, default_region=None, declared_types=self.declared_types
                )

    def _raw_types(self) -> tuple[str, ...]:
        return tuple(plan.identifier_type for plan in self.columns if not plan.hashed)


@dataclass
class ColumnDigests:
    """The digests of one identifier column of a batch, and what normalization found.

    Attributes:
        digests: One `fixed_size_binary(32)` digest per row; null where the cell was empty or
            invalid.
        values_read: Cells that were not empty.
        invalid: Invalid values, by reason.
        changes: Valid values changed by normalization, by change.
    """

    digests: pa.FixedSizeBinaryArray
    values_read: int
    invalid: Counter[str]
    changes: Counter[str]


def digest_batch(plan: DigestPlan, batch: pa.RecordBatch) -> list[ColumnDigests]:
    """Normalize and digest the identifier columns of one batch.

    Args:
        plan: The columns and how to digest them.
        batch: A batch that holds the plan's columns as strings.

    Returns:
        One result per column of the plan, in its order.
    """
    normalizers = _normalizers(plan.default_region, plan.declared_types, plan._raw_types())
    results = []
    for column in plan.columns:
        cells = batch.column(column.column)
        if column.hashed:
            decoded = decode_sha256_column(cells)
            invalid = Counter({MALFORMED_SHA256: decoded.malformed})
            digests = digest_sha256_column(column.key, decoded.hashes)
            results.append(ColumnDigests(digests, decoded.values_read, +invalid, Counter()))
        else:
            if plan.region_column is not None and column.identifier_type == "phone":
                normalized = _phones_by_region(plan, cells, batch.column(plan.region_column))
            else:
                normalized = normalizers[column.identifier_type](cells)
            digests = digest_column(column.key, normalized.values)
            results.append(
                ColumnDigests(
                    digests, normalized.values_read, normalized.invalid, normalized.changes
                )
            )
    return results


def _phones_by_region(plan: DigestPlan, cells: Any, regions: Any) -> NormalizedColumn:
    """Normalize phones with each row's region; the default region where it is empty.

    A region cell is an ISO 3166-1 code or a country name (`normalize.region_of`); one that
    names no region makes its row's phone invalid (`unknown_region`).
    """
    codes: Any = pc.utf8_trim_whitespace(regions)
    codes = pc.if_else(pc.equal(codes, pa.scalar("")), pa.scalar(None, pa.string()), codes)
    values: list[pa.Array[Any]] = []
    positions: list[pa.Array[Any]] = []
    values_read, invalid, changes = 0, Counter[str](), Counter[str]()
    for code in pc.unique(codes).to_pylist():
        rows = pc.indices_nonzero(
            pc.is_null(codes) if code is None else pc.fill_null(pc.equal(codes, code), False)
        )
        subset: Any = pc.take(cells, rows)
        region = plan.default_region if code is None else normalize.region_of(code)
        if code is not None and region is None:
            present = pc.fill_null(
                pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(subset)), pa.scalar(0)), False
            )
            count = pc.sum(present).as_py() or 0
            values_read += count
            invalid[normalize.UNKNOWN_REGION] += count
            values.append(pa.nulls(len(subset), pa.string()))
        else:
            found = _normalizers(region, plan.declared_types, ("phone",))["phone"](subset)
            values_read += found.values_read
            invalid.update(found.invalid)
            changes.update(found.changes)
            values.append(found.values)
        positions.append(rows)
    if not values:
        return NormalizedColumn(pa.nulls(0, pa.string()), 0, invalid, changes)
    order = pc.array_sort_indices(pa.concat_arrays(positions))
    merged: Any = pc.take(pa.concat_arrays(values), order)
    return NormalizedColumn(merged, values_read, +invalid, +changes)


@functools.cache
def _normalizers(
    default_region: str | None, declared_types: tuple[str, ...], identifier_types: tuple[str, ...]
) -> dict[str, ColumnNormalizer]:
    """Return the column normalizer of each type, made once per process."""
    return {
        identifier_type: column_normalizer_for(
            identifier_type, default_region=default_region, declared_types=declared_types
        )
        for identifier_type in identifier_types
    }
