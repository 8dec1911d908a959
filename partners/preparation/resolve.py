"""People, not records: link a brand's records across its own sources into persons.

A brand knows a customer through several systems: a CRM row with an email and a phone, an
app row with that phone and a device's advertising ID, a web row with that advertising ID.
`resolve` reads every source, normalizes each identifier column as `prepare` does (SPEC
section 2), and links records that share any normalized identifier, transitively: those three
rows are one person. Matching is deterministic; nothing is inferred.

It writes one row per person, ready for `prepare`: `person_id`, the number of `records`
merged, and one column per identifier type holding one normalized value. A person with
several values of one type keeps the value of its earliest record (sources in the order
given, then rows in file order); the summary counts how many persons had several.

A group of records larger than `max_records_per_person` is not a person: some identifier is
shared (a store's phone number) or junk (`test@example.com`). Such identifiers are not used to
link (`partners.preparation._components.link_records`) and the summary names them, so that the
brand can clean its data. Their values stay on the records that hold them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from partners.errors import InputError
from partners.preparation import _sources
from partners.preparation._arrow import to_mask
from partners.preparation._columns import NormalizedColumn, column_normalizer_for
from partners.preparation._components import Indices, link_records
from partners.preparation._worker_pool import OrderedPool, default_workers
from partners.preparation.files import replacing

DEFAULT_MAX_RECORDS_PER_PERSON = 20
"""The most records one person may have before the identifiers joining them are refused."""

PERSON_ID = "person_id"
"""The column of a people file that numbers the persons, from 1."""

RECORDS = "records"
"""The column of a people file that counts each person's records."""

_SHARED_IDENTIFIERS_REPORTED = 20


@dataclass(frozen=True)
class Source:
    """One of the brand's files, and what its columns hold.

    Attributes:
        path: A `.csv`, `.csv.gz` or `.parquet` file with a header row.
        columns: Input column name to identifier type. Several columns may hold one type (a
            home and a work email, say).
    """

    path: Path
    columns: Mapping[str, str]


@dataclass(frozen=True)
class ColumnSummary:
    """What normalization found in the columns of one type in one source.

    Attributes:
        values_read: Non-empty cells read.
        valid: Values that normalized.
        invalid_by_reason: Values ignored as invalid, by reason.
    """

    values_read: int
    valid: int
    invalid_by_reason: dict[str, int]


@dataclass(frozen=True)
class SourceSummary:
    """What `resolve` read from one source.

    Attributes:
        path: The source file.
        records: Its rows.
        types: Per identifier type, what normalization found.
    """

    path: str
    records: int
    types: dict[str, ColumnSummary]


@dataclass(frozen=True)
class SharedIdentifier:
    """An identifier that was not used to link, because too many records hold it.

    Attributes:
        identifier_type: Its type.
        value: Its normalized value (the brand's own data, reported on its own machine).
        records: How many records hold it.
    """

    identifier_type: str
    value: str
    records: int


@dataclass(frozen=True)
class ResolutionSummary:
    """What `resolve` read, linked and wrote.

    Attributes:
        records: Rows read from all sources.
        persons: Rows written: one per person.
        records_per_person: Persons by their number of records.
        identifiers_per_person: Per type, persons by their number of distinct values.
        persons_with_several_values: Per type, persons with more than one value, of which
            the people file keeps the first.
        max_records_per_person: The most records one person was allowed.
        shared_identifiers_excluded: Identifiers not used to link (too many records held
            them).
        shared_identifiers: The most held of those, most held first.
        records_not_merged: Records left as persons of their own because their group stayed
            too large even without the excluded identifiers.
        sources: Per source, in the order given.
    """

    records: int
    persons: int
    records_per_person: dict[int, int]
    identifiers_per_person: dict[str, dict[int, int]]
    persons_with_several_values: dict[str, int]
    max_records_per_person: int
    shared_identifiers_excluded: int
    shared_identifiers: list[SharedIdentifier]
    records_not_merged: int
    sources: list[SourceSummary]

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain data that `json.dumps` accepts (keys as strings)."""
        data = dataclasses.asdict(self)
        data["records_per_person"] = _string_keys(self.records_per_person)
        data["identifiers_per_person"] = {
            name: _string_keys(counts) for name, counts in self.identifiers_per_person.items()
        }
        return data


def resolve(
    sources: Sequence[Source],
    destination: Path,
    *,
    default_region: str | None = None,
    declared_types: Collection[str] = (),
    max_records_per_person: int = DEFAULT_MAX_RECORDS_PER_PERSON,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> ResolutionSummary:
    """Link the records of several sources into persons and write one row per person.

    Args:
        sources: The brand's files, each with its column mapping, in order of preference: a
            person's value of a type comes from the earliest source that has one.
        destination: The people file to write (`.parquet` or `.csv`); replaced if it exists,
            and it appears only when complete.
        default_region: The region of phone numbers written without a country code.
        declared_types: Extra identifier types the collaboration declared.
        max_records_per_person: The most records one person may have; identifiers that
            would join more are not used to link.
        progress: Called with the number of rows of each batch once it is read.
        workers: Processes that normalize batches at once; by default one per core.

    Returns:
        What was read, linked and written.

    Raises:
        InputError: If a source, a mapping or an option is not usable.
    """
    destination = Path(destination)
    identifier_types = _check(sources, destination, max_records_per_person)
    context = (default_region, tuple(declared_types))
    for identifier_type in identifier_types:  # unknown types and regions fail here, once
        column_normalizer_for(
            identifier_type, default_region=default_region, declared_types=declared_types
        )
    found = _Found(identifier_types)
    with OrderedPool(normalize_batch, context, workers or default_workers()) as pool:
        for (source_index, mapping, batch), columns in pool.map(_batches(sources)):
            found.add(source_index, mapping, batch.num_rows, columns)
            if progress is not None:
                progress(batch.num_rows)
    identifiers = found.identifiers()
    linking = link_records(
        found.records,
        identifiers.record,
        identifiers.identifier,
        max_records=max_records_per_person,
    )
    persons, person_of_record = np.unique(linking.labels, return_inverse=True)
    people = _people(identifiers, person_of_record, len(persons), linking.excluded)
    _write(people.table(person_of_record, len(persons)), destination)
    return ResolutionSummary(
        records=found.records,
        persons=len(persons),
        records_per_person=_histogram(np.bincount(person_of_record, minlength=len(persons))),
        identifiers_per_person=people.values_per_person,
        persons_with_several_values=people.several,
        max_records_per_person=max_records_per_person,
        shared_identifiers_excluded=len(linking.excluded),
        shared_identifiers=identifiers.shared(linking.excluded, _SHARED_IDENTIFIERS_REPORTED),
        records_not_merged=linking.unmerged,
        sources=found.summaries(sources),
    )


_Mapping = tuple[tuple[str, str], ...]
_Item = tuple[int, _Mapping, pa.RecordBatch]


def normalize_batch(
    context: tuple[str | None, tuple[str, ...]], item: _Item
) -> list[NormalizedColumn]:
    """Normalize the identifier columns of one batch of one source (run in worker processes).

    Args:
        context: The default phone region and the declared types.
        item: The source's index, its (column, type) mapping and the batch.

    Returns:
        One normalized column per mapped column, in the mapping's order.
    """
    default_region, declared_types = context
    _, mapping, batch = item
    return [
        column_normalizer_for(
            identifier_type, default_region=default_region, declared_types=declared_types
        )(batch.column(column))
        for column, identifier_type in mapping
    ]


@dataclass
class _Identifiers:
    """Every (record, identifier) pair, with identifiers numbered across types.

    Attributes:
        identifier_types: The types, in the order of the people file's columns.
        record: The record of each pair.
        identifier: The identifier of each pair; the identifiers of type `t` are numbered
            from `starts[t]`, in the order of `values[t]`.
        rank: The column order of each pair within its record (for the first value).
        type_of: The type index of each pair.
        starts: Where the numbering of each type starts.
        values: The distinct normalized values of each type.
    """

    identifier_types: list[str]
    record: Indices
    identifier: Indices
    rank: Indices
    type_of: Indices
    starts: list[int]
    values: list[pa.StringArray]

    def shared(self, excluded: Indices, count: int) -> list[SharedIdentifier]:
        """Describe the most held of the excluded identifiers."""
        if not len(excluded):
            return []
        holders = np.bincount(self.identifier, minlength=int(excluded.max()) + 1)[excluded]
        order = np.lexsort((excluded, -holders))[:count]
        described = []
        for identifier, held in zip(excluded[order].tolist(), holders[order].tolist(), strict=True):
            type_index = int(np.searchsorted(self.starts, identifier, side="right")) - 1
            value = self.values[type_index][identifier - self.starts[type_index]].as_py()
            described.append(SharedIdentifier(self.identifier_types[type_index], value, held))
        return described


@dataclass
class _Counts:
    """What normalization found in the columns of one type of one source."""

    values_read: int = 0
    invalid: Counter[str] = field(default_factory=Counter)


@dataclass
class _TypeFound:
    """The valid values of one type found so far, with their records and column ranks."""

    values: list[pa.StringArray] = field(default_factory=list)
    records: list[Indices] = field(default_factory=list)
    ranks: list[Indices] = field(default_factory=list)


@dataclass
class _Found:
    """What the sources held, gathered batch by batch."""

    identifier_types: list[str]
    records: int = 0
    by_type: dict[str, _TypeFound] = field(default_factory=dict)
    rows: Counter[int] = field(default_factory=Counter)
    counts: dict[tuple[int, str], _Counts] = field(default_factory=dict)

    def add(
        self, source: int, mapping: _Mapping, rows: int, columns: Sequence[NormalizedColumn]
    ) -> None:
        """Add the normalized columns of one batch, whose first record is the next one."""
        for rank, ((_, identifier_type), column) in enumerate(zip(mapping, columns, strict=True)):
            present = to_mask(pc.is_valid(column.values))
            found = self.by_type.setdefault(identifier_type, _TypeFound())
            found.values.append(column.values.filter(pa.array(present)))
            found.records.append(np.flatnonzero(present).astype(np.int64) + self.records)
            found.ranks.append(np.full(int(present.sum()), rank, dtype=np.int64))
            counts = self.counts.setdefault((source, identifier_type), _Counts())
            counts.values_read += column.values_read
            counts.invalid.update(column.invalid)
        self.rows[source] += rows
        self.records += rows

    def identifiers(self) -> _Identifiers:
        """Number the distinct values of every type, and list the (record, identifier) pairs."""
        record, identifier, rank, type_of = [], [], [], []
        starts, values = [], []
        start = 0
        for type_index, identifier_type in enumerate(self.identifier_types):
            found = self.by_type.get(identifier_type, _TypeFound())
            chunks = found.values or [pa.array([], pa.string())]
            encoded: Any = pc.dictionary_encode(pa.chunked_array(chunks, pa.string()))
            encoded = encoded.combine_chunks()
            indices = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
            record.append(np.concatenate(found.records or [np.zeros(0, np.int64)]))
            rank.append(np.concatenate(found.ranks or [np.zeros(0, np.int64)]))
            identifier.append(indices + start)
            type_of.append(np.full(len(indices), type_index, dtype=np.int64))
            starts.append(start)
            values.append(cast(pa.StringArray, encoded.dictionary))
            start += len(encoded.dictionary)
        return _Identifiers(
            identifier_types=self.identifier_types,
            record=np.concatenate(record),
            identifier=np.concatenate(identifier),
            rank=np.concatenate(rank),
            type_of=np.concatenate(type_of),
            starts=starts,
            values=values,
        )

    def summaries(self, sources: Sequence[Source]) -> list[SourceSummary]:
        """Summarize what was read from each source."""
        summaries = []
        for index, source in enumerate(sources):
            types = {}
            for identifier_type in dict.fromkeys(source.columns.values()):
                counts = self.counts.get((index, identifier_type), _Counts())
                types[identifier_type] = ColumnSummary(
                    values_read=counts.values_read,
                    valid=counts.values_read - counts.invalid.total(),
                    invalid_by_reason=dict(sorted(counts.invalid.items())),
                )
            summaries.append(SourceSummary(str(source.path), self.rows[index], types))
        return summaries


@dataclass
class _People:
    """Each person's value of each type, and how many distinct values they had."""

    identifier_types: list[str]
    columns: list[pa.StringArray]
    values_per_person: dict[str, dict[int, int]]
    several: dict[str, int]

    def table(self, person_of_record: Indices, persons: int) -> pa.Table:
        """Return the people table: id, record count, one value per type."""
        records = np.bincount(person_of_record, minlength=persons)
        arrays: list[pa.Array[Any]] = [
            pa.array(np.arange(1, persons + 1, dtype=np.int64)),
            pa.array(records.astype(np.int32)),
            *self.columns,
        ]
        return pa.table(arrays, names=[PERSON_ID, RECORDS, *self.identifier_types])


def _people(
    identifiers: _Identifiers, person_of_record: Indices, persons: int, excluded: Indices
) -> _People:
    """Choose each person's value of each type: the earliest, preferring linking ones."""
    person = person_of_record[identifiers.record]
    is_excluded = np.zeros(int(identifiers.identifier.max(initial=-1)) + 1, dtype=bool)
    is_excluded[excluded] = True
    shared = is_excluded[identifiers.identifier].astype(np.int64)
    columns, values_per_person, several = [], {}, {}
    for type_index, identifier_type in enumerate(identifiers.identifier_types):
        of_type = identifiers.type_of == type_index
        owner, ident = person[of_type], identifiers.identifier[of_type]
        order = np.lexsort(
            (identifiers.rank[of_type], identifiers.record[of_type], shared[of_type], owner)
        )
        first = np.ones(len(order), dtype=bool)
        first[1:] = owner[order][1:] != owner[order][:-1]
        chosen = np.full(persons, -1, dtype=np.int64)
        chosen[owner[order][first]] = ident[order][first] - identifiers.starts[type_index]
        dictionary = identifiers.values[type_index]
        positions: Any = pa.array(chosen, pa.int64(), mask=chosen < 0)
        columns.append(dictionary.take(positions))
        counts = _distinct_per_person(owner, ident, persons)
        values_per_person[identifier_type] = _histogram(counts)
        several[identifier_type] = int(np.count_nonzero(counts > 1))
    return _People(identifiers.identifier_types, columns, values_per_person, several)


def _distinct_per_person(owner: Indices, identifier: Indices, persons: int) -> Indices:
    """Count the distinct identifiers of each person."""
    if not len(identifier):
        return np.zeros(persons, dtype=np.int64)
    width = int(identifier.max()) + 1
    pairs = np.unique(owner * width + identifier)
    return np.bincount(pairs // width, minlength=persons)


def _batches(sources: Sequence[Source]) -> Iterator[_Item]:
    """Read every source in turn, batch by batch, with its mapping."""
    for index, source in enumerate(sources):
        mapping = tuple(source.columns.items())
        names = list(dict.fromkeys(column for column, _ in mapping))
        source_format = _sources.source_format(source.path)
        for batch in _sources.read_batches(source.path, source_format, names):
            yield index, mapping, batch


def _check(sources: Sequence[Source], destination: Path, max_records: int) -> list[str]:
    """Check the sources, the destination and the limit; return the types in column order."""
    if not sources:
        raise InputError(
            "NO_SOURCES",
            "No source was given; give at least one file with its identifier columns.",
        )
    if max_records < 1:
        raise InputError(
            "INVALID_MAX_RECORDS",
            f"The most records per person must be at least 1, got {max_records}.",
            {"max_records_per_person": str(max_records)},
        )
    _people_format(destination)
    identifier_types: dict[str, None] = {}
    for source in sources:
        path = Path(source.path)
        if not source.columns:
            raise InputError(
                "NO_IDENTIFIER_COLUMNS",
                f"No identifier column was given for {path}; map at least one column to a "
                "type, as in crm.csv:email=email.",
                {"path": str(path)},
            )
        source_format = _sources.source_format(path)
        _sources.check_exists(path)
        if destination.exists() and destination.samefile(path):
            raise InputError(
                "DESTINATION_IS_SOURCE",
                f"The people file {destination} is the source {path}; choose another destination.",
                {"path": str(destination)},
            )
        names = _sources.column_names(path, source_format)
        _sources.check_columns(path, names, list(source.columns))
        identifier_types.update(dict.fromkeys(source.columns.values()))
    for reserved in (PERSON_ID, RECORDS):
        if reserved in identifier_types:
            raise InputError(
                "COLUMN_NAME_CONFLICT",
                f"{reserved!r} names a column of the people file and cannot be an identifier type.",
                {"identifier_type": reserved},
            )
    return list(identifier_types)


def _people_format(destination: Path) -> str:
    """Tell the format of the people file by its suffix."""
    name = destination.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    raise InputError(
        "UNSUPPORTED_FILE_TYPE",
        f"Cannot write {destination}: the people file's name must end in .parquet or .csv.",
        {"path": str(destination)},
    )


def _write(table: pa.Table, destination: Path) -> None:
    """Write the people file in the format its suffix names; it appears only when complete."""
    people_format = _people_format(destination)
    with replacing(destination) as partial:
        if people_format == "parquet":
            pq.write_table(table, partial)
        else:
            pa_csv.write_csv(table, partial)


def _histogram(counts: np.ndarray[Any, Any]) -> dict[int, int]:
    """Count how many times each value occurs, smallest value first."""
    values, occurrences = np.unique(counts, return_counts=True)
    return dict(zip(values.tolist(), occurrences.tolist(), strict=True))


def _string_keys(counts: Mapping[int, int]) -> dict[str, int]:
    return {str(key): value for key, value in counts.items()}
