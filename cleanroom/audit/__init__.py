"""The query log: every call appended to a Merkle tree per collaboration, signed checkpoints.

Holds the log kept in the database (`log`), the replay that tells whether a stored log is
the tree its server signed (`integrity`, used by the server at start and before signing,
and by the operator's offline check, `check`).
Imports `cleanroom.proofs` and `cleanroom.storage`; no use case, no gRPC.
"""
