"""The auditor's side of the query log: verify it against signed checkpoints, export it.

Holds verification with saved auditor state (`verify`) and exports (`export`). Imports
`cleanroom.proofs`, `cleanroom.v1` and the toolkit's client.
"""
