"""The privacy rules: what exact counts may become before they leave the server.

Holds the released report (`report`), the one place where exact counts become released
figures (`release`), noise from OpenDP (`noise`), threshold and secondary suppression
(`suppression`), epsilon budgets (`budget`) and the coarse sizes the query log shows
(`coarse`). Imports `cleanroom.matching`'s question types, the configuration and names;
no storage, no gRPC.
"""
