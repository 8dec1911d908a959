"""Where `upload` and `blind work` take the blind key from: flag, then environment, then profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from partners import profiles
from partners.cli import main
from tests.support import digest_array, random_digests, write_digest_file


@pytest.fixture
def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A profile that names a blind key (which does not exist: reading it tells who won)."""
    folder = tmp_path / "config" / "cleanroom-partner"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(
        'default_profile = "acme"\n[profiles.acme]\nserver = "127.0.0.1:9"\ncert = "c.pem"\n'
        'key = "k.pem"\nca = "ca.pem"\nblind_key = "from-profile.blindkey"\n',
        encoding="utf-8",
    )
    for variable in [*profiles.SETTINGS.values(), profiles.PROFILE_VARIABLE]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return folder


@pytest.fixture
def digests(tmp_path: Path) -> Path:
    matrix = random_digests(np.random.default_rng(0), 20)
    return write_digest_file(tmp_path / "d.parquet", {"email": digest_array(matrix)})


def _missing_key(args: list[str], env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert "BLIND_KEY_FILE_NOT_FOUND" in result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("command", ["upload", "blind work"])
def test_the_profile_gives_the_key_the_environment_beats_it_and_a_flag_beats_both(
    profile: Path, digests: Path, command: str
) -> None:
    args = (
        ["upload", str(digests), "--dataset-id=acme-crm"]
        if command == "upload"
        else ["blind", "work", "--collaboration=spring-launch"]
    )
    assert "from-profile.blindkey" in _missing_key(args)
    env = {"CLEANROOM_BLIND_KEY": "from-env.blindkey"}
    out = _missing_key(args, env)
    assert "from-env.blindkey" in out
    assert "from-profile" not in out
    out = _missing_key([*args, "--blind-key=from-flag.blindkey"], env)
    assert "from-flag.blindkey" in out
    assert "from-env" not in out


def test_config_show_names_the_blind_key_and_its_source(profile: Path) -> None:
    result = CliRunner().invoke(main, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert '"value": "' + str(profile / "from-profile.blindkey") + '"' in result.output


def test_blind_work_needs_a_key(profile: Path) -> None:
    (profile / "config.toml").write_text(
        (profile / "config.toml").read_text().replace('blind_key = "from-profile.blindkey"\n', "")
    )
    result = CliRunner().invoke(main, ["blind", "work"])
    assert result.exit_code == 2
    assert "--blind-key" in result.output


def test_a_bad_interval_is_refused_before_any_call(profile: Path, tmp_path: Path) -> None:
    key = tmp_path / "k"
    CliRunner().invoke(main, ["blind-key", "--collaboration=spring-launch", f"--out={key}"])
    result = CliRunner().invoke(main, ["blind", "work", f"--blind-key={key}", "--every=0s"])
    assert result.exit_code == 2, result.output
    assert "INVALID_INTERVAL" in result.output
