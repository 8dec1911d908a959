"""The server's configuration: a TOML file read once at start and checked whole.

Every problem is a `ConfigError` naming the key (for example
`collaborations[0].policy.minimum_threshold`), so an operator can fix it at once.
Relative paths are taken from the directory of the file.
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cleanroom.errors import ConfigError
from cleanroom.names import ID_PATTERN, ID_RULE

BUILTIN_IDENTIFIER_TYPES = ("email", "phone", "maid")
THRESHOLD_FLOOR = 10
KCV_PATTERN = re.compile(r"[0-9a-f]{16}")


class Role(enum.StrEnum):
    """What a partner may do in a collaboration (SPEC section 1)."""

    UPLOADER = "uploader"
    ANALYST = "analyst"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class TlsConfig:
    """The server's certificate and the CA that client certificates must chain to."""

    certificate: Path
    private_key: Path
    client_ca: Path


@dataclass(frozen=True)
class ServerConfig:
    """Where the server listens and keeps its data, and the key that signs its logs."""

    listen: str
    data_dir: Path
    tls: TlsConfig
    audit_signing_key: Path
    max_workers: int = 8
    max_upload_message_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class Partner:
    """A brand (or auditor, or operator) known by the names in its client certificates."""

    id: str
    display_name: str
    certificate_names: tuple[str, ...]
    administrator: bool = False


@dataclass(frozen=True)
class PrivacyPolicy:
    """The privacy rules of one collaboration (SPEC section 5)."""

    minimum_threshold: int = 50
    minimum_dataset_size: int = 1000

    def __post_init__(self) -> None:
        if self.minimum_threshold < THRESHOLD_FLOOR:
            raise ValueError(f"must be at least {THRESHOLD_FLOOR}, got {self.minimum_threshold}")
        if self.minimum_dataset_size < self.minimum_threshold:
            raise ValueError(
                f"must be at least the minimum threshold ({self.minimum_threshold}),"
                f" got {self.minimum_dataset_size}"
            )


@dataclass(frozen=True)
class Collaboration:
    """One clean room: its members and their roles, its key check value and its policy."""

    id: str
    display_name: str
    key_check_value: str
    identifier_types: tuple[str, ...]
    members: Mapping[str, frozenset[Role]]
    policy: PrivacyPolicy = field(default_factory=PrivacyPolicy)

    def roles_of(self, partner: Partner) -> frozenset[Role]:
        """The partner's roles here: its member roles, plus admin for administrators."""
        roles = self.members.get(partner.id, frozenset())
        return roles | {Role.ADMIN} if partner.administrator else roles


@dataclass(frozen=True)
class Config:
    """The whole configuration of a server."""

    server: ServerConfig
    partners: Mapping[str, Partner]
    collaborations: Mapping[str, Collaboration]

    def partner_for(self, certificate_names: tuple[str, ...]) -> Partner | None:
        """The partner that one of a certificate's names (SANs) belongs to, if any."""
        for partner in self.partners.values():
            if any(name in partner.certificate_names for name in certificate_names):
                return partner
        return None


class _Table:
    """A TOML table read strictly: unknown keys and wrong types are errors naming the key."""

    def __init__(self, data: Mapping[str, Any], key: str, allowed: set[str]) -> None:
        self.data = data
        self.key = key
        for name in data:
            if name not in allowed:
                raise ConfigError(
                    self.child(name), f"unknown key; expected one of {', '.join(sorted(allowed))}"
                )

    def child(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, kind: type, default: Any = ...) -> Any:
        if name not in self.data:
            if default is ...:
                raise ConfigError(self.child(name), "required key is missing")
            return default
        value = self.data[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                self.child(name), f"must be a {kind.__name__}, got {type(value).__name__}"
            )
        return value

    def get_id(self, name: str) -> str:
        value: str = self.get(name, str)
        if not ID_PATTERN.fullmatch(value):
            raise ConfigError(self.child(name), f"{value!r} is not a valid id: use {ID_RULE}")
        return value

    def get_strings(self, name: str, default: Any = ...) -> tuple[str, ...]:
        values = self.get(name, list, default)
        if not all(isinstance(v, str) for v in values):
            raise ConfigError(self.child(name), "must be a list of strings")
        return tuple(values)

    def tables(self, name: str) -> list[tuple[str, Mapping[str, Any]]]:
        items = self.get(name, list, [])
        if not all(isinstance(item, dict) for item in items):
            raise ConfigError(self.child(name), f"must be an array of tables ([[{name}]])")
        return [(f"{self.child(name)}[{i}]", item) for i, item in enumerate(items)]


def load_config(path: Path) -> Config:
    """Reads and checks the configuration file at `path`.

    Raises:
        ConfigError: The file is missing, is not TOML, or has a bad value.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "configuration file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), f"not a valid TOML file: {error}") from None
    return parse_config(data, base_dir=path.resolve().parent)


def parse_config(data: Mapping[str, Any], *, base_dir: Path) -> Config:
    """Checks configuration data already read from TOML; paths are relative to `base_dir`."""
    root = _Table(data, "", {"server", "partners", "collaborations"})
    server = _parse_server(_Table(root.get("server", dict), "server", _SERVER_KEYS), base_dir)
    partners: dict[str, Partner] = {}
    owners: dict[str, str] = {}
    for key, table in root.tables("partners"):
        partner = _parse_partner(_Table(table, key, _PARTNER_KEYS))
        if partner.id in partners:
            raise ConfigError(f"{key}.id", f"partner {partner.id!r} is defined twice")
        for name in partner.certificate_names:
            if name in owners:
                raise ConfigError(
                    f"{key}.certificate_names",
                    f"{name!r} already belongs to partner {owners[name]!r}",
                )
            owners[name] = partner.id
        partners[partner.id] = partner
    collaborations: dict[str, Collaboration] = {}
    for key, table in root.tables("collaborations"):
        collaboration = _parse_collaboration(_Table(table, key, _COLLABORATION_KEYS), partners)
        if collaboration.id in collaborations:
            raise ConfigError(f"{key}.id", f"collaboration {collaboration.id!r} is defined twice")
        collaborations[collaboration.id] = collaboration
    return Config(server=server, partners=partners, collaborations=collaborations)


_SERVER_KEYS = {"listen", "data_dir", "tls", "audit", "max_workers", "max_upload_message_bytes"}
_TLS_KEYS = {"certificate", "private_key", "client_ca"}
_AUDIT_KEYS = {"signing_key"}
_PARTNER_KEYS = {"id", "display_name", "certificate_names", "administrator"}
_COLLABORATION_KEYS = {
    "id",
    "display_name",
    "key_check_value",
    "identifier_types",
    "members",
    "policy",
}
_MEMBER_KEYS = {"partner", "roles"}
_POLICY_KEYS = {"minimum_threshold", "minimum_dataset_size"}


def _parse_server(table: _Table, base_dir: Path) -> ServerConfig:
    tls = _Table(table.get("tls", dict), table.child("tls"), _TLS_KEYS)
    audit = _Table(table.get("audit", dict), table.child("audit"), _AUDIT_KEYS)

    def path(t: _Table, name: str) -> Path:
        return base_dir / Path(t.get(name, str))

    max_workers = table.get("max_workers", int, 8)
    if not 1 <= max_workers <= 256:
        raise ConfigError(table.child("max_workers"), f"must be 1 to 256, got {max_workers}")
    max_message = table.get("max_upload_message_bytes", int, 4 * 1024 * 1024)
    if not 64 * 1024 <= max_message <= 64 * 1024 * 1024:
        raise ConfigError(
            table.child("max_upload_message_bytes"), f"must be 64 KiB to 64 MiB, got {max_message}"
        )
    return ServerConfig(
        listen=table.get("listen", str, "127.0.0.1:50051"),
        data_dir=path(table, "data_dir"),
        tls=TlsConfig(
            certificate=path(tls, "certificate"),
            private_key=path(tls, "private_key"),
            client_ca=path(tls, "client_ca"),
        ),
        audit_signing_key=path(audit, "signing_key"),
        max_workers=max_workers,
        max_upload_message_bytes=max_message,
    )


def _parse_partner(table: _Table) -> Partner:
    partner_id = table.get_id("id")
    names = table.get_strings("certificate_names")
    if not names:
        raise ConfigError(table.child("certificate_names"), "list at least one certificate name")
    return Partner(
        id=partner_id,
        display_name=table.get("display_name", str, partner_id),
        certificate_names=names,
        administrator=table.get("administrator", bool, False),
    )


def _parse_collaboration(table: _Table, partners: Mapping[str, Partner]) -> Collaboration:
    collaboration_id = table.get_id("id")
    kcv = table.get("key_check_value", str)
    if not KCV_PATTERN.fullmatch(kcv):
        raise ConfigError(
            table.child("key_check_value"),
            "must be 16 lowercase hex characters, as `cleanroom-partner keygen` prints",
        )
    types = table.get_strings("identifier_types", BUILTIN_IDENTIFIER_TYPES)
    for identifier_type in types:
        if not ID_PATTERN.fullmatch(identifier_type.replace("_", "-")):
            raise ConfigError(
                table.child("identifier_types"), f"{identifier_type!r} is not a valid type name"
            )
    if len(set(types)) != len(types) or not types:
        raise ConfigError(table.child("identifier_types"), "list each type once, at least one")
    members: dict[str, frozenset[Role]] = {}
    for key, item in table.tables("members"):
        member = _Table(item, key, _MEMBER_KEYS)
        partner_id = member.get("partner", str)
        if partner_id not in partners:
            raise ConfigError(f"{key}.partner", f"no partner {partner_id!r} is defined")
        if partner_id in members:
            raise ConfigError(f"{key}.partner", f"partner {partner_id!r} is a member twice")
        roles = member.get_strings("roles")
        valid = {role.value for role in Role}
        for role in roles:
            if role not in valid:
                raise ConfigError(
                    f"{key}.roles", f"unknown role {role!r}; use {', '.join(sorted(valid))}"
                )
        members[partner_id] = frozenset(Role(role) for role in roles)
    policy_table = _Table(table.get("policy", dict, {}), table.child("policy"), _POLICY_KEYS)
    threshold = policy_table.get("minimum_threshold", int, 50)
    if threshold < THRESHOLD_FLOOR:
        raise ConfigError(
            policy_table.child("minimum_threshold"),
            f"must be at least {THRESHOLD_FLOOR}, got {threshold}",
        )
    minimum_size = policy_table.get("minimum_dataset_size", int, 1000)
    if minimum_size < threshold:
        raise ConfigError(
            policy_table.child("minimum_dataset_size"),
            f"must be at least minimum_threshold ({threshold}), got {minimum_size}",
        )
    policy = PrivacyPolicy(minimum_threshold=threshold, minimum_dataset_size=minimum_size)
    return Collaboration(
        id=collaboration_id,
        display_name=table.get("display_name", str, collaboration_id),
        key_check_value=kcv,
        identifier_types=types,
        members=members,
        policy=policy,
    )
