"""What callers can do: upload, list and delete datasets, mask them, ask for reports, sweep.

Holds who may do what (`access`), upload validation (`upload`), datasets (`datasets`),
the masking hops of double-blind collaborations (`masking`, over the rows of `hop_rows`),
reports (`reports`), retention (`retention`) and the assembled clean room (`clean_room`).
Stands on the domain and storage packages below it; imports no gRPC, so that
`cleanroom.service` is the only layer that speaks the API.
"""
