"""The server's configuration: a TOML file read once at start and checked whole.

Every problem is a `ConfigError` naming the key (for example
`collaborations[0].policy.minimum_threshold`), so an operator can fix it at once.
Relative paths are taken from the directory of the file.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from cleanroom.errors import ConfigError, ConfigProblemsError
from cleanroom.names import ID_PATTERN, ID_RULE
from cleanroom.proofs.cosignature import WitnessVerifier
from cleanroom.proofs.signed_note import NoteError, NoteVerifier

BUILTIN_IDENTIFIER_TYPES = ("email", "phone", "maid")
THRESHOLD_FLOOR = 10
MAX_EPSILON = 1000.0
KCV_PATTERN = re.compile(r"[0-9a-f]{16}")


class Matching(enum.StrEnum):
    """How a collaboration's datasets are matched (SPEC sections 4 and 8)."""

    SHARED_SECRET = "shared_secret"  # noqa: S105 - a mode, not a secret
    """On digests of the collaboration secret, which the server holds."""
    DOUBLE_BLIND = "double_blind"
    """On ristretto255 elements masked by every uploader's own scalar, in turn."""


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


ENGINE_KINDS = ("memory", "spark")


@dataclass(frozen=True)
class EngineConfig:
    """The matching engine (`[server.engine]`): in memory, or Spark with its copies' location.

    Attributes:
        kind: "memory" (the default) or "spark".
        master: The Spark master URL: local[N], spark://host:port, k8s://https://host:port.
        settings: Spark settings (`spark.*` keys), passed to the session as they are.
        location: Where the datasets' prefix-range copies go, read by the executors: a
            path or a URI (README, "Scaling"). Default: `ranges/` in the data directory.
        ranges: Prefix ranges per new copy, a power of two (copies keep theirs).
        probe_seconds: How long a start-up probe job may wait for an executor.
        driver_rows: Questions over fewer rows (all their datasets together) are matched
            on the server by the in-memory engine, faster than any Spark job.
    """

    kind: str = "memory"
    master: str = "local[*]"
    settings: Mapping[str, str] = field(default_factory=dict)
    location: str = ""
    ranges: int = 64
    probe_seconds: float = 60.0
    driver_rows: int = 1_000_000


@dataclass(frozen=True)
class ServerConfig:
    """Where the server listens and keeps its data, and the key that signs its logs."""

    listen: str
    data_dir: Path
    tls: TlsConfig
    audit_signing_key: Path
    max_workers: int = 8
    max_upload_message_bytes: int = 4 * 1024 * 1024
    upload_idle_timeout_seconds: float = 60.0
    retention_sweep_seconds: float = 3600.0
    max_calls_per_partner: int = 4
    max_uploads_per_partner: int = 2
    max_upload_seconds: float = 6 * 3600.0
    min_upload_bytes_per_second: int = 16 * 1024
    ops_listen: str = "127.0.0.1:9464"
    audit_previous_verifier_keys: tuple[str, ...] = ()
    engine: EngineConfig = field(default_factory=EngineConfig)


@dataclass(frozen=True)
class Partner:
    """A brand (or auditor, or operator) known by the names in its client certificates."""

    id: str
    display_name: str
    certificate_names: tuple[str, ...]
    administrator: bool = False


class PolicyError(ValueError):
    """A privacy policy value is out of range; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PrivacyPolicy:
    """The privacy rules of one collaboration (SPEC section 5), checked when made.

    Attributes:
        minimum_threshold: k: every released count below it is suppressed (at least 10).
        minimum_dataset_size: Smaller datasets cannot be used in a report.
        noise: Whether released counts carry discrete Laplace noise (differential privacy).
            Without noise, suppressed counts are protected by secondary suppression and
            near-duplicate datasets are refused.
        epsilon_budget: The collaboration's total privacy budget, spent by noisy reports.
        epsilon_per_report: What one noisy report spends.
        whole_percent_rates: Whether match rates are rounded to whole percent.
        match_rate_cap: Rates above it are shown as "above the cap" (e.g. 0.85), or None.
        max_reports_per_partner_per_day: How many reports one brand may create per UTC day
            (0: no limit).
        exact_releases_per_dataset_version: Without noise, how many reports each analyst
            brand may have over one version of another brand's dataset (at least 1).
        exact_releases_per_dataset_version_in_collaboration: Without noise, how many
            reports all analyst brands together may have over one version of a dataset
            (0: no limit beyond the per-brand one). 1 stops two colluding brands from
            differencing; see README "Privacy model".
    """

    minimum_threshold: int = 50
    minimum_dataset_size: int = 1000
    noise: bool = True
    epsilon_budget: float = 10.0
    epsilon_per_report: float = 1.0
    whole_percent_rates: bool = True
    match_rate_cap: float | None = None
    max_reports_per_partner_per_day: int = 0
    exact_releases_per_dataset_version: int = 1
    exact_releases_per_dataset_version_in_collaboration: int = 0

    def __post_init__(self) -> None:
        problems = policy_problems(self)
        if problems:
            raise problems[0]


def policy_problems(policy: PrivacyPolicy) -> list[PolicyError]:
    """Every rule that the values of `policy` break, each naming its field."""
    checks = [
        ("minimum_threshold", policy.minimum_threshold >= THRESHOLD_FLOOR,
         f"must be at least {THRESHOLD_FLOOR}"),
        ("minimum_dataset_size", policy.minimum_dataset_size >= policy.minimum_threshold,
         f"must be at least minimum_threshold ({policy.minimum_threshold})"),
        ("epsilon_budget", 0 < policy.epsilon_budget <= MAX_EPSILON,
         f"must be above 0 and at most {MAX_EPSILON}"),
        ("epsilon_per_report", 0 < policy.epsilon_per_report <= policy.epsilon_budget,
         f"must be above 0 and at most epsilon_budget ({policy.epsilon_budget})"),
        ("match_rate_cap", policy.match_rate_cap is None or 0 < policy.match_rate_cap < 1,
         "must be between 0 and 1, e.g. 0.85"),
        ("max_reports_per_partner_per_day", policy.max_reports_per_partner_per_day >= 0,
         "must be 0 (no limit) or more"),
        ("exact_releases_per_dataset_version", policy.exact_releases_per_dataset_version >= 1,
         "must be at least 1"),
        ("exact_releases_per_dataset_version_in_collaboration",
         policy.exact_releases_per_dataset_version_in_collaboration >= 0,
         "must be 0 (no limit) or more"),
    ]  # fmt: skip
    return [
        PolicyError(name, f"{rule}, got {getattr(policy, name)}")
        for name, ok, rule in checks
        if not ok
    ]


@dataclass(frozen=True)
class Witness:
    """A member that cosigns the collaboration's checkpoints, and its public key."""

    partner: str
    public_key: str


@dataclass(frozen=True)
class Collaboration:
    """One clean room: its members and their roles, its key check value and its policy."""

    id: str
    display_name: str
    key_check_value: str
    identifier_types: tuple[str, ...]
    members: Mapping[str, frozenset[Role]]
    policy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    retention_days: int | None = None
    epsilon_shares: Mapping[str, float] = field(default_factory=dict)
    previous_key_check_value: str | None = None
    witnesses: tuple[Witness, ...] = ()
    witness_quorum: int = 0
    matching: Matching = Matching.SHARED_SECRET

    @property
    def uploaders(self) -> frozenset[str]:
        """The members that upload: in double-blind mode, each must mask every dataset."""
        return frozenset(p for p, roles in self.members.items() if Role.UPLOADER in roles)

    def witness_keys(self, partner: Partner) -> tuple[str, ...]:
        """The public keys with which this partner witnesses the collaboration's log."""
        return tuple(w.public_key for w in self.witnesses if w.partner == partner.id)

    @property
    def accepted_key_check_values(self) -> tuple[str, ...]:
        """The KCVs that uploads may carry: the current one, and the previous during a rotation."""
        previous = self.previous_key_check_value
        return (self.key_check_value,) if previous is None else (self.key_check_value, previous)

    @property
    def declared_identifier_types(self) -> tuple[str, ...]:
        """The identifier types this collaboration declares beside the built-in ones."""
        return tuple(t for t in self.identifier_types if t not in BUILTIN_IDENTIFIER_TYPES)

    def roles_of(self, partner: Partner) -> frozenset[Role]:
        """The partner's roles here: its member roles, plus admin for administrators."""
        roles = self.members.get(partner.id, frozenset())
        return roles | {Role.ADMIN} if partner.administrator else roles

    def epsilon_share(self, partner_id: str) -> float:
        """The part of the epsilon budget that one member brand's reports may spend.

        A member's configured `epsilon_share`, else an equal part of what the configured
        shares leave, split among the analyst members without one (administrators who
        are no analyst member share that part too, as one more member).
        """
        if partner_id in self.epsilon_shares:
            return self.epsilon_shares[partner_id]
        unset = [
            p for p, roles in self.members.items()
            if Role.ANALYST in roles and p not in self.epsilon_shares
        ]  # fmt: skip
        if partner_id not in unset:
            unset.append(partner_id)
        left = self.policy.epsilon_budget - sum(self.epsilon_shares.values())
        return max(left, 0.0) / len(unset)


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


class _SkipError(Exception):
    """A required value is missing or bad: the object that needs it is skipped, not checked."""


class _Problems:
    """The problems found so far; parsing goes on after each so that all are shown at once."""

    def __init__(self) -> None:
        self.found: list[ConfigError] = []

    def add(self, key: str, message: str) -> None:
        self.found.append(ConfigError(key, message))

    def skip(self, key: str, message: str) -> _SkipError:
        """Records a problem that leaves nothing to check further; raise what it returns."""
        self.add(key, message)
        return _SkipError(key)


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for a near miss of one of `choices`, else an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Table:
    """A TOML table read strictly: unknown keys and wrong types are problems naming the key.

    A bad value with a default is recorded and the default used, so that later keys are
    still checked; a bad required value raises `_SkipError` for the object that needs it.
    """

    def __init__(
        self, data: Mapping[str, Any], key: str, allowed: set[str], problems: _Problems
    ) -> None:
        self.data = data
        self.key = key
        self.problems = problems
        for name in data:
            if name not in allowed:
                hint = _did_you_mean(name, allowed)
                expected = ", ".join(sorted(allowed))
                problems.add(
                    self.child(name),
                    f"unknown key{hint} Expected one of {expected}"
                    if hint
                    else f"unknown key; expected one of {expected}",
                )

    def child(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def problem(self, name: str, message: str) -> None:
        """Records a problem with the value of `name`."""
        self.problems.add(self.child(name), message)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if name not in self.data:
            if default is ...:
                raise self.problems.skip(self.child(name), "required key is missing")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
            message = f"must be {names}, got {_KIND_NAMES.get(type(value), type(value).__name__)}"
            if default is ...:
                raise self.problems.skip(self.child(name), message)
            self.problem(name, message)
            return default
        return float(cast("float", value)) if float in kinds else value

    def get_id(self, name: str) -> str:
        value: str = self.get(name, str)
        if not ID_PATTERN.fullmatch(value):
            raise self.problems.skip(
                self.child(name), f"{value!r} is not a valid id: use {ID_RULE}"
            )
        return value

    def get_strings(self, name: str, default: Any = ...) -> tuple[str, ...]:
        values = self.get(name, list, default)
        if not all(isinstance(v, str) for v in values):
            if default is ...:
                raise self.problems.skip(self.child(name), "must be a list of strings")
            self.problem(name, "must be a list of strings")
            return tuple(default)
        return tuple(values)

    def table(self, name: str, allowed: set[str], default: Any = ...) -> _Table:
        """The sub-table `name`, read with its own allowed keys."""
        return _Table(self.get(name, dict, default), self.child(name), allowed, self.problems)

    def tables(self, name: str) -> list[tuple[str, Mapping[str, Any]]]:
        items = self.get(name, list, [])
        if not all(isinstance(item, dict) for item in items):
            self.problem(name, f"must be an array of tables ([[{name}]])")
            return []
        return [(f"{self.child(name)}[{i}]", item) for i, item in enumerate(items)]


# "must be a int" reads badly; TOML's own names for its types read well.
_KIND_NAMES: dict[type, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "an array",
    dict: "a table",
}


def load_config(path: Path) -> Config:
    """Reads and checks the configuration file at `path`.

    Raises:
        ConfigError: The file is missing, is not TOML, or has bad values (a `ConfigProblemsError`
            listing every one of them).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "configuration file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), f"not a valid TOML file: {error}") from None
    except OSError as error:
        raise ConfigError(str(path), f"cannot read the file: {error.strerror}") from None
    return parse_config(data, base_dir=path.resolve().parent)


def parse_config(data: Mapping[str, Any], *, base_dir: Path) -> Config:
    """Checks configuration data already read from TOML; paths are relative to `base_dir`.

    Raises:
        ConfigProblemsError: Every problem found, each naming its key.
    """
    problems = _Problems()
    root = _Table(data, "", {"server", "partners", "collaborations"}, problems)
    server: ServerConfig | None = None
    with contextlib.suppress(_SkipError):
        server = _parse_server(root.table("server", _SERVER_KEYS), base_dir)
    partners: dict[str, Partner] = {}
    owners: dict[str, str] = {}
    for key, table in root.tables("partners"):
        try:
            partner = _parse_partner(_Table(table, key, _PARTNER_KEYS, problems))
        except _SkipError:
            continue
        if partner.id in partners:
            problems.add(f"{key}.id", f"partner {partner.id!r} is defined twice")
            continue
        for name in partner.certificate_names:
            if name in owners:
                problems.add(
                    f"{key}.certificate_names",
                    f"{name!r} already belongs to partner {owners[name]!r}",
                )
            owners[name] = partner.id
        partners[partner.id] = partner
    collaborations: dict[str, Collaboration] = {}
    for key, table in root.tables("collaborations"):
        try:
            collaboration = _parse_collaboration(
                _Table(table, key, _COLLABORATION_KEYS, problems), partners
            )
        except _SkipError:
            continue
        if collaboration.id in collaborations:
            problems.add(f"{key}.id", f"collaboration {collaboration.id!r} is defined twice")
            continue
        collaborations[collaboration.id] = collaboration
    if problems.found or server is None:
        raise ConfigProblemsError(problems.found)
    # Read-only views: a configuration is a snapshot that running calls share.
    return Config(
        server=server,
        partners=MappingProxyType(partners),
        collaborations=MappingProxyType(collaborations),
    )


_SERVER_KEYS = {
    "listen",
    "data_dir",
    "tls",
    "audit",
    "ops",
    "max_workers",
    "max_upload_message_bytes",
    "upload_idle_timeout_seconds",
    "retention_sweep_seconds",
    "max_calls_per_partner",
    "max_uploads_per_partner",
    "max_upload_seconds",
    "min_upload_bytes_per_second",
    "engine",
}
_ENGINE_KEYS = {"kind", "master", "settings", "location", "ranges", "probe_seconds", "driver_rows"}
_TLS_KEYS = {"certificate", "private_key", "client_ca"}
_AUDIT_KEYS = {"signing_key", "previous_verifier_keys"}
_OPS_KEYS = {"listen"}
_PARTNER_KEYS = {"id", "display_name", "certificate_names", "administrator"}
_COLLABORATION_KEYS = {
    "id",
    "matching",
    "retention_days",
    "display_name",
    "key_check_value",
    "previous_key_check_value",
    "identifier_types",
    "members",
    "policy",
    "witnesses",
    "witness_quorum",
}
_MEMBER_KEYS = {"partner", "roles", "epsilon_share"}
_POLICY_TYPES: dict[str, type | tuple[type, ...]] = {
    "minimum_threshold": int,
    "minimum_dataset_size": int,
    "noise": bool,
    "epsilon_budget": (int, float),
    "epsilon_per_report": (int, float),
    "whole_percent_rates": bool,
    "match_rate_cap": (int, float),
    "max_reports_per_partner_per_day": int,
    "exact_releases_per_dataset_version": int,
    "exact_releases_per_dataset_version_in_collaboration": int,
}
_POLICY_KEYS = set(_POLICY_TYPES)


def _parse_server(table: _Table, base_dir: Path) -> ServerConfig:
    def path(t: _Table | None, name: str) -> Path | None:
        if t is None:
            return None
        try:
            return base_dir / Path(t.get(name, str))
        except _SkipError:
            return None

    tls = audit = None
    with contextlib.suppress(_SkipError):
        tls = table.table("tls", _TLS_KEYS)
    with contextlib.suppress(_SkipError):
        audit = table.table("audit", _AUDIT_KEYS)
    ops = table.table("ops", _OPS_KEYS, {})
    max_workers = table.get("max_workers", int, 8)
    if not 1 <= max_workers <= 256:
        table.problem("max_workers", f"must be 1 to 256, got {max_workers}")
    max_message = table.get("max_upload_message_bytes", int, 4 * 1024 * 1024)
    if not 64 * 1024 <= max_message <= 64 * 1024 * 1024:
        table.problem("max_upload_message_bytes", f"must be 64 KiB to 64 MiB, got {max_message}")
    values = {
        "listen": _listen(table, "listen", "127.0.0.1:50051"),
        "ops_listen": _listen(ops, "listen", "127.0.0.1:9464"),
        "data_dir": path(table, "data_dir"),
        "audit_signing_key": path(audit, "signing_key"),
        "max_workers": max_workers,
        "max_upload_message_bytes": max_message,
        "upload_idle_timeout_seconds": _seconds(table, "upload_idle_timeout_seconds", 60.0),
        "retention_sweep_seconds": _seconds(table, "retention_sweep_seconds", 3600.0),
        "audit_previous_verifier_keys": _previous_keys(audit),
        **_fair_sharing(table, max_workers),
    }
    engine = _parse_engine(
        table.table("engine", _ENGINE_KEYS, {}), base_dir, cast("Path | None", values["data_dir"])
    )
    files = {name: path(tls, name) for name in ("certificate", "private_key", "client_ca")}
    if tls is None or None in files.values() or None in values.values():
        raise _SkipError("server")
    return ServerConfig(tls=TlsConfig(**cast("dict[str, Path]", files)), engine=engine, **values)


def _fair_sharing(table: _Table, max_workers: int) -> dict[str, Any]:
    """The per-partner limits and the upload time limits, each checked."""
    # Bounded by the limit each shares; a bad one is reported once, under its own key.
    workers = min(max(max_workers, 1), 256)
    per_partner = _count(table, "max_calls_per_partner", min(4, workers), workers)
    calls = min(max(per_partner, 1), workers)
    uploads = _count(table, "max_uploads_per_partner", min(2, calls), calls)
    min_rate = table.get("min_upload_bytes_per_second", int, 16 * 1024)
    if not 0 <= min_rate <= 1024 * 1024 * 1024:
        table.problem(
            "min_upload_bytes_per_second",
            f"must be 0 (no minimum) to 1 GiB a second, got {min_rate}",
        )
    return {
        "max_calls_per_partner": per_partner,
        "max_uploads_per_partner": uploads,
        "max_upload_seconds": _seconds(table, "max_upload_seconds", 6 * 3600.0),
        "min_upload_bytes_per_second": min_rate,
    }


def _count(table: _Table, name: str, default: int, most: int) -> int:
    """A per-partner limit: at least 1, at most `most` (the limit it shares)."""
    value: int = table.get(name, int, default)
    if not 1 <= value <= most:
        table.problem(name, f"must be 1 to {most}, got {value}")
    return value


def _previous_keys(audit: _Table | None) -> tuple[str, ...]:
    """The verifier keys of retired signing keys, oldest first, each checked."""
    if audit is None:
        return ()
    keys = audit.get_strings("previous_verifier_keys", ())
    for key in keys:
        try:
            NoteVerifier(key)
        except NoteError as error:
            audit.problem("previous_verifier_keys", f"{key!r}: {error}")
    return tuple(key.strip() for key in keys)


def _witnesses(
    table: _Table, members: Mapping[str, frozenset[Role]]
) -> tuple[tuple[Witness, ...], int]:
    """The witnesses (members and their public keys), and how many must cosign."""
    witnesses: list[Witness] = []
    ids = set()
    for key, item in table.tables("witnesses"):
        entry = _Table(item, key, {"partner", "public_key"}, table.problems)
        try:
            partner = entry.get("partner", str)
            public_key = entry.get("public_key", str).strip()
        except _SkipError:
            continue
        if partner not in members:
            entry.problem(
                "partner", f"{partner!r} is not a member{_did_you_mean(partner, members)}"
            )
            continue
        try:
            ids.add(WitnessVerifier(public_key).key_id)
        except NoteError as error:
            entry.problem(
                "public_key", f"{error}; use what `cleanroom-partner audit witness-keygen` prints"
            )
            continue
        witnesses.append(Witness(partner, public_key))
    if len(ids) != len(witnesses):
        table.problem("witnesses", "list each witness key once")
    quorum = table.get("witness_quorum", int, len(witnesses))
    if not 0 <= quorum <= len(witnesses):
        table.problem(
            "witness_quorum", f"must be 0 to {len(witnesses)} (the witnesses), got {quorum}"
        )
        quorum = len(witnesses)
    return tuple(witnesses), quorum


def _parse_engine(table: _Table, base_dir: Path, data_dir: Path | None) -> EngineConfig:
    """`[server.engine]`; each bad value is a problem, its default used to go on checking."""
    defaults = EngineConfig()
    kind = table.get("kind", str, defaults.kind)
    if kind not in ENGINE_KINDS:
        table.problem("kind", f"must be {' or '.join(map(repr, ENGINE_KINDS))}, got {kind!r}")
    settings: dict[str, str] = {}
    for name, value in table.get("settings", dict, {}).items():
        if not name.startswith("spark.") or isinstance(value, dict | list):
            table.problem(
                f"settings.{name}",
                'Spark settings are spark.* keys, quoted ("spark.executor.memory" = "4g"),'
                " with a string, number or boolean value",
            )
            continue
        settings[name] = str(value).lower() if isinstance(value, bool) else str(value)
    location = table.get("location", str, "")
    if not location:
        location = str((data_dir or base_dir) / "ranges")
    elif "://" not in location:
        location = str(base_dir / Path(location))
    elif location.split("://", 1)[0] not in ("file", "hdfs", "viewfs", "s3", "s3a", "gs"):
        table.problem("location", "must be a path or a file://, hdfs://, s3a:// or gs:// URI")
    ranges = table.get("ranges", int, defaults.ranges)
    if ranges < 1 or ranges & (ranges - 1) or ranges > 65536:
        table.problem("ranges", f"must be a power of two from 1 to 65536, got {ranges}")
    driver_rows = table.get("driver_rows", int, defaults.driver_rows)
    if driver_rows < 0:
        table.problem("driver_rows", f"must be 0 or more, got {driver_rows}")
    return EngineConfig(
        kind=kind,
        master=table.get("master", str, defaults.master),
        settings=settings,
        location=location,
        ranges=ranges,
        probe_seconds=_seconds(table, "probe_seconds", defaults.probe_seconds),
        driver_rows=driver_rows,
    )


def _listen(table: _Table, name: str, default: str) -> str:
    listen: str = table.get(name, str, default)
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        table.problem(
            name,
            f"must be host:port with a port from 0 to 65535, e.g. {default}; got {listen!r}",
        )
    return listen


def _seconds(table: _Table, name: str, default: float) -> float:
    value: float = table.get(name, (int, float), default)
    if not 0.1 <= value <= 86400 * 7:
        table.problem(name, f"must be 0.1 to 604800 seconds, got {value}")
    return value


def _parse_partner(table: _Table) -> Partner:
    partner_id = table.get_id("id")
    names = table.get_strings("certificate_names")
    if not names:
        table.problem("certificate_names", "list at least one certificate name")
    return Partner(
        id=partner_id,
        display_name=table.get("display_name", str, partner_id),
        certificate_names=names,
        administrator=table.get("administrator", bool, False),
    )


def _kcv(table: _Table, name: str, *, required: bool) -> str | None:
    kcv: str | None = table.get(name, str, ... if required else None)
    if kcv is not None and not KCV_PATTERN.fullmatch(kcv):
        table.problem(
            name, "must be 16 lowercase hex characters, as `cleanroom-partner keygen` prints"
        )
    return kcv


def _identifier_types(table: _Table) -> tuple[str, ...]:
    types = table.get_strings("identifier_types", BUILTIN_IDENTIFIER_TYPES)
    for identifier_type in types:
        if not ID_PATTERN.fullmatch(identifier_type.replace("_", "-")):
            table.problem("identifier_types", f"{identifier_type!r} is not a valid type name")
        elif identifier_type not in BUILTIN_IDENTIFIER_TYPES:
            # A declared type is normalized by trimming only: a misspelt built-in would
            # silently become one, and match nothing the brands' emails match.
            hint = _did_you_mean(identifier_type, BUILTIN_IDENTIFIER_TYPES)
            if hint:
                table.problem(
                    "identifier_types",
                    f"{identifier_type!r} looks like a misspelt built-in type{hint} (built-in:"
                    f" {', '.join(BUILTIN_IDENTIFIER_TYPES)}); a declared type needs a name of"
                    " its own, such as loyalty_id",
                )
    if len(set(types)) != len(types) or not types:
        table.problem("identifier_types", "list each type once, at least one")
    return types


def _members(
    table: _Table, partners: Mapping[str, Partner], shares: dict[str, float]
) -> dict[str, frozenset[Role]]:
    """The members and their roles; their configured epsilon shares go into `shares`."""
    members: dict[str, frozenset[Role]] = {}
    valid = {role.value for role in Role}
    for key, item in table.tables("members"):
        member = _Table(item, key, _MEMBER_KEYS, table.problems)
        try:
            partner_id = member.get("partner", str)
            roles = member.get_strings("roles")
        except _SkipError:
            continue
        if partner_id not in partners:
            member.problem(
                "partner",
                f"no partner {partner_id!r} is defined{_did_you_mean(partner_id, partners)}",
            )
            continue
        if partner_id in members:
            member.problem("partner", f"partner {partner_id!r} is a member twice")
            continue
        unknown = [role for role in roles if role not in valid]
        for role in unknown:
            member.problem(
                "roles",
                f"unknown role {role!r}{_did_you_mean(role, valid)}; use"
                f" {', '.join(sorted(valid))}",
            )
        members[partner_id] = frozenset(Role(role) for role in roles if role in valid)
        share = _epsilon_share(member)
        if share is not None:
            shares[partner_id] = share
    return members


def _epsilon_share(member: _Table) -> float | None:
    share: float | None = member.get("epsilon_share", (int, float), None)
    if share is not None and not 0 < share <= MAX_EPSILON:
        member.problem("epsilon_share", f"must be above 0 and at most {MAX_EPSILON}")
        return None
    return share


def _check_shares(table: _Table, shares: Mapping[str, float], policy: PrivacyPolicy) -> None:
    if sum(shares.values()) > policy.epsilon_budget * (1 + 1e-9):
        table.problem(
            "members",
            f"the members' epsilon_share values add up to {sum(shares.values()):g}, more"
            f" than the policy's epsilon_budget ({policy.epsilon_budget:g})",
        )


def _policy(table: _Table) -> PrivacyPolicy:
    policy_table = table.table("policy", _POLICY_KEYS, {})
    defaults = PrivacyPolicy()
    values = {
        name: policy_table.get(name, kind, getattr(defaults, name))
        for name, kind in _POLICY_TYPES.items()
    }
    # Checked whole first, so that every broken rule is told, not only the first.
    unchecked = object.__new__(PrivacyPolicy)
    for name, value in values.items():
        object.__setattr__(unchecked, name, value)
    broken = policy_problems(unchecked)
    for error in broken:
        policy_table.problem(error.field, str(error))
    return defaults if broken else PrivacyPolicy(**values)


def _matching(table: _Table) -> Matching:
    value: str = table.get("matching", str, Matching.SHARED_SECRET.value)
    choices = [m.value for m in Matching]
    if value not in choices:
        table.problem(
            "matching",
            f"must be {' or '.join(map(repr, choices))}, got {value!r}"
            f"{_did_you_mean(value, choices)}",
        )
        return Matching.SHARED_SECRET
    return Matching(value)


def _parse_collaboration(table: _Table, partners: Mapping[str, Partner]) -> Collaboration:
    collaboration_id = table.get_id("id")
    kcv = _kcv(table, "key_check_value", required=True)
    previous = _kcv(table, "previous_key_check_value", required=False)
    if previous is not None and previous == kcv:
        table.problem(
            "previous_key_check_value",
            "is the same as key_check_value; during a rotation it is the old secret's KCV",
        )
    types = _identifier_types(table)
    shares: dict[str, float] = {}
    members = _members(table, partners, shares)
    policy = _policy(table)
    _check_shares(table, shares, policy)
    retention = table.get("retention_days", int, None)
    if retention is not None and not 1 <= retention <= 36500:
        table.problem("retention_days", f"must be 1 to 36500, got {retention}")
    witnesses, quorum = _witnesses(table, members)
    return Collaboration(
        id=collaboration_id,
        matching=_matching(table),
        retention_days=retention,
        display_name=table.get("display_name", str, collaboration_id),
        key_check_value=str(kcv),
        previous_key_check_value=previous,
        identifier_types=types,
        members=MappingProxyType(members),
        policy=policy,
        witnesses=witnesses,
        witness_quorum=quorum,
        epsilon_shares=MappingProxyType(shares),
    )
