"""Exact deterministic matching of digest datasets (SPEC section 4).

Holds the question and its exact counts (`question`), the `Matcher` seam (`engine`), the
sorted layout that uploads store (`layout`) and the in-memory engine (`memory`). Other
engines are new modules behind `engine.Matcher`: the Spark engine (`spark`) over copies of
the datasets split by digest-prefix range (`ranges`). Imports only `cleanroom.names`,
`cleanroom.errors`, NumPy, pandas and Arrow (and `spark`, PySpark, when a session starts):
no storage, no privacy rule, no gRPC.
"""
