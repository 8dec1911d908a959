"""Resolving a brand's records into persons across its own sources (issue 3)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from partners.cli import main
from partners.errors import InputError
from partners.preparation import _sources
from partners.preparation._components import connected_components, link_records
from partners.preparation.digest import type_key
from partners.preparation.pipeline import prepare
from partners.preparation.resolve import ResolutionSummary, SharedIdentifier, Source, resolve

MAID_1 = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
MAID_2 = "ea7583cd-a667-48bc-b806-42ecb2b48606"
TYPES = ("email", "phone", "maid")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def people(path: Path) -> list[dict[str, object]]:
    return pq.read_table(path).to_pylist()


def brute_force_union_find(records: int, pairs: Sequence[tuple[int, str]]) -> list[int]:
    """Label each record with the smallest record sharing an identifier with it, transitively."""
    parent = list(range(records))

    def find(record: int) -> int:
        while parent[record] != record:
            parent[record] = parent[parent[record]]
            record = parent[record]
        return record

    first_holder: dict[str, int] = {}
    for record, identifier in pairs:
        holder = first_holder.setdefault(identifier, record)
        a, b = find(record), find(holder)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(record) for record in range(records)]


# --- The example of the issue -----------------------------------------------------------


def test_a_chain_across_three_sources_is_one_person(tmp_path: Path) -> None:
    crm = write_csv(
        tmp_path / "crm.csv",
        ["id", "email", "phone", "tier"],
        [["1", " Jane.Doe@Gmail.com", "(415) 555-2671", "gold"], ["2", "bob@example.com", "", "x"]],
    )
    app = write_csv(tmp_path / "app.csv", ["mobile", "idfa"], [["+1 415 555 2671", MAID_1.upper()]])
    web = write_csv(tmp_path / "web.csv", ["device"], [[MAID_1], [MAID_2]])
    summary = resolve(
        [
            Source(crm, {"email": "email", "phone": "phone"}),
            Source(app, {"mobile": "phone", "idfa": "maid"}),
            Source(web, {"device": "maid"}),
        ],
        tmp_path / "people.parquet",
        default_region="US",
        workers=1,
    )
    assert people(tmp_path / "people.parquet") == [
        {
            "person_id": 1,
            "records": 3,
            "email": "janedoe@gmail.com",
            "phone": "+14155552671",
            "maid": MAID_1,
        },
        {"person_id": 2, "records": 1, "email": "bob@example.com", "phone": None, "maid": None},
        {"person_id": 3, "records": 1, "email": None, "phone": None, "maid": MAID_2},
    ]
    assert summary.records == 5
    assert summary.persons == 3
    assert summary.records_per_person == {1: 2, 3: 1}
    assert summary.identifiers_per_person == {
        "email": {0: 1, 1: 2},
        "phone": {0: 2, 1: 1},
        "maid": {0: 1, 1: 2},
    }
    assert summary.shared_identifiers == []
    assert [source.records for source in summary.sources] == [2, 1, 2]
    assert summary.sources[0].types["phone"].values_read == 1


def test_the_people_file_is_ready_for_prepare(tmp_path: Path) -> None:
    crm = write_csv(tmp_path / "crm.csv", ["e", "p"], [["A@Example.com", "020 7946 0958"]])
    resolve(
        [Source(crm, {"e": "email", "p": "phone"})], tmp_path / "people.csv", default_region="GB"
    )
    secret = bytes(range(32))
    prepare(
        tmp_path / "people.csv",
        tmp_path / "digests.parquet",
        secret=secret,
        collaboration_id="c",
        columns={"email": "email", "phone": "phone"},
    )
    digests = pq.read_table(tmp_path / "digests.parquet").to_pylist()

    def digest(identifier_type: str, value: str) -> bytes:
        key = type_key(secret, "c", identifier_type)
        return hmac.new(key, hashlib.sha256(value.encode()).digest(), hashlib.sha256).digest()

    # No --default-region is needed: phones are already in E.164.
    assert digests == [
        {"email": digest("email", "a@example.com"), "phone": digest("phone", "+442079460958")}
    ]


# --- Exactly the components of a brute-force union-find ----------------------------------


def planted_sources(seed: int, folder: Path) -> tuple[list[Source], list[list[tuple[str, str]]]]:
    """Three sources of records of random persons, with shared identifiers planted between
    persons (a family phone, a reused email). Returns the sources and, per record in order,
    its normalized (type, value) pairs."""
    rng = random.Random(seed)
    persons = rng.randint(20, 80)
    pools = [
        {
            "email": [f"p{person}.{k}@example.com" for k in range(2)],
            "phone": [f"+1415555{person:04d}"],
            "maid": [f"{person:08x}-0000-4000-8000-{k:012x}" for k in range(1, 3)],
        }
        for person in range(persons)
    ]
    for _ in range(rng.randint(0, 6)):  # planted links between two persons
        a, b = rng.randrange(persons), rng.randrange(persons)
        kind = rng.choice(TYPES)
        pools[b][kind] = [*pools[b][kind], pools[a][kind][0]]
    layouts = [
        ("crm.csv", ["email", "phone"]),
        ("app.csv", ["phone", "maid"]),
        ("web.csv", ["maid", "email"]),
    ]
    sources, records = [], []
    for name, kinds in layouts:
        rows = []
        for _ in range(rng.randint(10, 60)):
            person = rng.randrange(persons)
            row, pairs = [], []
            for kind in kinds:
                value = rng.choice(pools[person][kind]) if rng.random() < 0.8 else ""
                row.append(value)
                if value:
                    pairs.append((kind, value))
            rows.append(row)
            records.append(pairs)
        path = write_csv(folder / name, kinds, rows)
        sources.append(Source(path, {kind: kind for kind in kinds}))
    return sources, records


def expected_people(records: list[list[tuple[str, str]]]) -> list[dict[str, object]]:
    pairs = [
        (index, f"{kind}:{value}") for index, found in enumerate(records) for kind, value in found
    ]
    labels = brute_force_union_find(len(records), pairs)
    expected = []
    for root in sorted(set(labels)):
        members = [index for index, label in enumerate(labels) if label == root]
        person: dict[str, object] = {"records": len(members)}
        for kind in TYPES:
            values = [
                value
                for index in members
                for found_kind, value in records[index]
                if found_kind == kind
            ]
            person[kind] = values[0] if values else None
        expected.append(person)
    return expected


@pytest.mark.parametrize("seed", range(8))
def test_resolve_finds_exactly_the_brute_force_components(seed: int, tmp_path: Path) -> None:
    sources, records = planted_sources(seed, tmp_path)
    summary = resolve(
        sources, tmp_path / "people.parquet", max_records_per_person=10_000, workers=1
    )
    found = [
        {key: value for key, value in person.items() if key != "person_id"}
        for person in people(tmp_path / "people.parquet")
    ]
    assert found == expected_people(records)
    assert summary.persons == len(found)
    assert summary.records == len(records)
    assert sum(size * count for size, count in summary.records_per_person.items()) == len(records)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=40).flatmap(
        lambda records: st.tuples(
            st.just(records),
            st.lists(
                st.tuples(st.integers(0, records - 1), st.integers(0, records - 1)), max_size=60
            ),
        )
    )
)
def test_connected_components_match_union_find(graph: tuple[int, list[tuple[int, int]]]) -> None:
    records, links = graph
    first = np.array([a for a, _ in links], dtype=np.int64)
    second = np.array([b for _, b in links], dtype=np.int64)
    expected = brute_force_union_find(
        records, [pair for a, b in links for pair in ((a, f"{a}-{b}"), (b, f"{a}-{b}"))]
    )
    assert connected_components(records, first, second).tolist() == expected


# --- Refusing groups too large to be a person --------------------------------------------


def test_a_junk_identifier_is_not_used_to_link_and_is_reported(tmp_path: Path) -> None:
    # Half the users gave a junk address first and their own second.
    rows = [
        ["test@test.com", f"user{i}@example.com"] if i % 2 else [f"user{i}@example.com", ""]
        for i in range(40)
    ]
    rows.append(["user0@example.com", ""])  # a real second record of user0
    crm = write_csv(tmp_path / "crm.csv", ["email", "alt_email"], rows)
    summary = resolve(
        [Source(crm, {"email": "email", "alt_email": "email"})],
        tmp_path / "people.parquet",
        max_records_per_person=5,
        workers=1,
    )
    assert summary.shared_identifiers == [SharedIdentifier("email", "test@test.com", 20)]
    assert summary.shared_identifiers_excluded == 1
    assert summary.records_not_merged == 0
    # Each user is a person of their own; user0 has its two records.
    assert summary.persons == 40
    assert summary.records_per_person == {1: 39, 2: 1}
    found = people(tmp_path / "people.parquet")
    # Persons keep their own email rather than the shared one, although it came first.
    assert [person["email"] for person in found] == [f"user{i}@example.com" for i in range(40)]
    assert summary.persons_with_several_values["email"] == 20


def test_groups_joined_by_many_identifiers_are_split_at_the_most_held() -> None:
    # Records 0-5 hold identifier 0 (a store phone); pairs of them also share their own.
    records = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5], dtype=np.int64)
    identifiers = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3], dtype=np.int64)
    linking = link_records(6, records, identifiers, max_records=4)
    assert linking.excluded.tolist() == [0]
    assert linking.labels.tolist() == [0, 0, 2, 2, 4, 4]


def test_groups_still_too_large_stay_unmerged() -> None:
    # A chain 0-1-2-...-9 of distinct identifiers, each held by two records.
    records = np.repeat(np.arange(10, dtype=np.int64), 2)[1:-1]
    identifiers = np.repeat(np.arange(9, dtype=np.int64), 2)
    linking = link_records(10, records, identifiers, max_records=3, max_rounds=0)
    assert linking.unmerged == 10
    assert linking.labels.tolist() == list(range(10))
    merged = link_records(10, records, identifiers, max_records=10)
    assert merged.labels.tolist() == [0] * 10
    assert merged.unmerged == 0


def test_several_values_keep_the_earliest_source(tmp_path: Path) -> None:
    app = write_csv(tmp_path / "app.csv", ["phone", "email"], [["+14155552671", "app@example.com"]])
    crm = write_csv(tmp_path / "crm.csv", ["phone", "email"], [["+14155552671", "crm@example.com"]])
    summary = resolve(
        [
            Source(crm, {"phone": "phone", "email": "email"}),
            Source(app, {"phone": "phone", "email": "email"}),
        ],
        tmp_path / "people.parquet",
        workers=1,
    )
    [person] = people(tmp_path / "people.parquet")
    assert person["email"] == "crm@example.com"
    assert summary.persons_with_several_values == {"phone": 0, "email": 1}
    assert summary.identifiers_per_person["email"] == {2: 1}


def test_invalid_values_are_ignored_and_counted(tmp_path: Path) -> None:
    crm = write_csv(
        tmp_path / "crm.csv",
        ["email", "maid"],
        [["nobody", "00000000-0000-0000-0000-000000000000"], ["a@b.c", "  "], ["a@b.c", "x"]],
    )
    summary = resolve(
        [Source(crm, {"email": "email", "maid": "maid"})], tmp_path / "people.parquet"
    )
    assert summary.persons == 2  # the two valid a@b.c records are one person
    assert summary.sources[0].types["email"].invalid_by_reason == {"missing_at_sign": 1}
    assert summary.sources[0].types["maid"].invalid_by_reason == {
        "malformed_maid": 1,
        "zero_maid": 1,
    }
    assert summary.sources[0].types["maid"].values_read == 2
    assert people(tmp_path / "people.parquet")[0] == {
        "person_id": 1,
        "records": 1,
        "email": None,
        "maid": None,
    }


def test_summary_to_dict_is_json(tmp_path: Path) -> None:
    crm = write_csv(tmp_path / "crm.csv", ["email"], [["a@b.c"], ["a@b.c"], ["d@e.f"]])
    summary = resolve([Source(crm, {"email": "email"})], tmp_path / "people.parquet")
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["records_per_person"] == {"1": 1, "2": 1}
    assert data["identifiers_per_person"] == {"email": {"1": 2}}
    assert isinstance(summary, ResolutionSummary)


def test_workers_give_the_same_people_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sources, "CSV_BLOCK_BYTES", 256)
    monkeypatch.setattr(_sources, "CSV_BATCH_ROWS", 10)
    sources, _ = planted_sources(3, tmp_path)
    resolve(sources, tmp_path / "one.parquet", workers=1)
    resolve(sources, tmp_path / "two.parquet", workers=2)
    assert pq.read_table(tmp_path / "one.parquet").equals(pq.read_table(tmp_path / "two.parquet"))


# --- Refusals ----------------------------------------------------------------------------


@pytest.fixture
def crm(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "crm.csv", ["email", "tier"], [["a@b.c", "gold"]])


@pytest.mark.parametrize(
    ("sources", "options", "reason"),
    [
        ([], {}, "NO_SOURCES"),
        ([{}], {}, "NO_IDENTIFIER_COLUMNS"),
        ([{"mail": "email"}], {}, "UNKNOWN_COLUMN"),
        ([{"email": "fax"}], {}, "UNKNOWN_IDENTIFIER_TYPE"),
        ([{"email": "phone"}], {"default_region": "Atlantis"}, "UNKNOWN_REGION"),
        ([{"email": "email"}], {"max_records_per_person": 0}, "INVALID_MAX_RECORDS"),
        ([{"email": "records"}], {"declared_types": ["records"]}, "COLUMN_NAME_CONFLICT"),
    ],
)
def test_bad_sources_and_options_are_refused_and_nothing_is_written(
    crm: Path,
    tmp_path: Path,
    sources: list[dict[str, str]],
    options: dict[str, Any],
    reason: str,
) -> None:
    with pytest.raises(InputError) as caught:
        resolve(
            [Source(crm, mapping) for mapping in sources], tmp_path / "people.parquet", **options
        )
    assert caught.value.reason == reason
    assert sorted(path.name for path in tmp_path.iterdir()) == ["crm.csv"]


def test_destination_must_be_parquet_or_csv_and_not_a_source(crm: Path, tmp_path: Path) -> None:
    content = crm.read_bytes()
    with pytest.raises(InputError) as caught:
        resolve([Source(crm, {"email": "email"})], tmp_path / "people.xlsx")
    assert caught.value.reason == "UNSUPPORTED_FILE_TYPE"
    with pytest.raises(InputError) as caught:
        resolve([Source(crm, {"email": "email"})], crm)
    assert caught.value.reason == "DESTINATION_IS_SOURCE"
    assert crm.read_bytes() == content


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        resolve([Source(tmp_path / "nope.csv", {"email": "email"})], tmp_path / "people.parquet")
    assert caught.value.reason == "FILE_NOT_FOUND"


# --- The command line --------------------------------------------------------------------


def run_cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_cli_resolve(tmp_path: Path) -> None:
    crm = write_csv(tmp_path / "crm.csv", ["email", "mobile"], [["A@b.c", "(415) 555-2671"]])
    app = write_csv(tmp_path / "app.csv", ["phone", "idfa"], [["4155552671", MAID_1]])
    out = run_cli(
        "resolve", f"--source={crm}:email=email,mobile=phone", f"--source={app}:phone=phone,idfa=maid",
        f"--out={tmp_path / 'people.csv'}", "--default-region=US",
    )  # fmt: skip
    assert "read 2 records; wrote 1 persons" in out
    rows = list(csv.DictReader((tmp_path / "people.csv").read_text(encoding="utf-8").splitlines()))
    assert rows == [
        {
            "person_id": "1",
            "records": "2",
            "email": "a@b.c",
            "phone": "+14155552671",
            "maid": MAID_1,
        }
    ]
    data = json.loads(
        run_cli(
            "resolve", f"--source={crm}:email=email", f"--out={tmp_path / 'p.parquet'}", "--json"
        )
    )
    assert data["persons"] == 1


@pytest.mark.parametrize("spec", ["crm.csv", "crm.csv:", ":email=email", "crm.csv:email"])
def test_cli_resolve_refuses_malformed_sources(spec: str, tmp_path: Path) -> None:
    out = run_cli("resolve", f"--source={spec}", f"--out={tmp_path / 'p.parquet'}", code=2)
    assert "FILE:COLUMN=TYPE" in out or "COLUMN=TYPE" in out


def test_cli_resolve_reports_input_errors(crm: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["resolve", f"--source={crm}:mail=email", f"--out={tmp_path / 'p.parquet'}"]
    )
    assert result.exit_code == 2
    assert "UNKNOWN_COLUMN" in result.output
