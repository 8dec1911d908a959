"""The configuration file: every bad value fails at load with a message naming its key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from cleanroom.config import Role, load_config, parse_config
from cleanroom.errors import ConfigError, ConfigProblemsError

BASE: dict[str, Any] = {
    "server": {
        "listen": "127.0.0.1:0",
        "data_dir": "data",
        "tls": {"certificate": "s.pem", "private_key": "s-key.pem", "client_ca": "ca.pem"},
        "audit": {"signing_key": "log.key"},
    },
    "partners": [
        {"id": "acme", "certificate_names": ["acme.partners.cleanroom.test"]},
        {"id": "ops", "certificate_names": ["ops.example"], "administrator": True},
    ],
    "collaborations": [
        {
            "id": "spring",
            "key_check_value": "0123456789abcdef",
            "members": [{"partner": "acme", "roles": ["uploader", "analyst"]}],
            "policy": {"minimum_threshold": 20},
        }
    ],
}


def changed(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def test_a_good_config_loads_with_defaults(tmp_path: Path) -> None:
    config = parse_config(BASE, base_dir=tmp_path)
    assert config.server.data_dir == tmp_path / "data"
    assert config.server.tls.client_ca == tmp_path / "ca.pem"
    spring = config.collaborations["spring"]
    assert spring.identifier_types == ("email", "phone", "maid")
    assert spring.policy.minimum_threshold == 20
    assert spring.policy.minimum_dataset_size == 1000
    assert spring.policy.noise
    assert (spring.policy.epsilon_budget, spring.policy.epsilon_per_report) == (10.0, 1.0)
    assert spring.roles_of(config.partners["acme"]) == {Role.UPLOADER, Role.ANALYST}
    assert Role.ADMIN in spring.roles_of(config.partners["ops"])
    assert config.partner_for(("x", "acme.partners.cleanroom.test")) == config.partners["acme"]
    assert config.partner_for(("unknown",)) is None
    limits = config.server
    assert (limits.max_workers, limits.max_calls_per_partner, limits.max_uploads_per_partner) == (
        8, 4, 2,
    )  # fmt: skip
    assert limits.max_upload_seconds == 6 * 3600
    assert limits.min_upload_bytes_per_second == 16 * 1024


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        ("collaborations.0.policy.minimum_threshold", 9, "collaborations[0].policy.minimum_threshold", "at least 10"),
        ("collaborations.0.policy.minimum_threshold", "50", "collaborations[0].policy.minimum_threshold", "must be an integer"),
        ("collaborations.0.policy.minimum_dataset_size", 5, "collaborations[0].policy.minimum_dataset_size", "at least minimum_threshold"),
        ("collaborations.0.policy.epsilon", 1, "collaborations[0].policy.epsilon", "unknown key"),
        ("collaborations.0.policy.noise", "yes", "collaborations[0].policy.noise", "must be true or false"),
        ("collaborations.0.policy.epsilon_budget", 0, "collaborations[0].policy.epsilon_budget", "above 0"),
        ("collaborations.0.policy.epsilon_per_report", 20, "collaborations[0].policy.epsilon_per_report", "at most epsilon_budget"),
        ("collaborations.0.policy.match_rate_cap", 1.5, "collaborations[0].policy.match_rate_cap", "between 0 and 1"),
        ("collaborations.0.policy.max_reports_per_partner_per_day", -1, "collaborations[0].policy.max_reports_per_partner_per_day", "0 (no limit)"),
        ("collaborations.0.policy.exact_releases_per_dataset_version", 0, "collaborations[0].policy.exact_releases_per_dataset_version", "at least 1"),
        ("collaborations.0.policy.exact_releases_per_dataset_version_in_collaboration", -1, "collaborations[0].policy.exact_releases_per_dataset_version_in_collaboration", "0 (no limit)"),
        ("collaborations.0.members", [{"partner": "acme", "roles": ["analyst"], "epsilon_share": 0}], "collaborations[0].members[0].epsilon_share", "above 0"),
        ("collaborations.0.members", [{"partner": "acme", "roles": ["analyst"], "epsilon_share": 11.0}], "collaborations[0].members", "more than the policy's epsilon_budget"),
        ("collaborations.0.key_check_value", "XYZ", "collaborations[0].key_check_value", "16 lowercase hex"),
        ("collaborations.0.id", "Spring Launch", "collaborations[0].id", "not a valid id"),
        ("collaborations.0.members", [{"partner": "nobody", "roles": ["analyst"]}], "collaborations[0].members[0].partner", "no partner"),
        ("collaborations.0.members", [{"partner": "acme", "roles": ["boss"]}], "collaborations[0].members[0].roles", "unknown role"),
        ("collaborations.0.identifier_types", [], "collaborations[0].identifier_types", "at least one"),
        ("partners.0.certificate_names", [], "partners[0].certificate_names", "at least one"),
        ("partners.1.certificate_names", ["acme.partners.cleanroom.test"], "partners[1].certificate_names", "already belongs"),
        ("partners.1.id", "acme", "partners[1].id", "defined twice"),
        ("server.tls", ..., "server.tls", "missing"),
        ("server.audit", ..., "server.audit", "missing"),
        ("server.max_workers", 0, "server.max_workers", "1 to 256"),
        ("server.max_calls_per_partner", 9, "server.max_calls_per_partner", "1 to 8"),
        ("server.max_calls_per_partner", 0, "server.max_calls_per_partner", "1 to 8"),
        ("server.max_uploads_per_partner", 5, "server.max_uploads_per_partner", "1 to 4"),
        ("server.max_upload_seconds", 0, "server.max_upload_seconds", "0.1 to 604800"),
        ("server.min_upload_bytes_per_second", -1, "server.min_upload_bytes_per_second", "0 (no minimum)"),
        ("server.colour", "blue", "server.colour", "unknown key"),
    ],
)  # fmt: skip
def test_bad_values_name_their_key(
    tmp_path: Path, path: str, value: Any, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(changed(path, value), base_dir=tmp_path)
    assert error.value.key == key
    assert words in error.value.message
    assert error.value.reason == "INVALID_CONFIG"


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="not a valid TOML"):
        load_config(bad)


def test_every_problem_is_reported_at_once_each_naming_its_key(tmp_path: Path) -> None:
    data = changed("collaborations.0.policy.minimum_threshold", 5)
    data["server"]["max_workers"] = 0
    data["server"]["listen"] = "nowhere"
    data["server"]["colour"] = "blue"
    data["partners"][0]["certificate_names"] = []
    data["collaborations"][0]["polciy"] = {}
    data["collaborations"][0]["members"][0]["roles"] = ["analist"]
    with pytest.raises(ConfigProblemsError) as error:
        parse_config(data, base_dir=tmp_path)
    keys = [p.key for p in error.value.problems]
    assert keys == [
        "server.colour",
        "server.max_workers",
        "server.listen",
        "partners[0].certificate_names",
        "collaborations[0].polciy",
        "collaborations[0].members[0].roles",
        "collaborations[0].policy.minimum_threshold",
    ]
    for problem in error.value.problems:
        assert problem.message.startswith(problem.key + ": ")
        assert problem.message in error.value.message
    assert "did you mean 'policy'?" in error.value.message
    assert "did you mean 'analyst'?" in error.value.message


@pytest.mark.parametrize(
    ("path", "value", "hint"),
    [
        ("server.max_worker", 4, "did you mean 'max_workers'?"),
        ("server.tls.client-ca", "ca.pem", "did you mean 'client_ca'?"),
        ("collaborations.0.key_check_valeu", "0123456789abcdef", "did you mean 'key_check_value'?"),
        ("collaborations.0.policy.minimum_treshold", 20, "did you mean 'minimum_threshold'?"),
    ],
)  # fmt: skip
def test_unknown_keys_that_are_near_misses_say_what_was_meant(
    tmp_path: Path, path: str, value: Any, hint: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(changed(path, value), base_dir=tmp_path)
    assert hint in error.value.message
    assert "unknown key" in error.value.message


@pytest.mark.parametrize("typo", ["emial", "phon", "e-mail", "maids"])
def test_an_identifier_type_that_looks_like_a_misspelt_built_in_is_an_error(
    tmp_path: Path, typo: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(
            changed("collaborations.0.identifier_types", ["phone", typo]), base_dir=tmp_path
        )
    assert error.value.key == "collaborations[0].identifier_types"
    assert "misspelt built-in" in error.value.message
    assert "did you mean" in error.value.message


def test_declared_identifier_types_are_kept_apart_from_built_in_ones(tmp_path: Path) -> None:
    config = parse_config(
        changed("collaborations.0.identifier_types", ["email", "loyalty_id", "member_no"]),
        base_dir=tmp_path,
    )
    spring = config.collaborations["spring"]
    assert spring.declared_identifier_types == ("loyalty_id", "member_no")
    assert spring.identifier_types == ("email", "loyalty_id", "member_no")


def test_a_previous_key_check_value_is_accepted_during_a_rotation(tmp_path: Path) -> None:
    config = parse_config(
        changed("collaborations.0.previous_key_check_value", "fedcba9876543210"), base_dir=tmp_path
    )
    assert config.collaborations["spring"].accepted_key_check_values == (
        "0123456789abcdef",
        "fedcba9876543210",
    )
    for bad, words in (
        ("0123456789abcdef", "same as key_check_value"),
        ("XYZ", "16 lowercase hex"),
    ):
        with pytest.raises(ConfigError) as error:
            parse_config(
                changed("collaborations.0.previous_key_check_value", bad), base_dir=tmp_path
            )
        assert error.value.key == "collaborations[0].previous_key_check_value"
        assert words in error.value.message


def test_epsilon_shares_default_to_an_equal_part_of_what_is_left(tmp_path: Path) -> None:
    data = changed(
        "collaborations.0.members",
        [
            {"partner": "acme", "roles": ["analyst"], "epsilon_share": 4},
            {"partner": "ops", "roles": ["analyst", "uploader"]},
        ],
    )
    data["partners"].append({"id": "corvid", "certificate_names": ["corvid.example"]})
    data["collaborations"][0]["members"].append({"partner": "corvid", "roles": ["analyst"]})
    spring = parse_config(data, base_dir=tmp_path).collaborations["spring"]
    assert spring.policy.exact_releases_per_dataset_version == 1
    assert spring.policy.exact_releases_per_dataset_version_in_collaboration == 0
    shares = {p: spring.epsilon_share(p) for p in ("acme", "ops", "corvid")}
    assert shares == {"acme": 4.0, "ops": 3.0, "corvid": 3.0}  # (10 - 4) split between two
