"""The configuration file of a self-contained deployment: the demo's and the benchmarks'.

One writer, so that the demo and the benchmarks describe their clean rooms the same way:
the certificates `cleanroom.tls.pki.create_demo_pki` made, a signing key beside them, the
partners (SANs from `partner_dns_name`) and one collaboration.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from cleanroom.tls.pki import DemoPki, partner_dns_name
from partners.client import Connection

SIGNING_KEY = "certs/log-signing.key"


def free_loopback_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a server to take."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_connection(pki: DemoPki, partner: str, port: int) -> Connection:
    """How `partner` reaches a server of this deployment on 127.0.0.1:`port`."""
    files = pki.partners[partner]
    return Connection(
        target=f"127.0.0.1:{port}",
        certificate=files.certificate,
        private_key=files.private_key,
        ca_certificate=pki.ca.certificate,
        server_name="localhost",
    )


def _value(value: object) -> str:
    """A TOML scalar or array of scalars (JSON's spelling is TOML's for these)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(value)


def _table(header: str, values: Mapping[str, object]) -> list[str]:
    return ["", header, *(f"{key} = {_value(value)}" for key, value in values.items())]


def config_toml(
    *,
    root: Path,
    pki: DemoPki,
    port: int,
    collaboration: str,
    key_check_value: str,
    members: Mapping[str, Sequence[str]],
    identifier_types: Sequence[str],
    policy: Mapping[str, object],
    administrators: Sequence[str] = (),
    server: Mapping[str, object] | None = None,
    comment: str = "",
    ops_listen: str | None = None,
    witnesses: Mapping[str, str] | None = None,
) -> str:
    """The TOML text; paths are relative to `root`, where the file goes."""

    def rel(path: Path) -> str:
        return str(path.relative_to(root))

    lines = [f"# {comment}"] if comment else []
    lines += _table(
        "[server]", {"listen": f"127.0.0.1:{port}", "data_dir": "data", **(server or {})}
    )[1:]
    lines += _table(
        "[server.tls]",
        {
            "certificate": rel(pki.server.certificate),
            "private_key": rel(pki.server.private_key),
            "client_ca": rel(pki.ca.certificate),
        },
    )
    lines += _table("[server.audit]", {"signing_key": SIGNING_KEY})
    if ops_listen is not None:
        lines += _table("[server.ops]", {"listen": ops_listen})
    for partner in [*members, *(a for a in administrators if a not in members)]:
        entry: dict[str, object] = {"id": partner, "certificate_names": [partner_dns_name(partner)]}
        if partner in administrators:
            entry["administrator"] = True
        lines += _table("[[partners]]", entry)
    lines += _table(
        "[[collaborations]]",
        {
            "id": collaboration,
            "key_check_value": key_check_value,
            "identifier_types": list(identifier_types),
        },
    )
    lines += _table("[collaborations.policy]", policy)
    for partner, roles in members.items():
        lines += _table("[[collaborations.members]]", {"partner": partner, "roles": list(roles)})
    for partner, public_key in (witnesses or {}).items():
        lines += _table(
            "[[collaborations.witnesses]]", {"partner": partner, "public_key": public_key}
        )
    return "\n".join(lines) + "\n"
