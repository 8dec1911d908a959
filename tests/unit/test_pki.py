"""Tests of the certificates made for mutual TLS."""

from __future__ import annotations

import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cleanroom.errors import InvalidArgumentError
from cleanroom.tls.pki import (
    CertificateFiles,
    CertificateIdentity,
    certificate_identities,
    create_certificate_authority,
    create_demo_pki,
    issue_certificate,
    partner_dns_name,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


ExtensionT = TypeVar("ExtensionT", bound=x509.ExtensionType)


def extension(certificate: x509.Certificate, kind: type[ExtensionT]) -> ExtensionT:
    return certificate.extensions.get_extension_for_class(kind).value


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return create_certificate_authority(tmp_path_factory.mktemp("ca"))


def test_ca_is_self_signed_ecdsa_p256_with_ca_extensions(ca: CertificateFiles) -> None:
    certificate = load(ca.certificate)
    assert ca.certificate.name == "ca.pem"
    assert ca.private_key.name == "ca-key.pem"
    certificate.verify_directly_issued_by(certificate)
    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    assert certificate.subject.rfc4514_string() == "CN=Clean room demo CA"
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    usage = extension(certificate, x509.KeyUsage)
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    ski = extension(certificate, x509.SubjectKeyIdentifier)
    assert ski == x509.SubjectKeyIdentifier.from_public_key(public_key)


def test_ca_key_matches_its_certificate(ca: CertificateFiles) -> None:
    key = serialization.load_pem_private_key(ca.private_key.read_bytes(), password=None)
    assert key.public_key() == load(ca.certificate).public_key()


def test_default_validity_starts_an_hour_ago(ca: CertificateFiles, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca_certificate = load(ca.certificate)
    assert abs(ca_certificate.not_valid_before_utc - (now - timedelta(hours=1))) < timedelta(
        minutes=5
    )
    assert ca_certificate.not_valid_after_utc - ca_certificate.not_valid_before_utc == timedelta(
        days=3650
    )
    leaf = load(issue_certificate(ca, tmp_path, "leaf", client=True).certificate)
    assert abs(leaf.not_valid_before_utc - (now - timedelta(hours=1))) < timedelta(minutes=5)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=365)


def test_leaf_is_signed_by_the_ca_with_sans_and_ekus(ca: CertificateFiles, tmp_path: Path) -> None:
    files = issue_certificate(
        ca,
        tmp_path,
        "server",
        dns_names=["localhost", "cleanroom.test"],
        ip_addresses=["127.0.0.1", "::1"],
        uri_names=["spiffe://cleanroom.test/server"],
        server=True,
    )
    assert files == CertificateFiles(tmp_path / "server.pem", tmp_path / "server-key.pem")
    ca_certificate = load(ca.certificate)
    leaf = load(files.certificate)
    leaf.verify_directly_issued_by(ca_certificate)
    assert leaf.issuer == ca_certificate.subject
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "server"
    sans = extension(leaf, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "cleanroom.test"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cleanroom.test/server"
    ]
    assert list(extension(leaf, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not extension(leaf, x509.BasicConstraints).ca
    assert extension(leaf, x509.KeyUsage).digital_signature
    aki = extension(leaf, x509.AuthorityKeyIdentifier)
    assert aki.key_identifier == extension(ca_certificate, x509.SubjectKeyIdentifier).digest


@pytest.mark.parametrize(
    ("server", "client", "expected"),
    [
        (False, True, [ExtendedKeyUsageOID.CLIENT_AUTH]),
        (True, True, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
    ],
)
def test_extended_key_usage_follows_the_request(
    ca: CertificateFiles,
    tmp_path: Path,
    server: bool,
    client: bool,
    expected: list[x509.ObjectIdentifier],
) -> None:
    files = issue_certificate(ca, tmp_path, "leaf", server=server, client=client)
    assert list(extension(load(files.certificate), x509.ExtendedKeyUsage)) == expected


def test_a_leaf_must_allow_server_or_client_authentication(
    ca: CertificateFiles, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        issue_certificate(ca, tmp_path, "leaf")
    assert caught.value.reason == "NO_EXTENDED_KEY_USAGE"
    assert not list(tmp_path.iterdir())


def test_expired_and_not_yet_valid_certificates(ca: CertificateFiles, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    expired = load(
        issue_certificate(
            ca,
            tmp_path,
            "expired",
            client=True,
            not_before=now - timedelta(days=30),
            not_after=now - timedelta(days=1),
        ).certificate
    )
    assert expired.not_valid_after_utc == now - timedelta(days=1)
    assert expired.not_valid_after_utc < now
    future = load(
        issue_certificate(
            ca, tmp_path, "future", client=True, not_before=now + timedelta(days=1)
        ).certificate
    )
    assert future.not_valid_before_utc == now + timedelta(days=1)
    assert future.not_valid_after_utc == now + timedelta(days=366)


def test_ca_validity_can_be_chosen(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    ca = create_certificate_authority(
        tmp_path, common_name="Old CA", not_before=now - timedelta(days=9), not_after=now
    )
    certificate = load(ca.certificate)
    assert certificate.subject.rfc4514_string() == "CN=Old CA"
    assert certificate.not_valid_before_utc == now - timedelta(days=9)
    assert certificate.not_valid_after_utc == now


@pytest.mark.parametrize(
    ("not_before", "not_after", "reason"),
    [
        (
            datetime(2030, 1, 2, tzinfo=UTC),
            datetime(2030, 1, 1, tzinfo=UTC),
            "EMPTY_VALIDITY_PERIOD",
        ),
        (
            datetime(2030, 1, 1, tzinfo=UTC),
            datetime(2030, 1, 1, tzinfo=UTC),
            "EMPTY_VALIDITY_PERIOD",
        ),
        (datetime(2030, 1, 1), None, "NAIVE_DATETIME"),  # naive on purpose
    ],
)
def test_bad_validity_is_refused(
    ca: CertificateFiles,
    tmp_path: Path,
    not_before: datetime,
    not_after: datetime | None,
    reason: str,
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        issue_certificate(
            ca, tmp_path, "leaf", client=True, not_before=not_before, not_after=not_after
        )
    assert caught.value.reason == reason


def test_private_keys_are_written_with_mode_0600(ca: CertificateFiles, tmp_path: Path) -> None:
    files = issue_certificate(ca, tmp_path, "leaf", client=True)
    assert stat.S_IMODE(ca.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.certificate.stat().st_mode) == 0o644
    # No temporary file is left behind by the atomic writes.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["leaf-key.pem", "leaf.pem"]


def test_reissuing_replaces_the_files(ca: CertificateFiles, tmp_path: Path) -> None:
    first = issue_certificate(ca, tmp_path, "leaf", client=True)
    first_serial = load(first.certificate).serial_number
    second = issue_certificate(ca, tmp_path, "leaf", client=True)
    assert second == first
    assert load(second.certificate).serial_number != first_serial
    assert stat.S_IMODE(second.private_key.stat().st_mode) == 0o600


def test_rsa_leaf_keys(ca: CertificateFiles, tmp_path: Path) -> None:
    files = issue_certificate(ca, tmp_path, "leaf", client=True, key_type="rsa-2048")
    leaf = load(files.certificate)
    leaf.verify_directly_issued_by(load(ca.certificate))
    public_key = leaf.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 2048
    assert extension(leaf, x509.KeyUsage).key_encipherment


@pytest.mark.parametrize("name", ["", "../escape", ".hidden", "a/b", "ca", "ca-key"])
def test_unusable_file_names_are_refused(ca: CertificateFiles, name: str, tmp_path: Path) -> None:
    # "ca" and "ca-key" in the CA's own directory would overwrite the CA's files.
    directory = ca.certificate.parent if name.startswith("ca") else tmp_path
    with pytest.raises(InvalidArgumentError):
        issue_certificate(ca, directory, name, client=True)


def test_bad_ip_address_is_refused(ca: CertificateFiles, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        issue_certificate(ca, tmp_path, "leaf", server=True, ip_addresses=["localhost"])
    assert caught.value.reason == "INVALID_IP_ADDRESS"
    assert caught.value.metadata == {"ip_address": "localhost"}


def test_a_foreign_ca_key_is_refused(ca: CertificateFiles, tmp_path: Path) -> None:
    other = create_certificate_authority(tmp_path / "other")
    mixed = CertificateFiles(certificate=ca.certificate, private_key=other.private_key)
    with pytest.raises(InvalidArgumentError) as caught:
        issue_certificate(mixed, tmp_path, "leaf", client=True)
    assert caught.value.reason == "CA_KEY_MISMATCH"


def test_certificate_identities_round_trip(ca: CertificateFiles, tmp_path: Path) -> None:
    files = issue_certificate(
        ca,
        tmp_path,
        "partner",
        dns_names=["acme.partners.cleanroom.test"],
        ip_addresses=["2001:0db8:0000:0000:0000:0000:0000:0001", "10.0.0.1"],
        uri_names=["spiffe://cleanroom.test/partner/acme"],
        client=True,
        common_name="acme",
    )
    identity = certificate_identities(files.certificate.read_bytes())
    assert identity == CertificateIdentity(
        subject="CN=acme",
        dns_names=("acme.partners.cleanroom.test",),
        uri_names=("spiffe://cleanroom.test/partner/acme",),
        ip_addresses=("2001:db8::1", "10.0.0.1"),
    )


def test_certificate_identities_without_sans(ca: CertificateFiles, tmp_path: Path) -> None:
    files = issue_certificate(ca, tmp_path, "bare", client=True)
    assert certificate_identities(files.certificate.read_bytes()) == CertificateIdentity(
        subject="CN=bare", dns_names=(), uri_names=(), ip_addresses=()
    )
    assert certificate_identities(ca.certificate.read_bytes()).subject == "CN=Clean room demo CA"


def test_certificate_identities_refuses_garbage() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        certificate_identities(b"not a certificate")
    assert caught.value.reason == "INVALID_CERTIFICATE"


def test_partner_dns_name() -> None:
    assert partner_dns_name("acme") == "acme.partners.cleanroom.test"
    assert partner_dns_name("bright-mart2") == "bright-mart2.partners.cleanroom.test"


@pytest.mark.parametrize("partner_id", ["", "Acme", "acme.evil", "-acme", "acme-", "a" * 64])
def test_partner_dns_name_refuses_non_labels(partner_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        partner_dns_name(partner_id)
    assert caught.value.reason == "INVALID_PARTNER_ID"


def test_demo_pki(tmp_path: Path) -> None:
    pki = create_demo_pki(
        tmp_path / "pki",
        partners=["acme", "brightmart", "corvid"],
        server_hosts=["localhost", "127.0.0.1", "::1", "cleanroom.internal"],
    )
    ca_certificate = load(pki.ca.certificate)
    server = load(pki.server.certificate)
    server.verify_directly_issued_by(ca_certificate)
    assert certificate_identities(pki.server.certificate.read_bytes()) == CertificateIdentity(
        subject="CN=localhost",
        dns_names=("localhost", "cleanroom.internal"),
        uri_names=(),
        ip_addresses=("127.0.0.1", "::1"),
    )
    assert list(extension(server, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert sorted(pki.partners) == ["acme", "brightmart", "corvid"]
    for partner, files in pki.partners.items():
        assert files.certificate.name == f"partner-{partner}.pem"
        certificate = load(files.certificate)
        certificate.verify_directly_issued_by(ca_certificate)
        identity = certificate_identities(files.certificate.read_bytes())
        assert identity.dns_names == (partner_dns_name(partner),)
        assert identity.subject == f"CN={partner}"
        assert list(extension(certificate, x509.ExtendedKeyUsage)) == [
            ExtendedKeyUsageOID.CLIENT_AUTH
        ]
        assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("partners", "hosts", "reason"),
    [
        (["acme", "acme"], ["localhost"], "DUPLICATE_PARTNER_ID"),
        (["Acme"], ["localhost"], "INVALID_PARTNER_ID"),
        (["acme"], [], "NO_SERVER_HOST"),
    ],
)
def test_demo_pki_refuses_bad_input_before_writing(
    tmp_path: Path, partners: list[str], hosts: list[str], reason: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        create_demo_pki(tmp_path / "pki", partners=partners, server_hosts=hosts)
    assert caught.value.reason == reason
    assert not (tmp_path / "pki").exists()


def handshake(
    ca: CertificateFiles, server: CertificateFiles, client: CertificateFiles, host: str
) -> x509.Certificate:
    """Run a mutual TLS handshake in memory and return the client certificate the server saw."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(server.certificate, server.private_key)
    server_context.load_verify_locations(ca.certificate)
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_cert_chain(client.certificate, client.private_key)
    client_context.load_verify_locations(ca.certificate)
    # Memory BIOs stand in for the socket: each step moves what one end wrote to the other.
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server_end = server_context.wrap_bio(server_in, server_out, server_side=True)
    client_end = client_context.wrap_bio(client_in, client_out, server_hostname=host)
    finished: set[bool] = set()
    for _ in range(10):
        for end, is_server in ((client_end, False), (server_end, True)):
            try:
                end.do_handshake()
                finished.add(is_server)
            except ssl.SSLWantReadError:
                pass
            finally:
                server_in.write(client_out.read())
                client_in.write(server_out.read())
        if len(finished) == 2:
            break
    peer = server_end.getpeercert(binary_form=True)
    assert peer is not None
    return x509.load_der_x509_certificate(peer)


def test_demo_pki_works_for_mutual_tls(tmp_path: Path) -> None:
    pki = create_demo_pki(tmp_path, partners=["acme"])
    for host in ("localhost", "127.0.0.1"):
        peer = handshake(pki.ca, pki.server, pki.partners["acme"], host)
        pem = peer.public_bytes(serialization.Encoding.PEM)
        assert certificate_identities(pem).dns_names == ("acme.partners.cleanroom.test",)


def test_mutual_tls_refuses_an_expired_client(tmp_path: Path) -> None:
    pki = create_demo_pki(tmp_path, partners=["acme"])
    now = datetime.now(UTC)
    expired = issue_certificate(
        pki.ca,
        tmp_path,
        "expired",
        dns_names=[partner_dns_name("acme")],
        client=True,
        not_before=now - timedelta(days=2),
        not_after=now - timedelta(days=1),
    )
    with pytest.raises(ssl.SSLError, match="expired"):
        handshake(pki.ca, pki.server, expired, "localhost")


def test_mutual_tls_refuses_a_server_certificate_as_client(tmp_path: Path) -> None:
    pki = create_demo_pki(tmp_path, partners=["acme"])
    with pytest.raises(ssl.SSLError, match="unsuitable certificate purpose"):
        handshake(pki.ca, pki.server, pki.server, "localhost")
