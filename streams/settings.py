"""Settings of the stream workers (``hqstream streams``), read once via :func:`get_settings`.

Shared settings (Kafka, Redis, partitions, schema registry) come from
:class:`hqcore.settings.CommonSettings` (``HQ_*``). The streams' own settings use
``HQ_STREAMS_*`` except the topic prefix (``HQ_TOPIC_PREFIX``, in
CommonSettings), which every service must agree on. Environment variables
are read nowhere else; this module never connects to anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, partial
from typing import Literal

from pydantic import Field

from hqcore.settings import CommonSettings, env_alias
from schemas import topics
from streams.arbitration import ArbitrationConfig

_env = partial(env_alias, "HQ_STREAMS_")
"""Accept ``HQ_STREAMS_<NAME>`` from the environment and the field name in code."""


class StreamsSettings(CommonSettings):
    """Everything a stream worker, the rebuild and the benchmark need."""

    group_id: str = Field(
        topics.STREAMS_GROUP, validation_alias=_env("group_id"), description="Kafka group / app id"
    )
    worker_id: str = Field(
        "",
        validation_alias=_env("worker_id"),
        description="identity of this worker's stats partial; empty = host-pid-random",
    )
    metrics_port: int = Field(
        9102, validation_alias=_env("metrics_port"), description="Prometheus + /healthz; 0 = off"
    )
    batch_max: int = Field(2000, ge=1, validation_alias=_env("batch_max"))
    batch_within_s: float = Field(
        0.0,
        ge=0,
        validation_alias=_env("batch_within_s"),
        description="how long a batch waits for more records after its first; 0: it takes "
        "what was fetched (a live feed's fetch window already collected it, a backlog fills "
        "batches at once)",
    )
    quotes_first_ticks: int = Field(
        10_000,
        ge=0,
        validation_alias=_env("quotes_first_ticks"),
        description="while more fetched input waits (a burst, a backlog), batches are parsed and "
        "their quotes published first, and their statistics, candles, alerts and Redis writes "
        "follow once the input is caught up or this many ticks wait for them; 0: every batch "
        "is finished before the next is parsed (docs/architecture.md, 'Quotes first')",
    )
    quotes_first_batch: int = Field(
        250,
        ge=0,
        validation_alias=_env("quotes_first_batch"),
        description="a batch of at least this many records goes quotes first even when no "
        "input waits behind it yet: a burst's first fetch (or a backlog's), whose next fetch "
        "is on its way; a steady feed's batches hold a fetch window's few dozen lines and are "
        "finished at once, in one produce request; 0: only waiting input decides",
    )
    quotes_first_hold_ms: float = Field(
        60.0,
        ge=0,
        validation_alias=_env("quotes_first_hold_ms"),
        description="the batches whose rest waits (HQ_STREAMS_QUOTES_FIRST_TICKS) are finished "
        "once no input waits and no batch came for this long: a burst's next fetch (the broker "
        "answers it in a window) is parsed before the rest of the batches before it, not after "
        "one of their slices, and their rest follows the burst's last fetch; 0: finished as "
        "soon as no input waits",
    )
    quotes_first_max_wait_ms: float = Field(
        300.0,
        ge=0,
        validation_alias=_env("quotes_first_max_wait_ms"),
        description="the most a batch's rest waits (HQ_STREAMS_QUOTES_FIRST_TICKS) while input "
        "keeps coming: once the oldest waited this long, the worker catches up, finishing twice "
        "the ticks of each batch it parses until none waits. A steady feed on a slow host "
        "always has input waiting, and its batches waited for a timer that finished them all "
        "at once (1.3-1.5 s without a quote every ~3 s); 0: no bound",
    )
    finish_slice_ms: float = Field(
        20.0,
        ge=0,
        validation_alias=_env("finish_slice_ms"),
        description="the rest of the batches parsed quotes first is finished in slices of "
        "about this long, each tick costed as the slices before it took (one that closes its "
        "stock's candle costs several plain ones), and a catch-up (HQ_STREAMS_QUOTES_FIRST_"
        "MAX_WAIT_MS) finishes twice a batch's ticks or a slice's time, whichever is less: new "
        "input waits one slice at most; 0: slices of 500 ticks, a catch-up by ticks only",
    )
    fetch_interval_ms: float = Field(
        15.0,
        ge=0,
        validation_alias=_env("fetch_interval_ms"),
        description="while the feed is live, the broker holds each fetch at least this long "
        "and answers it with everything that arrived meanwhile: a live feed is fetched (and "
        "batched, written, produced) at most ~1,000/N times a second, a quiet one answered "
        "at its first record; 0 = no window (docs/architecture.md, 'Cost per tick')",
    )
    fetch_interval_max_ms: float = Field(
        40.0,
        ge=0,
        validation_alias=_env("fetch_interval_max_ms"),
        description="at a low input rate the window grows until a fetch holds about "
        "HQ_STREAMS_FETCH_BATCH_TICKS records, up to this long (a batch's fixed cost spread "
        "over more ticks, for this much latency); at most HQ_STREAMS_FETCH_INTERVAL_MS: a "
        "fixed window",
    )
    fetch_batch_ticks: int = Field(
        12,
        ge=0,
        validation_alias=_env("fetch_batch_ticks"),
        description="the records a live fetch's window aims at (see "
        "HQ_STREAMS_FETCH_INTERVAL_MAX_MS); 0 = a fixed window",
    )
    fetch_interval_busy_ms: float = Field(
        30.0,
        ge=0,
        validation_alias=_env("fetch_interval_busy_ms"),
        description="on a host with no core to spare (the worker's main thread waits for one "
        "more than 10 % of the time: hq_streams_core_wait_ratio) the shortest fetch window "
        "grows towards this, reached at 25 %: fewer, larger batches, whose fixed costs every "
        "quote queued behind; 0 = the window never follows the host (docs/architecture.md, "
        "'Cost per tick')",
    )
    stats_interval_s: float = Field(1.0, gt=0, validation_alias=_env("stats_interval_s"))
    stats_quiet_interval_s: float = Field(
        10.0,
        gt=0,
        validation_alias=_env("stats_quiet_interval_s"),
        description="while no worker's statistics change (lunch, the close, a quiet feed) "
        "the merged statistics are published this often instead of every "
        "HQ_STREAMS_STATS_INTERVAL_S: what they hold is the same, only their ts moves",
    )
    candle_flush_interval_s: float = Field(
        1.0,
        gt=0,
        validation_alias=_env("candle_flush_interval_s"),
        description="how often candles whose minute is over are closed",
    )
    indicators: bool = Field(
        True,
        validation_alias=_env("indicators"),
        description="build the 5m/15m/30m/60m/1d bars and every timeframe's indicators "
        "(off: 1-minute candles only, without indicators)",
    )
    native: bool = Field(
        True,
        validation_alias=_env("native"),
        description="parse feed lines and build the Redis quote script's arguments with the "
        "compiled fast path (hqstream_native) when it is installed; off: the pure-Python path "
        "only (same results, more CPU)",
    )
    candle_quiet_s: float = Field(
        5.0,
        gt=0,
        validation_alias=_env("candle_quiet_s"),
        description="after this long without a newer tick the candle clock follows the wall clock",
    )
    candle_timer_grace_s: float = Field(
        3.0,
        ge=0,
        validation_alias=_env("candle_timer_grace_s"),
        description="the candle timer closes the candle of a stock whose partition still "
        "ticks only once that partition's clock is this far past the candle's end (the "
        "vendor's snapshot interval): the stock's own next tick closes it before, so a "
        "minute's closes spread over the interval instead of piling into the timer's",
    )
    latest_interval_s: float = Field(
        1.0,
        ge=0,
        le=10,
        validation_alias=_env("latest_interval_s"),
        description="hq.quotes.latest gets each stock's newest quote at most this often, in "
        "one produce request, rather than with every batch; a batch's offsets are committed "
        "once its latest quotes are delivered too. 0: with every batch "
        "(docs/architecture.md, 'hq.quotes.latest')",
    )
    redis_chunk_ticks: int = Field(
        1000,
        ge=1,
        validation_alias=_env("redis_chunk_ticks"),
        description="quotes per Redis script call (bounds how long one call blocks Redis)",
    )
    redis_replica_wait_ms: int = Field(
        500,
        ge=0,
        validation_alias=_env("redis_replica_wait_ms"),
        description="Redis Cluster: how long a batch waits for a replica to hold its writes "
        "(WAIT) before offsets move on; 0 = never wait",
    )
    gc_threshold: int = Field(
        50_000,
        ge=0,
        validation_alias=_env("gc_threshold"),
        description="young objects that outlive the batches before the cyclic GC collects "
        "them, between batches (survivors are frozen; 8x is the automatic backstop); "
        "0 = Python's default GC",
    )
    stats_top_n: int = Field(10, ge=1, validation_alias=_env("stats_top_n"))
    partial_ttl_s: float = Field(
        5.0, gt=0, validation_alias=_env("partial_ttl_s"), description="a worker is dead after"
    )
    # 300 s: the alert windows (streams.alerts.AlertConfig) and the open candle. Every
    # stock a worker takes over is replayed before its first batch: with 900 s, 2,500
    # stocks 15 min into a session took ~20 s of CPU, with 300 s ~6 (benchmarks.md).
    warmup_window_s: int = Field(
        300,
        ge=0,
        validation_alias=_env("warmup_window_s"),
        description="exchange-time history replayed from the Redis ticks stream per stock "
        "a worker takes over (the alert windows and the open candle need 300 s)",
    )
    auto_rebuild: bool = Field(
        True,
        validation_alias=_env("auto_rebuild"),
        description="check the state markers of this worker's partitions in Redis (once a "
        "second, and after a Redis error) "
        "and rebuild what is missing from Kafka (streams/state_rebuild.py)",
    )
    rebuild_ticks_s: int = Field(
        300,
        ge=0,
        validation_alias=_env("rebuild_ticks_s"),
        description="history of each stock's ticks stream a rebuild restores, in Kafka time "
        "before the newest normalized record; the default covers the alert windows (300 s) "
        "and the current candle; 6000 restores the whole cap (2,000 ticks 3 s apart) at 20x "
        "the cost (docs/architecture.md, 'Cold start')",
    )
    redis_retry_max_s: float = Field(5.0, gt=0, validation_alias=_env("redis_retry_max_s"))
    max_ahead_s: float = Field(
        300.0,
        gt=0,
        validation_alias=_env("max_ahead_s"),
        description="a quote whose exchange time is more than this after its receive time is "
        "dead-lettered (future_timestamp); older quotes (replays) are always accepted",
    )
    feed_precision_ms: int = Field(
        1000,
        ge=1,
        validation_alias=_env("feed_precision_ms"),
        description="two feeds' quotes of a stock are one snapshot when their exchange times "
        "are equal at this precision (the coarser of the vendors': whole seconds)",
    )
    feed_stale_after_s: float = Field(
        10.0,
        gt=0,
        validation_alias=_env("feed_stale_after_s"),
        description="a feed this far behind the newest feed (exchange time, per partition) "
        "is stale: its quotes are dropped until it catches up",
    )
    feed_price_tolerance: float = Field(
        0.005,
        ge=0,
        validation_alias=_env("feed_price_tolerance"),
        description="yuan: two feeds' prices of one snapshot further apart disagree",
    )
    feed_volume_tolerance: float = Field(
        0.001,
        ge=0,
        validation_alias=_env("feed_volume_tolerance"),
        description="share of the cumulative volume: two feeds' volumes further apart disagree",
    )
    producer: Literal["batch", "confluent"] = Field(
        "batch",
        validation_alias=_env("producer"),
        description="Kafka producer of the faust worker's outputs: batch (aiokafka, one "
        "produce request per batch) | confluent (librdkafka, one request per partition)",
    )
    datadir: str = Field(".run/streams", validation_alias=_env("datadir"))
    # -- group membership and failover (docs/architecture.md, "Failover") --------
    session_timeout_s: float = Field(
        3.0,
        ge=1,
        validation_alias=_env("session_timeout_s"),
        description="a worker that stops heartbeating (SIGKILL, frozen) loses its partitions "
        "after this long; the broker's group.min.session.timeout.ms is the floor (3 s in "
        "hqstream's broker configs, Kafka's default is 6 s)",
    )
    heartbeat_interval_s: float = Field(
        0.5,
        gt=0,
        validation_alias=_env("heartbeat_interval_s"),
        description="how often a worker heartbeats, and so learns that a rebalance started",
    )
    rebalance_timeout_s: float = Field(
        20.0,
        gt=0,
        validation_alias=_env("rebalance_timeout_s"),
        description="how long the coordinator waits for members to rejoin a rebalance; a "
        "worker still finishing its batch after this is dropped from that generation",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        validation_alias=_env("request_timeout_s"),
        description="Kafka request timeout (>= session timeout); also bounds one rebalance seek",
    )
    max_poll_interval_s: float = Field(
        300.0,
        gt=0,
        validation_alias=_env("max_poll_interval_s"),
        description="a worker whose fetcher does not poll for this long leaves the group",
    )
    group_instance_id: str = Field(
        "",
        validation_alias=_env("group_instance_id"),
        description="static membership (KIP-345), e.g. a StatefulSet pod name: a restarted "
        "worker gets its partitions back without a rebalance, but a worker that never comes "
        "back holds them for the whole session timeout, and so does a clean stop; "
        "empty = dynamic membership",
    )
    dependency_retry_max_s: float = Field(
        1.0,
        gt=0,
        validation_alias=_env("dependency_retry_max_s"),
        description="longest pause between attempts to reach Kafka/Redis at start-up (an "
        "attempt is one metadata request and one PING; 5 s left a replacement worker up to "
        "5 s behind a broker that was back)",
    )
    dependency_log_every_s: float = Field(
        10.0,
        gt=0,
        validation_alias=_env("dependency_log_every_s"),
        description="while waiting for Kafka/Redis at start-up, log once per this interval",
    )
    stall_exit_s: float = Field(
        180.0,
        gt=0,
        validation_alias=_env("stall_exit_s"),
        description="a worker whose rebalance has not resumed its flow for this long exits "
        "non-zero (and is restarted) instead of holding partitions it does not process",
    )

    @property
    def arbitration(self) -> ArbitrationConfig:
        return ArbitrationConfig(
            precision_ms=self.feed_precision_ms,
            stale_after_ms=round(self.feed_stale_after_s * 1000),
            price_tolerance=self.feed_price_tolerance,
            volume_tolerance=self.feed_volume_tolerance,
        )

    @property
    def topic_names(self) -> TopicNames:
        return TopicNames(
            raw=self.topic(topics.RAW),
            normalized=self.topic(topics.NORMALIZED),
            dlq=self.topic(topics.DLQ),
            market_stats=self.topic(topics.MARKET_STATS),
            candles=self.topic(topics.CANDLES_1M),
            alerts=self.topic(topics.ALERTS),
            candles_by_tf={tf: self.topic(name) for tf, name in topics.CANDLES.items()},
            quotes_latest=self.topic(topics.QUOTES_LATEST),
            bars_state=self.topic(topics.BARS_STATE),
            feed_winners=self.topic(topics.FEED_WINNERS),
        )


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The concrete topic names after the prefix."""

    raw: str
    normalized: str
    dlq: str
    market_stats: str
    candles: str
    alerts: str
    candles_by_tf: dict[str, str]  # timeframe -> its topic (1m is ``candles``)
    quotes_latest: str
    bars_state: str
    feed_winners: str


@cache
def get_settings() -> StreamsSettings:
    return StreamsSettings()
