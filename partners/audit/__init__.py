"""The auditor's side of the query log: verify it against signed checkpoints, export it.

Holds verification with saved auditor state and witness quorums (`verify`), the witness
that cosigns checkpoints (`witness`), the privacy accounting recomputed from the log
(`privacy`) and exports (`export`). Imports `cleanroom.proofs`, `cleanroom.v1` and the
toolkit's client.
"""
