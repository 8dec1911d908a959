"""Connection profiles: where the server is, who we are, and the default collaboration.

A brand's engineer keeps them in `$XDG_CONFIG_HOME/cleanroom-partner/config.toml` (by default
`~/.config/cleanroom-partner/config.toml`), one table per profile:

    default_profile = "acme"

    [profiles.acme]
    server = "cleanroom.example.net:8443"
    cert = "acme.crt"          # paths are relative to the config file's folder
    key = "acme.key"
    ca = "ca.crt"
    collaboration = "acme-globex"
    blind_key = "acme-globex.blindkey"   # a double-blind collaboration's (`blind-key`)

The profile used is the one `--profile` names, else `CLEANROOM_PROFILE`, else
`default_profile`, else none. Each setting is taken from the command line first, then from
the environment (`CLEANROOM_SERVER`, `CLEANROOM_CERT`, `CLEANROOM_KEY`, `CLEANROOM_CA`,
`CLEANROOM_SERVER_NAME`, `CLEANROOM_COLLABORATION`, `CLEANROOM_BLIND_KEY`), then from the
profile.

This module imports only the standard library and the toolkit's errors.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from partners.errors import InputError

SETTINGS = {
    "server": "CLEANROOM_SERVER",
    "cert": "CLEANROOM_CERT",
    "key": "CLEANROOM_KEY",
    "ca": "CLEANROOM_CA",
    "server_name": "CLEANROOM_SERVER_NAME",
    "collaboration": "CLEANROOM_COLLABORATION",
    "blind_key": "CLEANROOM_BLIND_KEY",
}
"""Each setting of a profile and the environment variable that overrides it."""

PATH_SETTINGS = ("cert", "key", "ca", "blind_key")
PROFILE_VARIABLE = "CLEANROOM_PROFILE"


@dataclass(frozen=True)
class Setting:
    """One resolved setting and where it came from.

    Attributes:
        value: The value, or None if no source gives it.
        source: `flag`, `environment (NAME)`, `profile NAME` or `unset`.
    """

    value: str | None
    source: str


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The partner config file: under `$XDG_CONFIG_HOME`, else `~/.config`."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cleanroom-partner" / "config.toml"


def profile_name(flag: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The profile chosen by `--profile`, else `CLEANROOM_PROFILE`, else the file's default."""
    environ = os.environ if environ is None else environ
    if flag:
        return flag
    if environ.get(PROFILE_VARIABLE):
        return environ[PROFILE_VARIABLE]
    default = _read(config_path(environ)).get("default_profile")
    return str(default) if default else None


def load_profile(name: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings of one profile, paths made absolute; empty for no profile.

    Raises:
        InputError: If the profile is named but not in the file (UNKNOWN_PROFILE), or the
            file or profile is malformed (INVALID_CONFIG).
    """
    if name is None:
        return {}
    path = config_path(environ)
    profiles = _read(path).get("profiles", {})
    if not isinstance(profiles, dict) or name not in profiles:
        known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) else ""
        raise InputError(
            "UNKNOWN_PROFILE",
            f"Profile {name!r} is not in {path}"
            + (f"; its profiles are {known}." if known else "; add a table profiles.NAME to it."),
            {"profile": name, "path": str(path)},
        )
    profile = profiles[name]
    if not isinstance(profile, dict):
        raise _invalid(path, f"profile {name!r} must be a table")
    settings: dict[str, str] = {}
    for key, value in profile.items():
        if key not in SETTINGS:
            raise _invalid(path, f"profile {name!r} has {key!r}; known are {', '.join(SETTINGS)}")
        if not isinstance(value, str):
            raise _invalid(path, f"{key} of profile {name!r} must be a string")
        settings[key] = (
            str(path.parent / Path(value).expanduser()) if key in PATH_SETTINGS else value
        )
    return settings


def resolved(
    flags: Mapping[str, str | None],
    profile: str | None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Setting]:
    """Every setting with its value and source: flags, then environment, then profile."""
    environ = os.environ if environ is None else environ
    from_profile = load_profile(profile, environ)
    found: dict[str, Setting] = {}
    for key, variable in SETTINGS.items():
        if flags.get(key):
            found[key] = Setting(flags[key], "flag")
        elif environ.get(variable):
            found[key] = Setting(environ[variable], f"environment ({variable})")
        elif key in from_profile:
            found[key] = Setting(from_profile[key], f"profile {profile}")
        else:
            found[key] = Setting(None, "unset")
    return found


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise _invalid(path, f"it is not valid TOML ({type(error).__name__})") from None


def _invalid(path: Path, why: str) -> InputError:
    return InputError(
        "INVALID_CONFIG", f"The partner config {path} is not usable: {why}.", {"path": str(path)}
    )
