"""The `matching` key of a collaboration: shared secret by default, or double blind."""

from __future__ import annotations

from pathlib import Path

import pytest

from cleanroom.config import Matching, parse_config
from cleanroom.errors import ConfigProblemsError
from tests.unit.test_config import BASE, changed


def test_matching_is_shared_secret_unless_said(tmp_path: Path) -> None:
    collaboration = parse_config(BASE, base_dir=tmp_path).collaborations["spring"]
    assert collaboration.matching is Matching.SHARED_SECRET


def test_double_blind_is_read_and_its_uploaders_known(tmp_path: Path) -> None:
    data = changed("collaborations.0.matching", "double_blind")
    data["collaborations"][0]["members"].append({"partner": "ops", "roles": ["analyst"]})
    collaboration = parse_config(data, base_dir=tmp_path).collaborations["spring"]
    assert collaboration.matching is Matching.DOUBLE_BLIND
    assert collaboration.uploaders == {"acme"}  # who must mask every dataset


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("double-blind", "did you mean 'double_blind'"),
        ("blind", "must be 'shared_secret' or 'double_blind'"),
        (True, "must be a string"),
    ],
)
def test_a_bad_matching_mode_names_its_key(tmp_path: Path, value: object, words: str) -> None:
    with pytest.raises(ConfigProblemsError) as error:
        parse_config(changed("collaborations.0.matching", value), base_dir=tmp_path)
    (problem,) = error.value.problems
    assert problem.key == "collaborations[0].matching"
    assert words in problem.message
