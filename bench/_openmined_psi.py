"""OpenMined PSI's cardinality mode on two sets of 32-byte digests: run in its own venv.

Not imported by the benchmark: `bench.blind` runs this file with the interpreter of
`.venv-psi/` (OpenMined PSI pins protobuf 6, the project pins 7), so it imports nothing but
the standard library and `private_set_intersection`.

    .venv-psi/bin/python bench/_openmined_psi.py CLIENT_FILE SERVER_FILE

Each file holds the digests of one brand back to back, 32 bytes each. The client brand
learns only the size of the intersection (`reveal_intersection=False`); the server brand's
setup message is its encrypted set as is (`DataStructure.RAW`), the one exact structure
(GCS and Bloom filters answer with false positives). Every message is serialized and parsed
again, as it would be between two machines. Prints one JSON object: the intersection size,
the seconds of each phase, their sum, the CPU seconds and the bytes of each message.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import private_set_intersection.python as psi

DIGEST_BYTES = 32
FALSE_POSITIVE_RATE = 1e-9  # ignored by RAW, which is exact; the call requires one


def digests(path: Path) -> list[bytes]:
    """The 32-byte digests of one file, in order."""
    data = path.read_bytes()
    return [data[i : i + DIGEST_BYTES] for i in range(0, len(data), DIGEST_BYTES)]


def main() -> int:
    """Runs the protocol once on the two files and prints its figures."""
    client_items, server_items = (digests(Path(argument)) for argument in sys.argv[1:3])
    seconds: dict[str, float] = {}
    cpu = time.process_time()

    started = time.perf_counter()
    server = psi.server.CreateWithNewKey(False)
    client = psi.client.CreateWithNewKey(False)
    setup_bytes = server.CreateSetupMessage(
        FALSE_POSITIVE_RATE, len(client_items), server_items, psi.DataStructure.RAW
    ).SerializeToString()
    seconds["setup"] = time.perf_counter() - started

    started = time.perf_counter()
    request_bytes = client.CreateRequest(client_items).SerializeToString()
    seconds["request"] = time.perf_counter() - started

    started = time.perf_counter()
    request = psi.Request()
    request.ParseFromString(request_bytes)
    response_bytes = server.ProcessRequest(request).SerializeToString()
    seconds["process"] = time.perf_counter() - started

    started = time.perf_counter()
    setup = psi.ServerSetup()
    setup.ParseFromString(setup_bytes)
    response = psi.Response()
    response.ParseFromString(response_bytes)
    intersection = int(client.GetIntersectionSize(setup, response))
    seconds["size"] = time.perf_counter() - started

    sizes = {
        "setup": len(setup_bytes),
        "request": len(request_bytes),
        "response": len(response_bytes),
    }
    figures = {
        "version": psi.__version__,
        "client_items": len(client_items),
        "server_items": len(server_items),
        "intersection": intersection,
        "seconds": seconds,
        "total_seconds": sum(seconds.values()),
        "cpu_seconds": time.process_time() - cpu,
        "message_bytes": sizes,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
