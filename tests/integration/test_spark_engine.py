"""The Spark engine on local[2] gives the in-memory engine's counts and a brute force's.

Random datasets (2 to 5, one to three identifier types each), planted prefix collisions
(equal first 8 bytes, different digests), a segment split, copies split into different
numbers of ranges; every count of every question is compared.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from cleanroom.errors import ConfigError
from cleanroom.matching.engine import DatasetTable
from cleanroom.matching.layout import sorted_layout
from cleanroom.matching.memory import ArrowMatcher
from cleanroom.matching.question import ExactOverlap, OverlapQuestion
from cleanroom.matching.ranges import RangeLocation, range_starts, write_ranges
from cleanroom.matching.spark import SparkMatcher, check_java, check_master, start_session
from cleanroom.names import DatasetName

TYPES = ("email", "phone", "maid")
TIERS = ("gold", "silver", None)


def pool_with_collisions(rng: np.random.Generator, size: int, ranges: int) -> np.ndarray:
    """Distinct digests; some share their first 8 bytes, some sit on a range boundary."""
    pool = rng.integers(0, 256, size=(size, 32), dtype=np.uint8)
    for _ in range(size // 20):
        members = rng.choice(size, size=3, replace=False)
        pool[members, :8] = pool[members[0], :8]
    starts = range_starts(ranges)
    for k, start in enumerate(starts[1:]):  # the first prefix of a range, and the last before
        pool[2 * k, :8] = np.frombuffer(int(start).to_bytes(8, "big"), np.uint8)
        pool[2 * k + 1, :8] = np.frombuffer((int(start) - 1).to_bytes(8, "big"), np.uint8)
    return np.unique(pool, axis=0)


def random_dataset(
    rng: np.random.Generator, pools: dict[str, np.ndarray], name: str, types: tuple[str, ...]
) -> DatasetTable:
    rows = int(rng.integers(150, 400))
    columns: dict[str, Any] = {}
    present_any = np.zeros(rows, dtype=bool)
    for t in types:
        picks = rng.integers(0, len(pools[t]), size=rows)  # with repeats: dropped at upload
        present = rng.random(rows) < 0.75
        present_any |= present
        columns[t] = [
            bytes(pools[t][p]) if k else None for p, k in zip(picks, present, strict=True)
        ]
    keep = np.flatnonzero(present_any)
    table = pa.table(
        {
            **{t: pa.array([columns[t][i] for i in keep], pa.binary(32)) for t in types},
            "tier": pa.array([TIERS[i] for i in rng.integers(0, 3, size=len(keep))]),
        }
    )
    stored, _ = sorted_layout(table, types, ("tier",), workers=1)
    return DatasetTable(
        DatasetName("c", name), stored, types, ("tier",), file_name=f"c--{name}--x.arrow"
    )


def brute_force(question: OverlapQuestion, tables: dict[DatasetName, DatasetTable]) -> ExactOverlap:
    values = {d: {t: tables[d].table.column(t).to_pylist() for t in tables[d].identifier_types}
              for d in question.datasets}  # fmt: skip
    sets = {d: {t: {v for v in col if v is not None} for t, col in cols.items()}
            for d, cols in values.items()}  # fmt: skip

    def matched(x: DatasetName, row: int, y: DatasetName) -> bool:
        return any(
            v[row] is not None and v[row] in sets[y].get(t, ()) for t, v in values[x].items()
        )

    pairwise = {
        (x, y): sum(matched(x, r, y) for r in range(tables[x].row_count))
        for x, y in itertools.permutations(question.datasets, 2)
    }
    tiers = tables[question.base].table.column("tier").to_pylist()
    labels = (
        sorted(set(tiers), key=lambda v: (v is not None, v or ""))
        if question.segment_column
        else [None]
    )
    cells = {(label, mask): 0 for label in labels for mask in range(1 << len(question.others))}
    for row in range(tables[question.base].row_count):
        mask = sum(matched(question.base, row, o) << i for i, o in enumerate(question.others))
        cells[tiers[row] if question.segment_column else None, mask] += 1
    sizes = {d: tables[d].row_count for d in question.datasets}
    return ExactOverlap(question, sizes, cells, pairwise)


@pytest.fixture(scope="module")
def matcher(spark_engine: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> SparkMatcher:
    session, _ = start_session(spark_engine["master"], spark_engine["settings"])
    return SparkMatcher(session, str(tmp_path_factory.mktemp("ranges")))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_spark_equals_memory_and_brute_force(matcher: SparkMatcher, seed: int) -> None:
    rng = np.random.default_rng(seed)
    count = 2 + seed % 4  # 2 to 5 datasets
    kinds = TYPES[: 1 + seed % 3]  # one to three identifier types in play
    pools = {t: pool_with_collisions(rng, 600, 16) for t in kinds}
    tables = {}
    for k in range(count):
        types = tuple(t for t in kinds if rng.random() < 0.7) or (kinds[k % len(kinds)],)
        if k == 0:
            types = kinds  # the base shares a type with every other
        dataset = random_dataset(rng, pools, f"s{seed}-d{k}", types)
        # Copies split into different numbers of ranges: tasks read several finer files.
        write_ranges(dataset, matcher.location, Path(dataset.file_name).stem, 8 << (k % 2))
        tables[dataset.name] = dataset
    names = list(tables)
    for segment in (None, "tier"):
        question = OverlapQuestion(names[0], tuple(names[1:]), segment)
        spark = matcher.overlap(question, tables)
        assert spark == ArrowMatcher(workers=1).overlap(question, tables)
        assert spark == brute_force(question, tables)
    flags = matcher.matches(tables[names[1]], tables[names[0]])
    assert (
        flags.tolist()
        == ArrowMatcher(workers=1).matches(tables[names[1]], tables[names[0]]).tolist()
    )


def test_a_copy_holds_each_range_in_its_own_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    pools = {"email": pool_with_collisions(rng, 500, 4)}
    dataset = random_dataset(rng, pools, "one", ("email",))
    location = RangeLocation.parse(tmp_path)
    write_ranges(dataset, location, "one", 4)
    manifest = location.manifest("one")
    assert manifest is not None
    assert (manifest.ranges, manifest.row_count) == (4, dataset.row_count)
    starts = [int(s) for s in range_starts(4)] + [1 << 64]
    total = 0
    for number in manifest.present["email"]:
        digests = pa.parquet.read_table(
            tmp_path / "one" / "email" / f"{number:05d}.parquet"
        ).column("digest")
        prefixes = [int.from_bytes(d[:8], "big") for d in digests.to_pylist()]
        assert prefixes == sorted(prefixes)
        assert all(starts[number] <= p < starts[number + 1] for p in prefixes)
        total += len(prefixes)
    assert total == dataset.table.column("email").null_count * 0 + sum(
        v is not None for v in dataset.table.column("email").to_pylist()
    )
    location.delete("one")
    assert list(tmp_path.iterdir()) == []


def test_start_checks_name_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket_closed() as port, pytest.raises(ConfigError) as unreachable:
        check_master(f"spark://127.0.0.1:{port}")
    assert unreachable.value.key == "server.engine.master"
    assert "unreachable" in unreachable.value.message
    with pytest.raises(ConfigError, match="not a Spark master URL"):
        check_master("mesos://somewhere:5050")
    with pytest.raises(ConfigError, match=r"local\[N\]"):
        check_master("local[0]")
    check_master("local[2,2]")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError) as no_java:
        check_java()
    assert no_java.value.key == "server.engine.kind"
    assert "openjdk-17-jre-headless" in no_java.value.message


class socket_closed:  # noqa: N801 - used as a context manager
    """A loopback port that nothing listens on, for the length of the block."""

    def __enter__(self) -> int:
        import socket

        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
        probe.close()
        return port

    def __exit__(self, *_: object) -> None:
        return None


def test_a_server_whose_master_is_unreachable_does_not_start(pki: Any, tmp_path: Path) -> None:
    from tests.support import running_server

    with socket_closed() as port:
        engine = {"kind": "spark", "master": f"spark://127.0.0.1:{port}"}
        with pytest.raises(ConfigError) as refused:
            running_server(pki, tmp_path / "data", server={"engine": engine}).__enter__()
    assert refused.value.key == "server.engine.master"
    with running_server(pki, tmp_path / "data"):  # the data directory was released
        pass


def test_check_config_checks_the_spark_engine_without_starting_it(pki: Any, tmp_path: Path) -> None:
    import tomli_w
    from click.testing import CliRunner

    from cleanroom.cli import main
    from tests.support import config_data

    with socket_closed() as port:
        data = config_data(pki, tmp_path / "data")
        data["server"]["engine"] = {"kind": "spark", "master": f"spark://127.0.0.1:{port}"}
        config = tmp_path / "cleanroom.toml"
        config.write_bytes(tomli_w.dumps(data).encode())
        refused = CliRunner().invoke(main, ["check-config", "--config", str(config)])
    assert refused.exit_code == 2
    assert "server.engine.master" in refused.output
    assert "unreachable" in refused.output
    data["server"]["engine"] = {"kind": "spark", "master": "local[2]"}
    config.write_bytes(tomli_w.dumps(data).encode())
    accepted = CliRunner().invoke(main, ["check-config", "--config", str(config)])
    assert accepted.exit_code == 0, accepted.output
    assert "matching on Spark local[2]" in accepted.output
