"""Prometheus metrics of the archiver and the tiny HTTP server exposing them.

``GET /metrics``, ``GET /healthz`` (liveness: 200 while the consume loop runs)
and ``GET /readyz`` (readiness: the loop runs and the consumer is a member of
its group; an empty assignment counts) on ``HQ_ARCHIVE_METRICS_PORT``.
Module-level singletons, one registry per process. This module never touches
Kafka or the archive.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

logger = logging.getLogger(__name__)

ROWS = Counter("hq_archive_rows_total", "rows written to archive files", ["dataset"])
FILES = Counter("hq_archive_files_total", "archive files written", ["dataset"])
SKIPPED = Counter(
    "hq_archive_skipped_total", "records already archived (read again after a restart)"
)
UNDECODABLE = Counter("hq_archive_undecodable_total", "records that did not decode (logged)")
LAG = Gauge("hq_archive_lag", "records not yet archived (high watermark - archived)", ["topic"])


class HealthState:
    def __init__(self) -> None:
        self.running = False
        self.joined = False  # set by the assignment callback, cleared when lost or closed


HEALTH = HealthState()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/metrics"):
            body, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
        elif self.path.startswith("/healthz"):
            ok = HEALTH.running
            body, status, ctype = (
                (b"ok\n" if ok else b"stopped\n"),
                (200 if ok else 503),
                "text/plain",
            )
        elif self.path.startswith("/readyz"):
            ok = HEALTH.running and HEALTH.joined
            body, status, ctype = (
                (b"ready\n" if ok else b"not in the consumer group\n"),
                (200 if ok else 503),
                "text/plain",
            )
        else:
            body, status, ctype = b"not found\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def serve_metrics(port: int) -> ThreadingHTTPServer | None:
    """Serves /metrics, /healthz and /readyz on a daemon thread; ``port`` 0 = off."""
    if not port:
        return None
    server = ThreadingHTTPServer(("0.0.0.0", port), _Handler)
    threading.Thread(target=server.serve_forever, name="archive-metrics", daemon=True).start()
    logger.info("metrics on :%d/metrics", port)
    return server
