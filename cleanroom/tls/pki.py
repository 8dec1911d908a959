"""Certificates for mutual TLS: a certificate authority, server and partner certificates.

Identity in the clean room is the client certificate (SPEC section 1): the server maps a
certificate's subject alternative names to a partner. This module makes the certificates
for the demo and the tests, and reads the names back out of a certificate that the TLS
layer hands to the server. It imports no gRPC.

Private keys are written unencrypted (PKCS #8 PEM) with mode 0600: they are demo and test
keys; a production deployment brings certificates from its own PKI.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cleanroom.errors import InvalidArgumentError

__all__ = [
    "PARTNER_DNS_SUFFIX",
    "CertificateFiles",
    "CertificateIdentity",
    "DemoPki",
    "KeyType",
    "certificate_identities",
    "create_certificate_authority",
    "create_demo_pki",
    "issue_certificate",
    "partner_dns_name",
]

KeyType = Literal["ecdsa-p256", "rsa-2048"]
"""The key algorithms a certificate can be issued for."""

PARTNER_DNS_SUFFIX = "partners.cleanroom.test"
"""The DNS suffix of partner client certificates; `.test` is reserved (RFC 6761), so the
names can never resolve to a real host."""

_CA_LIFETIME = timedelta(days=3650)
_LEAF_LIFETIME = timedelta(days=365)
# Backdating absorbs clock skew between the machine that issues and the one that checks.
_BACKDATE = timedelta(hours=1)
_PRIVATE_KEY_MODE = 0o600
_CERTIFICATE_MODE = 0o644
# File names become paths, so they stay plain: no separators, no leading dot.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Partner ids are DNS labels (RFC 1123), the same shape as resource ids (AIP-122).
_PARTNER_ID = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CertificateFiles:
    """A certificate and its private key, as PEM files.

    Attributes:
        certificate: The PEM-encoded X.509 certificate.
        private_key: The PEM-encoded (PKCS #8, unencrypted) private key, mode 0600.
    """

    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class CertificateIdentity:
    """The names a certificate carries, as the server sees them.

    Attributes:
        subject: The subject distinguished name as an RFC 4514 string.
        dns_names: The DNS names of the subject alternative name extension.
        uri_names: The URIs of the subject alternative name extension.
        ip_addresses: The IP addresses of the subject alternative name extension, in
            their compressed text form.
    """

    subject: str
    dns_names: tuple[str, ...]
    uri_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]


@dataclass(frozen=True)
class DemoPki:
    """The certificates of a demo deployment.

    Attributes:
        ca: The certificate authority that signed every other certificate.
        server: The server certificate (serverAuth) for the server's hosts.
        partners: One client certificate (clientAuth) per partner id.
    """

    ca: CertificateFiles
    server: CertificateFiles
    partners: dict[str, CertificateFiles]


def partner_dns_name(partner_id: str) -> str:
    """Return the DNS name that a partner's client certificate carries as its SAN.

    Args:
        partner_id: The partner's id, a DNS label such as `acme`.

    Returns:
        The name `{partner_id}.partners.cleanroom.test`.

    Raises:
        InvalidArgumentError: The id is not a lowercase DNS label.
    """
    if not _PARTNER_ID.fullmatch(partner_id):
        raise InvalidArgumentError(
            "INVALID_PARTNER_ID",
            f"The partner id {partner_id!r} is not a DNS label: use 1 to 63 lowercase "
            "letters, digits and hyphens, starting with a letter and not ending with a hyphen.",
            partner_id=partner_id,
        )
    return f"{partner_id}.{PARTNER_DNS_SUFFIX}"


def create_certificate_authority(
    directory: Path,
    *,
    common_name: str = "Clean room demo CA",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key_directory: Path | None = None,
) -> CertificateFiles:
    """Create a self-signed certificate authority with an ECDSA P-256 key.

    Writes `ca.pem` and `ca-key.pem` in `directory`, which is created if needed.

    Args:
        directory: Where to write the files.
        common_name: The CA's subject common name.
        key_directory: Where to write `ca-key.pem` instead, apart from the files that
            are handed out (created with mode 0700).
        not_before: Start of validity (timezone-aware); one hour ago by default.
        not_after: End of validity (timezone-aware); ten years after the start by default.

    Returns:
        The paths of the certificate and its private key.

    Raises:
        InvalidArgumentError: The validity period is empty or a time lacks a timezone.
    """
    start, end = _validity(not_before, not_after, _CA_LIFETIME)
    key = _generate_key("ecdsa-p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        # path_length=0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    if key_directory is None:
        return _write_pair(directory, "ca", certificate, key)
    key_directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_directory.chmod(0o700)
    directory.mkdir(parents=True, exist_ok=True)
    files = CertificateFiles(directory / "ca.pem", key_directory / "ca-key.pem")
    _write_certificate_and_key(files.certificate, files.private_key, certificate, key)
    return files


def issue_certificate(
    ca: CertificateFiles,
    directory: Path,
    name: str,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    uri_names: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    common_name: str | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key_type: KeyType = "ecdsa-p256",
) -> CertificateFiles:
    """Issue a leaf certificate signed by a certificate authority.

    Writes `{name}.pem` and `{name}-key.pem` in `directory`, which is created if needed.
    A certificate without any SAN is allowed (tests use one to check that the server
    refuses it), but TLS clients match host names against SANs only.

    Args:
        ca: The issuing certificate authority.
        directory: Where to write the files.
        name: The base name of the files, such as `server` or `partner-acme`.
        dns_names: DNS names for the subject alternative name extension.
        ip_addresses: IP addresses (IPv4 or IPv6 text) for the same extension.
        uri_names: URIs for the same extension.
        server: Whether the certificate may authenticate a TLS server (serverAuth).
        client: Whether the certificate may authenticate a TLS client (clientAuth).
        common_name: The subject common name; `name` by default.
        not_before: Start of validity (timezone-aware); one hour ago by default.
        not_after: End of validity (timezone-aware); 365 days after the start by default.
        key_type: The algorithm of the certificate's new key.

    Returns:
        The paths of the certificate and its private key.

    Raises:
        InvalidArgumentError: An argument is unusable: neither `server` nor `client`, a bad
            file name, an IP address that does not parse, an empty validity period, or a
            CA whose key does not match its certificate.
    """
    certificate_path, key_path = _leaf_paths(ca, directory, name)
    if not (server or client):
        raise InvalidArgumentError(
            "NO_EXTENDED_KEY_USAGE",
            f"The certificate {name!r} would allow neither server nor client "
            "authentication: pass server=True, client=True or both.",
            name=name,
        )
    start, end = _validity(not_before, not_after, _LEAF_LIFETIME)
    ca_certificate, ca_key = _load_ca(ca)
    key = _generate_key(key_type)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(key_type), critical=True)
        .add_extension(_extended_key_usage(server=server, client=client), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_certificate), critical=False)
    )
    names = _general_names(dns_names, ip_addresses, uri_names)
    if names:
        # RFC 5280: the SAN extension is critical only when the subject is empty; ours is not.
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    _write_certificate_and_key(certificate_path, key_path, certificate, key)
    return CertificateFiles(certificate=certificate_path, private_key=key_path)


def certificate_identities(pem: bytes) -> CertificateIdentity:
    """Read the subject and the subject alternative names of a PEM certificate.

    The server calls this with the peer certificate that the TLS layer verified, to map
    the caller to a partner.

    Args:
        pem: One PEM-encoded X.509 certificate (the first one if there are more).

    Returns:
        The certificate's subject and SANs; the SAN tuples are empty without the extension.

    Raises:
        InvalidArgumentError: `pem` holds no readable certificate.
    """
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise InvalidArgumentError(
            "INVALID_CERTIFICATE",
            f"The data is not a PEM-encoded X.509 certificate: {error}.",
            error=error,
        ) from error
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = x509.SubjectAlternativeName([])
    return CertificateIdentity(
        subject=certificate.subject.rfc4514_string(),
        dns_names=tuple(names.get_values_for_type(x509.DNSName)),
        uri_names=tuple(names.get_values_for_type(x509.UniformResourceIdentifier)),
        ip_addresses=tuple(str(ip) for ip in names.get_values_for_type(x509.IPAddress)),
    )


def create_demo_pki(
    directory: Path,
    *,
    partners: Sequence[str],
    server_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    ca_key_directory: Path | None = None,
) -> DemoPki:
    """Create a CA, a server certificate and one client certificate per partner.

    Files in `directory`: `ca.pem`, `server.pem` and `partner-{id}.pem`, each with its
    `-key.pem`. A partner's certificate carries the SAN DNS name
    `partner_dns_name(partner_id)` and the partner id as its common name.

    Args:
        directory: Where to write the files; created if needed.
        partners: The partner ids, distinct DNS labels.
        server_hosts: The server's host names and IP addresses; each goes into the
            server certificate as a DNS name or an IP address, whichever it is.
        ca_key_directory: Where the CA's private key goes, apart from the files to hand
            out (`directory` by default, as for tests).

    Returns:
        The paths of every certificate and key.

    Raises:
        InvalidArgumentError: A partner id is not a DNS label or appears twice, or no
            server host is given.
    """
    duplicates = sorted({partner for partner in partners if partners.count(partner) > 1})
    if duplicates:
        raise InvalidArgumentError(
            "DUPLICATE_PARTNER_ID",
            f"The partner ids {', '.join(duplicates)} appear more than once: give each once.",
            partner_ids=",".join(duplicates),
        )
    if not server_hosts:
        raise InvalidArgumentError(
            "NO_SERVER_HOST",
            "No server host was given: give at least one host name or IP address.",
        )
    dns_names = {partner: partner_dns_name(partner) for partner in partners}
    ca = create_certificate_authority(directory, key_directory=ca_key_directory)
    host_names = [host for host in server_hosts if not _is_ip_address(host)]
    host_ips = [host for host in server_hosts if _is_ip_address(host)]
    server = issue_certificate(
        ca,
        directory,
        "server",
        dns_names=host_names,
        ip_addresses=host_ips,
        server=True,
        common_name=server_hosts[0],
    )
    partner_files = {
        partner: issue_certificate(
            ca,
            directory,
            f"partner-{partner}",
            dns_names=[dns_name],
            client=True,
            common_name=partner,
        )
        for partner, dns_name in dns_names.items()
    }
    return DemoPki(ca=ca, server=server, partners=partner_files)


def _validity(
    not_before: datetime | None, not_after: datetime | None, lifetime: timedelta
) -> tuple[datetime, datetime]:
    """Fill in the default validity period and check that it is not empty."""
    for label, moment in (("not_before", not_before), ("not_after", not_after)):
        if moment is not None and moment.utcoffset() is None:
            raise InvalidArgumentError(
                "NAIVE_DATETIME",
                f"{label} {moment.isoformat()} has no timezone: give an aware datetime "
                "such as datetime.now(UTC).",
                field=label,
                value=moment.isoformat(),
            )
    start = not_before if not_before is not None else datetime.now(UTC) - _BACKDATE
    end = not_after if not_after is not None else start + lifetime
    if end <= start:
        raise InvalidArgumentError(
            "EMPTY_VALIDITY_PERIOD",
            f"not_after {end.isoformat()} is not later than not_before {start.isoformat()}: "
            "give an end after the start.",
            not_before=start.isoformat(),
            not_after=end.isoformat(),
        )
    return start, end


def _generate_key(key_type: KeyType) -> _PrivateKey:
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage(key_type: KeyType) -> x509.KeyUsage:
    # TLS 1.2 RSA key exchange encrypts to the certificate's key; ECDSA keys only sign.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_type == "rsa-2048",
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _extended_key_usage(*, server: bool, client: bool) -> x509.ExtendedKeyUsage:
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    return x509.ExtendedKeyUsage(usages)


def _authority_key_identifier(ca_certificate: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # Copy the CA's own identifier when it has one, so that chain building matches even
    # for a CA made elsewhere with another key identifier method.
    try:
        ski = ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            _issuer_public_key(ca_certificate)
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _issuer_public_key(
    ca_certificate: x509.Certificate,
) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    public_key = ca_certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise InvalidArgumentError(
            "UNSUPPORTED_CA_KEY",
            f"The CA key is a {type(public_key).__name__}: use an ECDSA or RSA CA.",
            key_type=type(public_key).__name__,
        )
    return public_key


def _general_names(
    dns_names: Sequence[str], ip_addresses: Sequence[str], uri_names: Sequence[str]
) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names.extend(x509.IPAddress(_parse_ip_address(address)) for address in ip_addresses)
    names.extend(x509.UniformResourceIdentifier(uri) for uri in uri_names)
    return names


def _parse_ip_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(address)
    except ValueError as error:
        raise InvalidArgumentError(
            "INVALID_IP_ADDRESS",
            f"{address!r} is not an IPv4 or IPv6 address: give it as text such as 127.0.0.1.",
            ip_address=address,
        ) from error


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _leaf_paths(ca: CertificateFiles, directory: Path, name: str) -> tuple[Path, Path]:
    if not _FILE_NAME.fullmatch(name):
        raise InvalidArgumentError(
            "INVALID_CERTIFICATE_NAME",
            f"{name!r} cannot name certificate files: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit.",
            name=name,
        )
    certificate_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    # Overwriting the CA with a leaf would silently break every later issue.
    ca_paths = {ca.certificate.resolve(), ca.private_key.resolve()}
    if {certificate_path.resolve(), key_path.resolve()} & ca_paths:
        raise InvalidArgumentError(
            "CERTIFICATE_NAME_TAKEN",
            f"The files of {name!r} would overwrite the CA's files: choose another name.",
            name=name,
        )
    return certificate_path, key_path


def _load_ca(ca: CertificateFiles) -> tuple[x509.Certificate, _PrivateKey]:
    certificate = x509.load_pem_x509_certificate(ca.certificate.read_bytes())
    key = serialization.load_pem_private_key(ca.private_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidArgumentError(
            "UNSUPPORTED_CA_KEY",
            f"The CA key is a {type(key).__name__}: use an ECDSA or RSA CA.",
            key_type=type(key).__name__,
        )
    if key.public_key() != _issuer_public_key(certificate):
        raise InvalidArgumentError(
            "CA_KEY_MISMATCH",
            f"The key {ca.private_key} does not belong to the certificate {ca.certificate}: "
            "give the CA's own key.",
            certificate=ca.certificate,
            private_key=ca.private_key,
        )
    return certificate, key


def _write_pair(
    directory: Path, name: str, certificate: x509.Certificate, key: _PrivateKey
) -> CertificateFiles:
    files = CertificateFiles(
        certificate=directory / f"{name}.pem", private_key=directory / f"{name}-key.pem"
    )
    _write_certificate_and_key(files.certificate, files.private_key, certificate, key)
    return files


def _write_certificate_and_key(
    certificate_path: Path, key_path: Path, certificate: x509.Certificate, key: _PrivateKey
) -> None:
    certificate_path.parent.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key first: a certificate on disk without its key would look usable but is not.
    _write_atomically(key_path, key_pem, _PRIVATE_KEY_MODE)
    _write_atomically(
        certificate_path, certificate.public_bytes(serialization.Encoding.PEM), _CERTIFICATE_MODE
    )


def write_private_file(path: Path, text: str) -> None:
    """Write a secret (a key) whole, readable only by its owner (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, text.encode(), 0o600)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one.

    The temporary file is created with mode 0600 (mkstemp), so a private key is never
    readable by others, not even for a moment.
    """
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
