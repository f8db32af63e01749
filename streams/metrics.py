"""Prometheus metrics of the stream workers and the tiny HTTP server exposing them.

``GET /metrics`` (Prometheus text format) and ``GET /healthz`` (200 while the
worker is healthy, 503 otherwise) on ``HQ_STREAMS_METRICS_PORT``. Metrics are
module-level singletons (one registry per process). This module never touches
Kafka or Redis.
"""

from __future__ import annotations

import gc
import time
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from hqcore.probe_server import serve_probes
from streams.arbitration import Arbiter

RECORDS_IN = Counter("hq_streams_records_in_total", "raw records consumed")
NORMALIZED = Counter("hq_streams_normalized_total", "quotes normalized and produced")
DLQ = Counter("hq_streams_dlq_total", "records dead-lettered", ["reason"])
CANDLES = Counter("hq_streams_candles_closed_total", "closed 1-minute candles produced")
CANDLE_TICKS_AFTER_CLOSE = Counter(
    "hq_streams_candle_ticks_after_close_total",
    "ticks of a minute whose candle had closed already: in no candle (0 unless the "
    "candle clock ran ahead of the feed)",
)
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
TICKS_WAITING = Gauge(
    "hq_streams_ticks_waiting",
    "ticks parsed and published whose statistics, candles, alerts and Redis write wait "
    "while input waits (quotes first; HQ_STREAMS_QUOTES_FIRST_TICKS at most)",
)
CATCH_UPS = Counter(
    "hq_streams_catch_ups_total",
    "times a batch's rest waited HQ_STREAMS_QUOTES_FIRST_MAX_WAIT_MS while input kept "
    "coming, and the worker caught up (a steady feed faster than the worker finishes it "
    "between fetches: a slow host)",
)
CORE_WAIT = Gauge(
    "hq_streams_core_wait_ratio",
    "share of the last 2 s the worker's main thread was ready to run and waited for a core "
    "(Linux schedstat; measured while the feed is live): above 0.10 the fetch window grows "
    "towards HQ_STREAMS_FETCH_INTERVAL_BUSY_MS, reached at 0.25",
)
FETCH_WINDOW = Gauge(
    "hq_streams_fetch_window_seconds",
    "how long the broker holds a live feed's fetch now (by the input rate and how busy the "
    "host is); 0 while the feed is quiet (a fetch is answered at its first record)",
)
NATIVE_PARSE = Gauge(
    "hq_streams_native_parse",
    "1 when this worker parses with the compiled fast path (hqstream_native), 0 on pure Python",
)
GC_PAUSE = Histogram(
    "hq_streams_gc_pause_seconds",
    "pauses of Python's cyclic garbage collector, by generation: every batch waits for them",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
WORKERS_LIVE = Gauge("hq_streams_stats_workers_live", "workers whose stats partial is fresh")
FEED_QUOTES = Counter("hq_feed_quotes_total", "quotes published, by the feed that won", ["source"])
FEED_FILLED = Counter(
    "hq_feed_filled_total",
    "quotes a lagging feed delivered late of a snapshot no feed had published (published)",
    ["source"],
)
FEED_DROPPED = Counter(
    "hq_feed_dropped_total",
    "quotes of a feed dropped by arbitration (duplicate, late, stale)",
    ["source", "reason"],
)
FEED_DISAGREEMENTS = Counter(
    "hq_feed_disagreements_total",
    "copies of a snapshot whose price or volume differ from the winning feed's beyond tolerance",
    ["source"],
)
FEED_BEHIND = Gauge(
    "hq_feed_behind_seconds",
    "exchange time a feed is behind the newest feed (worst of this worker's partitions)",
    ["source"],
)
FEED_STALE = Gauge("hq_feed_stale", "1 while a feed is stale (its quotes are dropped)", ["source"])


class FeedExport:
    """Copies a :class:`streams.arbitration.Arbiter`'s figures into the metrics above."""

    def __init__(self) -> None:
        self._quotes: dict[str, int] = {}
        self._filled: dict[str, int] = {}
        self._dropped: dict[tuple[str, str], int] = {}
        self._disagreements: dict[str, int] = {}

    def update(self, arbiter: Arbiter) -> None:
        for source, n in arbiter.accepted.items():
            FEED_QUOTES.labels(label(source)).inc(n - self._quotes.get(source, 0))
            self._quotes[source] = n
        for source, n in arbiter.filled.items():
            FEED_FILLED.labels(label(source)).inc(n - self._filled.get(source, 0))
            self._filled[source] = n
        for (source, reason), n in arbiter.dropped.items():
            before = self._dropped.get((source, reason), 0)
            FEED_DROPPED.labels(label(source), reason).inc(n - before)
            self._dropped[source, reason] = n
        for source, n in arbiter.disagreements.items():
            FEED_DISAGREEMENTS.labels(label(source)).inc(n - self._disagreements.get(source, 0))
            self._disagreements[source] = n
        stale_ms = arbiter.config.stale_after_ms
        for source, behind in arbiter.behind_ms().items():
            FEED_BEHIND.labels(label(source)).set(behind / 1000)
            FEED_STALE.labels(label(source)).set(1 if behind > stale_ms else 0)


def watch_gc() -> None:
    """Time every garbage collection of this process into :data:`GC_PAUSE`."""
    if any(getattr(callback, "times_gc_pauses", False) for callback in gc.callbacks):
        return  # watched already (a second app in the process)
    by_generation = [GC_PAUSE.labels(str(generation)) for generation in range(3)]
    started = 0.0

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            by_generation[info["generation"]].observe(time.perf_counter() - started)

    on_gc.times_gc_pauses = True  # type: ignore[attr-defined]
    gc.callbacks.append(on_gc)


def label(source: str) -> str:
    """The metric label of a feed (records without a ``source`` header: ``implicit``)."""
    return source or "implicit"


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


def healthz() -> tuple[bool, bytes]:
    ok = HEALTH.healthy
    return ok, b"ok\n" if ok else f"unhealthy: {HEALTH.fatal}\n".encode()


def readyz() -> tuple[bool, bytes]:
    why = HEALTH.not_ready()
    return why is None, b"ready\n" if why is None else f"not ready: {why}\n".encode()


def serve_metrics(port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer | None:
    """Start the /metrics, /healthz and /readyz server in a daemon thread; ``port`` 0 = off."""
    return serve_probes(port, healthz, readyz, host, name="metrics-http")
