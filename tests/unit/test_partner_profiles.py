"""Connection profiles: the config file, `--profile`, the environment, `config show` (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from partners import profiles
from partners.cli import main
from partners.client import CleanRoomClient
from partners.errors import InputError

CONFIG = """\
default_profile = "acme"

[profiles.acme]
server = "cleanroom.example:50051"
cert = "acme.pem"
key = "acme-key.pem"
ca = "/etc/cleanroom/ca.pem"
collaboration = "spring-launch"

[profiles.staging]
server = "staging.example:50051"
collaboration = "staging-room"
"""


@pytest.fixture
def environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    folder = tmp_path / "config" / "cleanroom-partner"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(CONFIG, encoding="utf-8")
    for variable in [*profiles.SETTINGS.values(), profiles.PROFILE_VARIABLE]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return {"XDG_CONFIG_HOME": str(tmp_path / "config")}


def show(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = CliRunner().invoke(main, [*args[:2], "config", "show", "--json", *args[2:]]
                                if args[:1] == ("--profile",) else
                                ["config", "show", "--json", *args], env=env)  # fmt: skip
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.output)
    return data


def test_the_default_profile_gives_every_setting_with_paths_from_its_folder(
    environ: dict[str, str], tmp_path: Path
) -> None:
    data = show()
    settings = data["settings"]
    assert data["profile"] == "acme"
    assert settings["server"] == {"value": "cleanroom.example:50051", "source": "profile acme"}  # type: ignore[index]
    folder = tmp_path / "config" / "cleanroom-partner"
    assert settings["cert"]["value"] == str(folder / "acme.pem")  # type: ignore[index]
    assert settings["ca"]["value"] == "/etc/cleanroom/ca.pem"  # type: ignore[index]
    assert settings["server_name"] == {"value": None, "source": "unset"}  # type: ignore[index]


def test_flags_beat_the_environment_which_beats_the_profile(environ: dict[str, str]) -> None:
    env = {"CLEANROOM_SERVER": "env.example:1", "CLEANROOM_COLLABORATION": "from-env"}
    data = show("--server=flag.example:2", env=env)
    settings = data["settings"]
    assert settings["server"] == {"value": "flag.example:2", "source": "flag"}  # type: ignore[index]
    assert settings["collaboration"] == {  # type: ignore[index]
        "value": "from-env",
        "source": "environment (CLEANROOM_COLLABORATION)",
    }
    assert settings["key"]["source"] == "profile acme"  # type: ignore[index]


def test_profile_flag_beats_the_environment_variable(environ: dict[str, str]) -> None:
    assert show(env={"CLEANROOM_PROFILE": "staging"})["profile"] == "staging"
    data = show("--profile", "acme", env={"CLEANROOM_PROFILE": "staging"})
    assert data["profile"] == "acme"


def test_an_unknown_profile_is_named_with_the_known_ones(environ: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["--profile", "prod", "datasets", "list"])
    assert result.exit_code == 2
    assert "UNKNOWN_PROFILE" in result.output
    assert "acme, staging" in result.output


def test_commands_take_the_profile_as_their_defaults(environ: dict[str, str]) -> None:
    # `datasets list` needs --collaboration and the connection: the profile gives them, so
    # the command gets as far as reading the (missing) certificate files.
    result = CliRunner().invoke(main, ["datasets", "list"])
    assert result.exit_code == 2, result.output
    assert "CERTIFICATE_FILE_UNREADABLE" in result.output
    missing = CliRunner().invoke(main, ["--profile", "staging", "datasets", "list"])
    assert missing.exit_code == 2
    assert "Missing option '--cert'" in missing.output


def test_the_python_client_reads_the_profile(environ: dict[str, str]) -> None:
    with pytest.raises(InputError) as caught:
        CleanRoomClient.from_profile("staging")
    assert caught.value.reason == "MISSING_SETTING"
    with pytest.raises(InputError) as unreadable:
        CleanRoomClient.from_profile()
    assert unreadable.value.reason == "CERTIFICATE_FILE_UNREADABLE"


def test_a_malformed_config_is_refused(environ: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "config" / "cleanroom-partner" / "config.toml"
    path.write_text('[profiles.acme]\nserver = "x"\npassword = "y"\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        profiles.load_profile("acme")
    assert caught.value.reason == "INVALID_CONFIG"
    path.write_text("[profiles.acme\n", encoding="utf-8")
    with pytest.raises(InputError):
        profiles.load_profile("acme")
