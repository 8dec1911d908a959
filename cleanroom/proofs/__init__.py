"""The query log's proofs, shared by the server and the toolkit: Merkle trees, signed notes.

Holds the RFC 9162 Merkle tree hashes and proofs (`merkle`) and the C2SP signed notes and
checkpoints (`signed_note`). Imports only the standard library and `cryptography`, so that
the partner toolkit verifies the log without any server code.
"""
