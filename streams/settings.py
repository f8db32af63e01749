"""Settings of the stream workers (``hqstream streams``), read once via :func:`get_settings`.

Shared settings (Kafka, Redis, partitions, schema registry) come from
:class:`schemas.config.CommonSettings` (``HQ_*``). The streams' own settings use
``HQ_STREAMS_*`` except the topic prefix/suffix (``HQ_TOPIC_PREFIX`` /
``HQ_TOPIC_SUFFIX``), which every service must agree on. Environment variables
are read nowhere else; this module never connects to anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache, partial

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from schemas import topics
from schemas.config import CommonSettings, env_alias

logger = logging.getLogger(__name__)

_env = partial(env_alias, "HQ_STREAMS_")
"""Accept ``HQ_STREAMS_<NAME>`` from the environment and the field name in code."""


class StreamsSettings(CommonSettings):
    """Everything a stream worker, the rebuild and the benchmark need."""

    model_config = SettingsConfigDict(env_prefix="HQ_", extra="ignore", populate_by_name=True)

    topic_prefix: str = Field("", description="prepended to every topic name (tests: uuid)")
    topic_suffix: str = Field("", description="appended to every topic name")
    group_id: str = Field(
        "hqstream-streams", validation_alias=_env("group_id"), description="Kafka group / app id"
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
        0.002,
        gt=0,
        validation_alias=_env("batch_within_s"),
        description="how long a batch waits for more records after its first (a backlog fills "
        "batches at once; live, a short wait keeps latency low)",
    )
    stats_interval_s: float = Field(1.0, gt=0, validation_alias=_env("stats_interval_s"))
    candle_flush_interval_s: float = Field(
        1.0,
        gt=0,
        validation_alias=_env("candle_flush_interval_s"),
        description="how often candles whose minute is over are closed",
    )
    candle_quiet_s: float = Field(
        5.0,
        gt=0,
        validation_alias=_env("candle_quiet_s"),
        description="after this long without a newer tick the candle clock follows the wall clock",
    )
    redis_chunk_ticks: int = Field(
        1000,
        ge=1,
        validation_alias=_env("redis_chunk_ticks"),
        description="quotes per Redis script call (bounds how long one call blocks Redis)",
    )
    gc_threshold: int = Field(
        50_000,
        ge=0,
        validation_alias=_env("gc_threshold"),
        description="gen-0 threshold of Python's cyclic GC in a worker (0 = Python's default)",
    )
    stats_top_n: int = Field(10, ge=1, validation_alias=_env("stats_top_n"))
    partial_ttl_s: float = Field(
        5.0, gt=0, validation_alias=_env("partial_ttl_s"), description="a worker is dead after"
    )
    warmup_window_s: int = Field(
        900,
        ge=0,
        validation_alias=_env("warmup_window_s"),
        description="exchange-time history replayed from the Redis ticks stream per stock",
    )
    redis_retry_max_s: float = Field(5.0, gt=0, validation_alias=_env("redis_retry_max_s"))
    max_ahead_s: float = Field(
        300.0,
        gt=0,
        validation_alias=_env("max_ahead_s"),
        description="a quote whose exchange time is more than this after its receive time is "
        "dead-lettered (future_timestamp); older quotes (replays) are always accepted",
    )
    producer: str = Field(
        "confluent",
        validation_alias=_env("producer"),
        description="Kafka producer of the faust worker's outputs: confluent | faust",
    )
    datadir: str = Field(".run/streams", validation_alias=_env("datadir"))

    def topic(self, base: str) -> str:
        return f"{self.topic_prefix}{base}{self.topic_suffix}"

    @property
    def topic_names(self) -> TopicNames:
        return TopicNames(
            raw=self.topic(topics.RAW),
            normalized=self.topic(topics.NORMALIZED),
            dlq=self.topic(topics.DLQ),
            market_stats=self.topic(topics.MARKET_STATS),
            candles=self.topic(topics.CANDLES_1M),
            alerts=self.topic(topics.ALERTS),
        )


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The concrete topic names after prefix/suffix."""

    raw: str
    normalized: str
    dlq: str
    market_stats: str
    candles: str
    alerts: str


@cache
def get_settings() -> StreamsSettings:
    return StreamsSettings()
