"""Preparing a brand's customer file on its own machine: normalize, resolve, digest.

Holds identifier normalization (`normalize`), digests and the collaboration secret
(`digest`), record resolution (`resolve`) and the prepare pipeline that writes a digest
file (`pipeline`); `_`-prefixed modules are its internals. Imports no server code and no
gRPC: a brand prepares files offline.
"""
