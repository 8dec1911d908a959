"""Connected components of records linked by shared identifiers, computed with NumPy.

Records are nodes; each identifier links every record that holds it to the first of them.
Components are found by union-find done a whole edge list at a time: every edge whose ends
have different roots hooks the larger root under the smaller, then pointer jumping flattens
the trees, and edges whose ends share a root are dropped. Roots only ever decrease, so each
round merges at least one pair and the loop ends; in practice after a few rounds (the depth
of the graph halves each time). The root of a component is its smallest record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Indices = np.ndarray[Any, np.dtype[np.int64]]


def connected_components(records: int, first: Indices, second: Indices) -> Indices:
    """Label each record with the smallest record of its component.

    Args:
        records: The number of records (nodes), numbered from 0.
        first: One end of each link.
        second: The other end of each link.

    Returns:
        For each record, the smallest record connected to it (itself if alone).
    """
    parent = np.arange(records, dtype=np.int64)
    first, second = first.astype(np.int64), second.astype(np.int64)
    while len(first):
        first_root, second_root = parent[first], parent[second]
        open_links = first_root != second_root
        if not open_links.any():
            break
        first, second = first[open_links], second[open_links]
        first_root, second_root = first_root[open_links], second_root[open_links]
        np.minimum.at(
            parent,
            np.maximum(first_root, second_root),
            np.minimum(first_root, second_root),
        )
        parent = _flatten(parent)
    return parent


@dataclass(frozen=True)
class Linking:
    """How records are grouped into persons, and which identifiers were not used to link.

    Attributes:
        labels: For each record, the smallest record of its person.
        excluded: Identifiers not used to link, because they joined too many records.
        unmerged: Records left as persons of their own, because their group stayed too large
            even without the excluded identifiers.
    """

    labels: Indices
    excluded: Indices
    unmerged: int


def link_records(
    records: int,
    record_of_link: Indices,
    identifier_of_link: Indices,
    *,
    max_records: int,
    max_rounds: int = 16,
) -> Linking:
    """Group records that share identifiers, refusing groups of more than `max_records`.

    A group larger than that is not a person but a shared or junk identifier (a store's
    phone number, `test@example.com`). An identifier held by more than `max_records` records
    is excluded from linking at once; then, for each group still too large, the identifier
    held by the most of its records is excluded and the records are grouped again, until no
    group is too large or `max_rounds` have passed. The records of groups still too large are
    then left unmerged, one person each.

    Args:
        records: The number of records.
        record_of_link: The record of each (record, identifier) pair.
        identifier_of_link: The identifier of each pair, numbered from 0.
        max_records: The most records one person may have.
        max_rounds: How many times at most to exclude identifiers and group again.

    Returns:
        The grouping and what was refused.
    """
    identifiers = int(identifier_of_link.max()) + 1 if len(identifier_of_link) else 0
    holders = np.bincount(identifier_of_link, minlength=identifiers)
    excluded = holders > max_records
    labels = np.arange(records, dtype=np.int64)
    for _ in range(max_rounds + 1):
        used = ~excluded[identifier_of_link]
        labels = _group(records, record_of_link[used], identifier_of_link[used], identifiers)
        sizes = np.bincount(labels, minlength=records)
        too_large = sizes[labels] > max_records
        if not too_large.any():
            return Linking(labels, np.flatnonzero(excluded), 0)
        in_large = used & too_large[record_of_link]
        excluded[
            _most_held(labels[record_of_link[in_large]], identifier_of_link[in_large], holders)
        ] = True
    # Still too large after every round: these records stay apart.
    labels = np.where(too_large, np.arange(records, dtype=np.int64), labels)
    return Linking(labels, np.flatnonzero(excluded), int(too_large.sum()))


def _group(
    records: int, record_of_link: Indices, identifier_of_link: Indices, identifiers: int
) -> Indices:
    """Link every holder of an identifier to its first holder, and find the components."""
    first_holder = np.full(identifiers, records, dtype=np.int64)
    np.minimum.at(first_holder, identifier_of_link, record_of_link)
    return connected_components(records, record_of_link, first_holder[identifier_of_link])


def _most_held(components: Indices, identifiers: Indices, holders: Indices) -> Indices:
    """Return, for each component, its identifier with the most holders (the first on ties)."""
    order = np.lexsort((identifiers, -holders[identifiers], components))
    ordered = components[order]
    firsts = np.ones(len(order), dtype=bool)
    firsts[1:] = ordered[1:] != ordered[:-1]
    chosen: Indices = identifiers[order][firsts]
    return chosen


def _flatten(parent: Indices) -> Indices:
    """Point every record straight at its root."""
    while True:
        grandparent = parent[parent]
        if np.array_equal(grandparent, parent):
            return parent
        parent = grandparent
