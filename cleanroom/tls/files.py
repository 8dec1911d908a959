"""The server's TLS files, read and checked before gRPC sees them.

gRPC reports an unreadable or mismatched certificate only as "failed to bind"; reading
the files here first turns each problem into a `ConfigError` naming its key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cleanroom.config import TlsConfig
from cleanroom.errors import ConfigError


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM bytes of the server's certificate, its key and the clients' CA."""

    certificate: bytes
    private_key: bytes
    client_ca: bytes


def _read(tls: TlsConfig, key: str) -> bytes:
    path = getattr(tls, key)
    try:
        return bytes(path.read_bytes())
    except OSError as error:
        raise ConfigError(f"server.tls.{key}", f"cannot read {path}: {error.strerror}") from None


def read_tls(tls: TlsConfig) -> TlsMaterial:
    """Reads and checks the TLS files: PEM certificates, and a key that fits the certificate.

    Raises:
        ConfigError: A file is missing, is not PEM, or the key is not the certificate's.
    """
    material = TlsMaterial(*(_read(tls, k) for k in ("certificate", "private_key", "client_ca")))
    try:
        certificate = x509.load_pem_x509_certificate(material.certificate)
    except ValueError:
        raise ConfigError("server.tls.certificate", "is not a PEM certificate") from None
    try:
        x509.load_pem_x509_certificates(material.client_ca)
    except ValueError:
        raise ConfigError("server.tls.client_ca", "is not a PEM CA certificate") from None
    try:
        key = serialization.load_pem_private_key(material.private_key, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            "server.tls.private_key", "is not an unencrypted PEM private key"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != certificate.public_key().public_bytes(
        encoding, public
    ):
        raise ConfigError("server.tls.private_key", "is not the key of server.tls.certificate")
    return material
