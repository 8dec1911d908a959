"""Checks of a deployment beyond the file's syntax: TLS files, their validity, the log key.

Used by `cleanroom check-config`, at start, on reload and by `/readyz`: each problem is a
`ConfigError` naming the key it concerns, and all of them are reported at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509

from cleanroom.config import Config
from cleanroom.errors import ConfigError
from cleanroom.tls.files import TlsMaterial, read_tls
from cleanroom.usecases.clean_room import load_signer

EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class FileChecks:
    """What the files of a configuration hold, and what is wrong with them.

    Attributes:
        tls: The TLS material, if it could be read and fits together.
        problems: Errors: a file unreadable or malformed, a certificate expired or not
            valid yet, a key that is not the certificate's.
        warnings: Certificates that expire within `EXPIRY_WARNING`.
    """

    tls: TlsMaterial | None
    problems: list[ConfigError]
    warnings: list[str]


def certificate_problems(
    material: TlsMaterial, now: datetime | None = None
) -> tuple[list[ConfigError], list[str]]:
    """Certificates not valid at `now` (errors) and those that expire soon (warnings)."""
    now = now or datetime.now(UTC)
    problems: list[ConfigError] = []
    warnings: list[str] = []
    certificates = [
        ("server.tls.certificate", x509.load_pem_x509_certificate(material.certificate))
    ]
    certificates += [
        ("server.tls.client_ca", ca) for ca in x509.load_pem_x509_certificates(material.client_ca)
    ]
    for key, certificate in certificates:
        subject = certificate.subject.rfc4514_string()
        not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        if now < not_before:
            problems.append(
                ConfigError(key, f"{subject} is not valid before {not_before.isoformat()}")
            )
        elif now >= not_after:
            problems.append(
                ConfigError(
                    key,
                    f"{subject} expired at {not_after.isoformat()}: issue a new one, then"
                    " reload (SIGHUP)",
                )
            )
        elif not_after - now < EXPIRY_WARNING:
            warnings.append(f"{key}: {subject} expires at {not_after.isoformat()}")
    return problems, warnings


def check_files(config: Config, now: datetime | None = None) -> FileChecks:
    """Reads the TLS files and the log signing key of `config`, and checks validity."""
    problems: list[ConfigError] = []
    warnings: list[str] = []
    tls = None
    try:
        tls = read_tls(config.server.tls)
    except ConfigError as error:
        problems.append(error)
    if tls is not None:
        invalid, warnings = certificate_problems(tls, now)
        problems += invalid
    try:
        load_signer(config.server.audit_signing_key)
    except ConfigError as error:
        problems.append(error)
    return FileChecks(tls if not problems else None, problems, warnings)
