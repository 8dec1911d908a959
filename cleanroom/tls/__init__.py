"""Certificates: the demo's PKI and identities from client certificates (`pki`), TLS files.

Imports `cryptography`, the configuration and the errors only.
"""
