"""Prometheus metrics of the stream workers and the tiny HTTP server exposing them.

``GET /metrics`` (Prometheus text format) and ``GET /healthz`` (200 while the
worker is healthy, 503 otherwise) on ``HQ_STREAMS_METRICS_PORT``. Metrics are
module-level singletons (one registry per process). This module never touches
Kafka or Redis.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

logger = logging.getLogger(__name__)

RECORDS_IN = Counter("hq_streams_records_in_total", "raw records consumed")
NORMALIZED = Counter("hq_streams_normalized_total", "quotes normalized and produced")
DLQ = Counter("hq_streams_dlq_total", "records dead-lettered", ["reason"])
CANDLES = Counter("hq_streams_candles_closed_total", "closed 1-minute candles produced")
ALERTS = Counter("hq_streams_alerts_total", "alerts produced", ["kind"])
REDIS_RETRIES = Counter("hq_streams_redis_retries_total", "failed batch writes retried")
KAFKA_RETRIES = Counter("hq_streams_kafka_retries_total", "failed batch produces retried")
STALE = Counter("hq_streams_stale_quotes_total", "quotes older than the stored one (not applied)")
BATCH_SIZE = Histogram(
    "hq_streams_batch_size",
    "records per processed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
REDIS_LATENCY = Histogram(
    "hq_streams_redis_batch_seconds",
    "time to write one batch to Redis",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_LATENCY = Histogram(
    "hq_streams_batch_seconds",
    "time to process and persist one batch (parse to Redis + Kafka acknowledged)",
    buckets=(0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5),
)
E2E_LATENCY = Histogram(
    "hq_streams_e2e_latency_seconds",
    "receive_ts (receiver read the line) -> quote in Redis and Kafka",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REBUILD_RUNNING = Gauge("hq_streams_rebuild_running", "1 while this worker rebuilds Redis state")
REBUILD_PROGRESS = Gauge(
    "hq_streams_rebuild_progress_ratio", "records read / records to read of the current rebuild"
)
REBUILD_RECORDS = Counter(
    "hq_streams_rebuild_records_total", "records read by state rebuilds", ["source"]
)
REBUILDS = Counter("hq_streams_rebuilds_total", "state rebuilds completed")
REBUILD_SECONDS = Gauge("hq_streams_rebuild_last_seconds", "duration of the last state rebuild")
REDIS_UP = Gauge("hq_streams_redis_up", "1 while the last Redis write succeeded")
ASSIGNED = Gauge("hq_streams_assigned_partitions", "raw-topic partitions assigned to this worker")
WORKERS_LIVE = Gauge("hq_streams_stats_workers_live", "workers whose stats partial is fresh")


class HealthState:
    """What /healthz and /readyz report; set by the worker.

    Liveness (``/healthz``) is "this process is alive and not giving up": it
    stays 200 while the worker waits for Kafka or Redis (it retries; a restart
    would not help) and turns 503 only when the worker is exiting
    (:func:`streams.lifecycle.fatal`). Readiness (``/readyz``) is "this worker
    is doing its job now": it has joined its consumer group (an empty
    assignment counts), its agent runs, and its last Redis write succeeded.
    """

    def __init__(self) -> None:
        self.running = False
        self.joined = False  # the group assigned partitions at least once
        self.redis_ok = True
        self.fatal: str | None = None  # why the worker is exiting (streams.lifecycle.fatal)
        self.rebuilding = False  # restoring Redis from Kafka (streams.state_rebuild)

    @property
    def healthy(self) -> bool:
        return self.fatal is None

    def not_ready(self) -> str | None:
        """Why the worker is not ready, or None when it is."""
        if self.fatal is not None:
            return self.fatal
        if not self.running:
            return "starting: waiting for Kafka and Redis"
        if not self.joined:
            return "not yet in its consumer group"
        if not self.redis_ok:
            return "redis down (retrying)"
        if self.rebuilding:
            return "rebuilding the Redis state from Kafka"
        return None


HEALTH = HealthState()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/metrics"):
            body, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
        elif self.path.startswith("/healthz"):
            ok = HEALTH.healthy
            body = b"ok\n" if ok else f"unhealthy: {HEALTH.fatal}\n".encode()
            status, ctype = (200 if ok else 503), "text/plain"
        elif self.path.startswith("/readyz"):
            why = HEALTH.not_ready()
            body = b"ready\n" if why is None else f"not ready: {why}\n".encode()
            status, ctype = (200 if why is None else 503), "text/plain"
        else:
            body, status, ctype = b"not found\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("metrics http: " + format, *args)


def serve_metrics(port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer | None:
    """Start the /metrics, /healthz and /readyz server in a daemon thread; ``port`` 0 = off."""
    if port <= 0:
        return None
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    logger.info("metrics and /healthz on http://%s:%d", host, port)
    return server
