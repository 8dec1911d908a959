"""The partner toolkit a brand runs on its own machine.

It normalizes and digests the brand's identifiers (the collaboration secret never leaves
the brand), uploads the digests, asks for overlap reports and reads the query log.
"""

from partners.client import CleanRoomClient, Connection
from partners.digest import key_check_value, new_secret, read_secret, write_secret
from partners.errors import InputError, PartnerError, ServerError
from partners.preparation import DigestFile, PreparationSummary, prepare, read_digest_file
from partners.resolve import ResolutionSummary, Source, resolve

__all__ = [
    "CleanRoomClient",
    "Connection",
    "DigestFile",
    "InputError",
    "PartnerError",
    "PreparationSummary",
    "ResolutionSummary",
    "ServerError",
    "Source",
    "key_check_value",
    "new_secret",
    "prepare",
    "read_digest_file",
    "read_secret",
    "resolve",
    "write_secret",
]
