"""The brand's side of double-blind matching (SPEC section 8): blind keys and masking hops.

Holds the brand's blind key, the scalar `k_b` it masks with (`keys`), the masking and
shuffling of rows (`rows`), the local journal that makes hops resumable (`journal`) and the
loop that takes the pending hops (`hops`). Imports the double-blind group
(`cleanroom.group`), the generated API (`cleanroom.v1`) and the toolkit's errors; never the
client, which it is handed, nor any server code.
"""
