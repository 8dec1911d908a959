"""The partner toolkit a brand runs on its own machine.

It normalizes and digests the brand's identifiers (the collaboration secret never leaves
the brand), uploads the digests (masked with the brand's blind key in a double-blind
collaboration), takes masking hops, asks for overlap reports and reads the query log.

Holds the preparation of customer files (`partners.preparation`), the client of the clean
room's API (`client`), the auditor's verification and export of the log (`partners.audit`),
the brand's side of double-blind matching (`partners.masking`: blind keys, masking hops),
the rendering of results (`render`; `inert` escapes text from the server), reports as
pandas DataFrames (`frames`), connection profiles (`profiles`) and the command line (`cli`).
Imports the common part of `cleanroom` (`cleanroom.v1`, `cleanroom.proofs`,
`cleanroom.group`) and never the server. The names below are loaded on first use, so that
`import partners` (and the command line's start) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from partners.client import CleanRoomClient, Connection
    from partners.errors import InputError, PartnerError, ServerError
    from partners.frames import report_frame
    from partners.masking.hops import HopSummary, work
    from partners.masking.keys import new_blind_key, read_blind_key, write_blind_key
    from partners.preparation.digest import key_check_value, new_secret, read_secret, write_secret
    from partners.preparation.pipeline import (
        DigestFile,
        PreparationSummary,
        prepare,
        read_digest_file,
    )
    from partners.preparation.resolve import ResolutionSummary, Source, resolve

_EXPORTS = {
    "CleanRoomClient": "partners.client",
    "Connection": "partners.client",
    "DigestFile": "partners.preparation.pipeline",
    "HopSummary": "partners.masking.hops",
    "InputError": "partners.errors",
    "PartnerError": "partners.errors",
    "PreparationSummary": "partners.preparation.pipeline",
    "ResolutionSummary": "partners.preparation.resolve",
    "ServerError": "partners.errors",
    "Source": "partners.preparation.resolve",
    "key_check_value": "partners.preparation.digest",
    "new_blind_key": "partners.masking.keys",
    "new_secret": "partners.preparation.digest",
    "prepare": "partners.preparation.pipeline",
    "read_blind_key": "partners.masking.keys",
    "read_digest_file": "partners.preparation.pipeline",
    "read_secret": "partners.preparation.digest",
    "report_frame": "partners.frames",
    "resolve": "partners.preparation.resolve",
    "work": "partners.masking.hops",
    "write_blind_key": "partners.masking.keys",
    "write_secret": "partners.preparation.digest",
}

__all__ = [
    "CleanRoomClient",
    "Connection",
    "DigestFile",
    "HopSummary",
    "InputError",
    "PartnerError",
    "PreparationSummary",
    "ResolutionSummary",
    "ServerError",
    "Source",
    "key_check_value",
    "new_blind_key",
    "new_secret",
    "prepare",
    "read_blind_key",
    "read_digest_file",
    "read_secret",
    "report_frame",
    "resolve",
    "work",
    "write_blind_key",
    "write_secret",
]


def __getattr__(name: str) -> Any:
    """Loads an exported name from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'partners' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
