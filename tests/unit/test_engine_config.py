"""`[server.engine]`: the in-memory engine by default; Spark's settings checked at load."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from cleanroom.config import parse_config
from cleanroom.errors import ConfigError
from tests.unit.test_config import BASE


def with_engine(engine: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["server"]["engine"] = engine
    return data


def test_the_in_memory_engine_is_the_default(tmp_path: Path) -> None:
    engine = parse_config(BASE, base_dir=tmp_path).server.engine
    assert engine.kind == "memory"
    assert engine.location == str(tmp_path / "data" / "ranges")


def test_a_spark_engine_reads_whole(tmp_path: Path) -> None:
    engine = parse_config(
        with_engine(
            {
                "kind": "spark",
                "master": "spark://10.0.0.5:7077",
                "location": "copies",
                "ranges": 1024,
                "driver_rows": 0,
                "settings": {"spark.executor.memory": "8g", "spark.executor.cores": 4,
                             "spark.speculation": True},
            }
        ),
        base_dir=tmp_path,
    ).server.engine  # fmt: skip
    assert (engine.kind, engine.master, engine.ranges, engine.driver_rows) == (
        "spark", "spark://10.0.0.5:7077", 1024, 0,
    )  # fmt: skip
    assert engine.location == str(tmp_path / "copies")
    assert engine.settings == {
        "spark.executor.memory": "8g",
        "spark.executor.cores": "4",
        "spark.speculation": "true",
    }
    uri = with_engine({"kind": "spark", "location": "s3a://bucket/cleanroom"})
    assert parse_config(uri, base_dir=tmp_path).server.engine.location == "s3a://bucket/cleanroom"


@pytest.mark.parametrize(
    ("engine", "key", "says"),
    [
        ({"kind": "duckdb"}, "server.engine.kind", "'memory' or 'spark'"),
        ({"ranges": 100}, "server.engine.ranges", "power of two"),
        ({"ranges": 0}, "server.engine.ranges", "power of two"),
        ({"location": "ftp://host/x"}, "server.engine.location", "hdfs://"),
        (
            {"settings": {"spark": {"executor": {"memory": "8g"}}}},
            "server.engine.settings.spark",
            "quoted",
        ),
        (
            {"settings": {"executor.memory": "8g"}},
            "server.engine.settings.executor.memory",
            "spark.*",
        ),
        ({"driver_rows": -1}, "server.engine.driver_rows", "0 or more"),
        ({"probe_seconds": 0}, "server.engine.probe_seconds", "seconds"),
        ({"workers": 3}, "server.engine.workers", "unknown key"),
    ],
)
def test_bad_engine_values_name_their_key(
    tmp_path: Path, engine: dict[str, Any], key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(with_engine(engine), base_dir=tmp_path)
    assert error.value.key == key
    assert says in error.value.message
