"""The query log's proofs, shared by the server and the toolkit: Merkle trees, signed notes.

Holds the RFC 9162 Merkle tree hashes and proofs (`merkle`), the C2SP signed notes and
checkpoints with the ring of a log's keys (`signed_note`) and witnesses' C2SP
`cosignature/v1` (`cosignature`). Imports only the standard library and `cryptography`,
so that the partner toolkit verifies the log without any server code.
"""
