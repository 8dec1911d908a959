"""The TLS files a running server presents, replaceable without a restart.

gRPC asks `ServedTls` for the certificate configuration before every new handshake
(`grpc.dynamic_ssl_server_credentials`); after `replace`, new connections get the new
certificate, key and client CA, while open connections keep theirs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import cast

import grpc

from cleanroom.tls.files import TlsMaterial


class ServedTls:
    """The server's current TLS material, and the credentials that follow it."""

    def __init__(self, material: TlsMaterial) -> None:
        self._material = material
        self._pending: TlsMaterial | None = None
        self._lock = threading.Lock()

    @property
    def material(self) -> TlsMaterial:
        """What new handshakes use (or will, from the next one)."""
        return self._material

    def replace(self, material: TlsMaterial) -> None:
        """Serves `material` from the next handshake on."""
        with self._lock:
            self._material = material
            self._pending = material

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require a client certificate signed by the client CA."""
        # grpc-stubs type the fetcher without its documented None (no change).
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", self._fetch)
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self._material), fetch, require_client_authentication=True
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            pending, self._pending = self._pending, None
        return _configuration(pending) if pending is not None else None


def _configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.private_key, material.certificate)], root_certificates=material.client_ca
    )
