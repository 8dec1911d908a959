"""The clean room: brands learn how their audiences overlap, and nothing more.

Two parts share this package:

- the common part, which the partner toolkit installs too and which imports nothing of the
  server: `cleanroom.v1` (the generated API) and `cleanroom.proofs` (the query log's Merkle
  proofs and signed checkpoints);
- the server, in packages by concern. Imports flow one way, from the top of this list to
  the bottom, never back up:

  - `cleanroom.cli`, `cleanroom.demo`: the operator's commands and the demo;
  - `cleanroom.service`: the gRPC servicers, the one conversion module, the call interceptor;
  - `cleanroom.usecases`: uploads, datasets, reports, retention, access, the assembled room;
  - `cleanroom.audit`: the query log and its offline check;
  - `cleanroom.storage`: the embedded database, the catalog, the dataset files;
  - `cleanroom.privacy`: release, noise, suppression, budget, the released report;
  - `cleanroom.matching`: the question, exact counts, the `Matcher` seam and its engines;
  - `cleanroom.tls`: certificates and TLS files;
  - `cleanroom.config`, `cleanroom.names`, `cleanroom.paging`, `cleanroom.errors`: the
    vocabulary every layer speaks.

Only `cleanroom.service` (and the CLI) imports gRPC or the generated code; this file imports
nothing, so that importing the common part pulls in nothing else.
"""

__all__: list[str] = []
