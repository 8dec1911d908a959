"""The query log: every call appended to a Merkle tree per collaboration, signed checkpoints.

Holds the log kept in the database (`log`) and the operator's offline check (`check`).
Imports `cleanroom.proofs` and `cleanroom.storage`; no use case, no gRPC.
"""
