"""Preparing a brand's customer file on its own machine: normalize, resolve, digest.

Holds identifier normalization (`normalize`), digests and the collaboration secret
(`digest`), record resolution (`resolve`), the prepare pipeline that writes a digest
file (`pipeline`), the segment rules it shares with the server (`segments`) and the hints
that explain its drops (`advice`); `_`-prefixed modules are its internals (`_sources` reads
files and tables). Imports no server code and no
gRPC: a brand prepares files offline.
"""
