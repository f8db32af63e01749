"""The ``/metrics`` + ``/healthz`` + ``/readyz`` endpoints every non-web process serves.

:func:`probe_response` is the one routing of those three paths (Prometheus
text for ``/metrics``; 200 or 503 with the probe's body for the other two; 404
for anything else, a query string ignored). Two ways to serve it:

* :func:`serve_probes`: a ``ThreadingHTTPServer`` in a daemon thread (stream
  workers, archiver): probes are read from another thread, so they must only
  read plain attributes;
* the receiver answers from its own event loop (:mod:`producers.health`),
  with the same routing.

This module never decides what healthy or ready means: the caller's probes do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

logger = logging.getLogger(__name__)

#: ``() -> (ok, body)``: 200 with ``body`` when ok, else 503 with it
Probe = Callable[[], tuple[bool, bytes]]


def probe_response(
    path: str, healthz: Probe, readyz: Probe, content_type: str = "text/plain"
) -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of a GET on ``path``."""
    path = path.split("?", 1)[0]
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, generate_latest()
    probe = healthz if path == "/healthz" else readyz if path == "/readyz" else None
    if probe is None:
        return 404, "text/plain", b"not found\n"
    ok, body = probe()
    return (200 if ok else 503), content_type, body


def probe_handler(healthz: Probe, readyz: Probe) -> type[BaseHTTPRequestHandler]:
    """A request handler class answering :func:`probe_response`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, ctype, body = probe_response(self.path, healthz, readyz)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("probes http: " + format, *args)

    return Handler


def serve_probes(
    port: int, healthz: Probe, readyz: Probe, host: str = "0.0.0.0", name: str = "probes-http"
) -> ThreadingHTTPServer | None:
    """Serve :func:`probe_response` from a daemon thread; ``port`` 0 = off."""
    if port <= 0:
        return None
    server = ThreadingHTTPServer((host, port), probe_handler(healthz, readyz))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    logger.info("metrics, /healthz and /readyz on http://%s:%d", host, port)
    return server
