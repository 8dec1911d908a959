"""The ristretto255 group of double-blind matching (SPEC section 8), shared by server and toolkit.

`ristretto255` holds the group operations, computed by libsodium; nothing here imports gRPC
or the server, so that the partner toolkit uses the same code as the clean room.
"""
