"""Prometheus metrics of the archiver and the tiny HTTP server exposing them.

``GET /metrics``, ``GET /healthz`` (liveness: 200 while the consume loop runs)
and ``GET /readyz`` (readiness: the loop runs and the consumer is a member of
its group; an empty assignment counts) on ``HQ_ARCHIVE_METRICS_PORT``.
Module-level singletons, one registry per process. This module never touches
Kafka or the archive.
"""

from __future__ import annotations

from http.server import ThreadingHTTPServer

from prometheus_client import Counter, Gauge

from hqcore.probe_server import serve_probes

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


def healthz() -> tuple[bool, bytes]:
    return HEALTH.running, b"ok\n" if HEALTH.running else b"stopped\n"


def readyz() -> tuple[bool, bytes]:
    ok = HEALTH.running and HEALTH.joined
    return ok, b"ready\n" if ok else b"not in the consumer group\n"


def serve_metrics(port: int) -> ThreadingHTTPServer | None:
    """The /metrics, /healthz and /readyz server in a daemon thread; ``port`` 0 = off."""
    return serve_probes(port, healthz, readyz, name="archive-metrics")
