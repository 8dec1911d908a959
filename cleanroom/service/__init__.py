"""The gRPC face of the clean room: thin servicers over the use cases, and the server itself.

Holds the servicers, the one module that converts between the API's messages and domain
values (`convert`), the mapping of domain errors to statuses (`status`), the interceptor
that authenticates and audits every call (`calls`) and the server (`server`). The only
server package that imports gRPC and the generated code; it stands on `cleanroom.usecases`
and the packages below it.
"""
