"""The operations listener: plain HTTP for probes and scrapes, apart from the gRPC port.

`/healthz` (liveness), `/readyz` (readiness, 503 with the failed checks) and `/metrics`
(Prometheus text format). It serves no data of the clean room and needs no client
certificate, so it listens on loopback unless configured otherwise (`[server.ops]`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cleanroom.errors import ConfigError
from cleanroom.ops.metrics import CONTENT_TYPE, CallMetrics
from cleanroom.ops.probes import OK

log = logging.getLogger(__name__)


class OpsListener:
    """A small threaded HTTP server for `/healthz`, `/readyz` and `/metrics`."""

    def __init__(
        self, listen: str, metrics: CallMetrics, ready: Callable[[], dict[str, str]]
    ) -> None:
        host, _, port = listen.rpartition(":")
        handler = _handler(metrics, ready)
        try:
            self._http = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        except OSError as error:
            raise ConfigError(
                "server.ops.listen", f"cannot listen on {listen!r}: {error.strerror}"
            ) from None
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="ops-listener", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on (useful when configured with port 0)."""
        return int(self._http.server_address[1])

    def start(self) -> OpsListener:
        """Starts serving in a thread of its own."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        self._http.shutdown()
        self._http.server_close()


def _handler(
    metrics: CallMetrics, ready: Callable[[], dict[str, str]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "cleanroom-ops"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/readyz":
                checks = ready()
                status = (
                    HTTPStatus.OK
                    if all(v == OK for v in checks.values())
                    else (HTTPStatus.SERVICE_UNAVAILABLE)
                )
                if status != HTTPStatus.OK:
                    log.warning("not ready", extra={"checks": checks})
                body = json.dumps({"ready": status == HTTPStatus.OK, "checks": checks})
                self._send(status, body.encode() + b"\n", "application/json")
            elif path == "/metrics":
                self._send(HTTPStatus.OK, metrics.exposition(), CONTENT_TYPE)
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Probes come every few seconds: they are logged at DEBUG only, never raw.
            log.debug(
                "ops request", extra={"path": self.path[:100], "client": self.client_address[0]}
            )

    return Handler
