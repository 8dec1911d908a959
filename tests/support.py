"""Shared test helpers: a real server on loopback with real certificates, and digest files."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tomli_w

from cleanroom.config import Config, parse_config
from cleanroom.demo.deployment import loopback_connection
from cleanroom.ops.metrics import CallMetrics
from cleanroom.proofs.signed_note import NoteSigner
from cleanroom.service.calls import CallInterceptor
from cleanroom.service.server import audit_interceptor, build_server
from cleanroom.tls.pki import DemoPki, create_demo_pki, partner_dns_name
from cleanroom.usecases.clean_room import CleanRoom
from partners.client import CleanRoomClient, Connection
from partners.preparation import pipeline as digest_format
from partners.preparation.digest import key_check_value

ROOT = Path(__file__).resolve().parents[1]
COLLABORATION = "spring-launch"
SECRET = bytes(range(32))
KCV = key_check_value(SECRET, COLLABORATION)
LOG_SIGNER = NoteSigner.generate("cleanroom.test")
BRANDS = ("acme", "brightmart", "corvid")
PARTNERS = (*BRANDS, "ledger", "operator", "outsider")


def make_pki(directory: Path) -> DemoPki:
    """Certificates for every test partner, plus one whose SAN no partner has ("stranger").

    Beside them, the key that signs the query logs' checkpoints.
    """
    pki = create_demo_pki(directory, partners=[*PARTNERS, "stranger"])
    log_signing_key(pki).write_text(LOG_SIGNER.key_text())
    return pki


def log_signing_key(pki: DemoPki) -> Path:
    """The file of the key that signs the test servers' checkpoints."""
    return pki.ca.certificate.parent / "log-signing.key"


def config_data(
    pki: DemoPki,
    data_dir: Path,
    *,
    server: Mapping[str, Any] | None = None,
    collaboration: Mapping[str, Any] | None = None,
    **policy: Any,
) -> dict[str, Any]:
    """The TOML data of a test server's configuration.

    The policy is exact counts (no noise) with k = 10 and a minimum size of 10 unless
    `policy` says otherwise (keys as in `[collaborations.policy]`), so that tests can
    compare figures with a brute force; the privacy tests turn noise on.
    """
    policy = {"minimum_threshold": 10, "minimum_dataset_size": 10, "noise": False, **policy}
    members = [{"partner": b, "roles": ["uploader", "analyst"]} for b in BRANDS]
    members.append({"partner": "ledger", "roles": ["auditor"]})
    return {
        "server": {
            "listen": "127.0.0.1:0",
            "data_dir": str(data_dir),
            "max_workers": 8,
            "tls": {
                "certificate": str(pki.server.certificate),
                "private_key": str(pki.server.private_key),
                "client_ca": str(pki.ca.certificate),
            },
            "audit": {"signing_key": str(log_signing_key(pki))},
            # Any free port: many test servers run at once, each with its ops listener.
            "ops": {"listen": "127.0.0.1:0"},
            **(server or {}),
        },
        "partners": [
            {
                "id": p,
                "certificate_names": [partner_dns_name(p)],
                "administrator": p == "operator",
            }
            for p in PARTNERS
        ],
        "collaborations": [
            {
                "id": COLLABORATION,
                "key_check_value": KCV,
                "identifier_types": ["email", "phone", "maid", "loyalty_id"],
                "members": members,
                "policy": policy,
                **(collaboration or {}),
            }
        ],
    }


@dataclass
class RunningServer:
    """A real server on 127.0.0.1 and what a test needs to talk to it."""

    pki: DemoPki
    config: Config
    clean_room: CleanRoom
    server: grpc.Server
    port: int
    interceptor: CallInterceptor
    metrics: CallMetrics
    clients: dict[str, CleanRoomClient] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.config.server.data_dir

    def connection(self, partner: str) -> Connection:
        return loopback_connection(self.pki, partner, self.port)

    def client(self, partner: str) -> CleanRoomClient:
        if partner not in self.clients:
            self.clients[partner] = CleanRoomClient(self.connection(partner), timeout=60)
        return self.clients[partner]

    def events(self, method: str | None = None) -> list[Any]:
        """The collaboration's query log, read straight from the database."""
        from cleanroom.audit.log import AuditFilter

        return self.clean_room.audit_log.events(
            COLLABORATION, AuditFilter(method=method), after=-1, limit=1_000_000
        )

    def stop(self) -> None:
        for client in self.clients.values():
            client.close()
        self.server.stop(None).wait()
        self.interceptor.drain(10)
        self.clean_room.close()


def write_config(
    path: Path, pki: DemoPki, data_dir: Path, *, listen: str = "127.0.0.1:0", **policy: Any
) -> Path:
    """A test server's configuration as a TOML file, for commands and subprocess servers."""
    data = config_data(pki, data_dir, **policy)
    data["server"]["listen"] = listen
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


@contextmanager
def running_server(
    pki: DemoPki,
    data_dir: Path,
    *,
    server: Mapping[str, Any] | None = None,
    collaboration: Mapping[str, Any] | None = None,
    **policy: Any,
) -> Iterator[RunningServer]:
    """Starts a server on a free loopback port and stops it after the block.

    `server` adds `[server]` settings, `collaboration` settings of the collaboration, and
    `policy` ones of its `[collaborations.policy]`.
    """
    data = config_data(pki, data_dir, server=server, collaboration=collaboration, **policy)
    config = parse_config(data, base_dir=data_dir)
    clean_room = CleanRoom(config)
    metrics = CallMetrics()
    interceptor = audit_interceptor(clean_room, metrics)
    server, port = build_server(clean_room, interceptor=interceptor)
    running = RunningServer(pki, config, clean_room, server, port, interceptor, metrics)
    try:
        yield running
    finally:
        running.stop()


def random_digests(rng: np.random.Generator, count: int) -> np.ndarray[Any, Any]:
    """`count` random 32-byte digests as an (n, 32) uint8 matrix."""
    return rng.integers(0, 256, size=(count, 32), dtype=np.uint8)


def digest_array(matrix: np.ndarray[Any, Any], present: Sequence[bool] | None = None) -> pa.Array:
    """An Arrow fixed_size_binary(32) column of the rows of `matrix`, null where not present."""
    values = [bytes(row) for row in matrix]
    if present is not None:
        values = [v if p else None for v, p in zip(values, present, strict=True)]
    return pa.array(values, type=pa.binary(32))


def write_digest_file(
    path: Path,
    columns: Mapping[str, pa.Array],
    segments: Mapping[str, Sequence[str | None]] | None = None,
    *,
    collaboration: str = COLLABORATION,
    kcv: str = KCV,
) -> Path:
    """A digests file as `cleanroom-partner prepare` writes it, from ready digest columns."""
    segments = segments or {}
    table = pa.table(
        {**columns, **{name: pa.array(values, pa.string()) for name, values in segments.items()}}
    )
    metadata = {
        digest_format.META_FORMAT: digest_format.DIGEST_FORMAT.encode(),
        digest_format.META_COLLABORATION: collaboration.encode(),
        digest_format.META_KEY_CHECK_VALUE: kcv.encode(),
        digest_format.META_IDENTIFIER_TYPES: json.dumps(list(columns)).encode(),
        digest_format.META_SEGMENT_COLUMNS: json.dumps(list(segments)).encode(),
    }
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return path


def dataset_name(dataset_id: str) -> str:
    return f"collaborations/{COLLABORATION}/datasets/{dataset_id}"


def files_under(directory: Path) -> list[Path]:
    """Every regular file under a directory, recursively."""
    return sorted(p for p in directory.rglob("*") if p.is_file())
