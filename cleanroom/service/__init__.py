"""The gRPC face of the clean room: thin servicers over the domain, and the server itself."""
