"""Exact deterministic matching of digest datasets (SPEC section 4).

Holds the question and its exact counts (`question`), the `Matcher` seam (`engine`), the
sorted layout that uploads store (`layout`) and the in-memory engine (`memory`). Other
engines are new modules behind `engine.Matcher`. Imports only `cleanroom.names`, NumPy,
pandas and Arrow: no storage, no privacy rule, no gRPC.
"""
