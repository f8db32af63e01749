"""Settings of the gateway: ``HQ_GATEWAY_*`` plus the shared ``HQ_*`` ones.

Shared fields (``HQ_KAFKA_BOOTSTRAP``, ``HQ_REDIS_URL``, ...) come from
:class:`hqcore.settings.CommonSettings`; every gateway-specific field carries an
explicit ``HQ_GATEWAY_`` alias. Environment variables are read nowhere else.
API keys are ``SecretStr``: never log them or put them in messages. Only
``HQ_`` names configure the gateway (see :func:`hqcore.settings.env_alias`).
"""

from __future__ import annotations

from functools import cache, partial
from typing import Literal

from pydantic import Field, PositiveInt, SecretStr

from hqcore.settings import CommonSettings, env_alias
from schemas import topics

_gw = partial(env_alias, "HQ_GATEWAY_")
"""Read a field from ``HQ_GATEWAY_<NAME>``, or by its own name in code."""

AuthMode = Literal["on", "off"]


class GatewaySettings(CommonSettings):
    """Everything the gateway needs; see docs/websocket.md for the push protocol."""

    host: str = Field("127.0.0.1", validation_alias=_gw("host"))
    port: int = Field(8000, ge=0, le=65535, validation_alias=_gw("port"))
    api_keys: SecretStr = Field(
        SecretStr(""), validation_alias=_gw("api_keys"), description="comma-separated client keys"
    )
    admin_keys: SecretStr = Field(
        SecretStr(""), validation_alias=_gw("admin_keys"), description="comma-separated admin keys"
    )
    auth: AuthMode = Field(
        "on",
        validation_alias=_gw("auth"),
        description="'off' serves callers without a key (never as admins); with 'on' the "
        "gateway refuses to start unless keys are configured",
    )
    streams_group: str = Field(
        topics.STREAMS_GROUP,
        validation_alias=_gw("streams_group"),
        description="consumer group of the stream workers (for lag)",
    )
    producer_metrics_url: str = Field(
        "http://127.0.0.1:9101/metrics",
        validation_alias=_gw("producer_metrics_url"),
        description="the feed receiver's Prometheus endpoint",
    )
    native: bool = Field(
        True,
        validation_alias=_gw("native"),
        description="write quotes' JSON from their Avro with the compiled path (hqstream_native) "
        "when it is installed; off: decode and serialize in Python (same bytes, more CPU)",
    )
    flush_interval_ms: int = Field(10, ge=1, le=5000, validation_alias=_gw("flush_interval_ms"))
    open_bar_interval_ms: int = Field(
        100,
        ge=1,
        le=60_000,
        validation_alias=_gw("open_bar_interval_ms"),
        description="candle subscribers' open bars are read from Redis at most this often "
        "(once per round for every watched stock that got a quote)",
    )
    market_snapshot_max_age_s: float = Field(
        1.0,
        gt=0,
        validation_alias=_gw("market_snapshot_max_age_s"),
        description="a market (or ALL) snapshot's Redis read is shared this long (merged with "
        "the gateway's own latest quotes, so never stale)",
    )
    max_stocks_per_connection: int = Field(
        500, ge=1, validation_alias=_gw("max_stocks_per_connection")
    )
    max_connections_per_key: int = Field(
        1000, ge=1, validation_alias=_gw("max_connections_per_key")
    )
    max_pending_quotes: int = Field(
        10_000,
        ge=1,
        validation_alias=_gw("max_pending_quotes"),
        description="conflated quotes buffered per client (one per stock)",
    )
    slow_client_deadline_s: float = Field(
        10.0,
        gt=0,
        validation_alias=_gw("slow_client_deadline_s"),
        description="a client whose send stays blocked this long is closed with 4008",
    )
    gc_freeze_interval_s: float = Field(
        2.0,
        ge=0,
        validation_alias=_gw("gc_freeze_interval_s"),
        description="move surviving objects out of the collector's reach this often (0: off); "
        "with 10,000 connections a full collection otherwise pauses the loop for ~1 s",
    )
    gc_full_after_closed: int = Field(
        500,
        ge=1,
        validation_alias=_gw("gc_full_after_closed"),
        description="full collection (unfreeze, collect, freeze) once this many connections "
        "(or a tenth of the open ones, if more) closed since the last one",
    )
    auth_deadline_s: float = Field(5.0, gt=0, validation_alias=_gw("auth_deadline_s"))
    invalid_per_second: int = Field(
        20,
        ge=1,
        validation_alias=_gw("invalid_per_second"),
        description="invalid messages per second tolerated before close 1008",
    )
    replay_window: Literal["day"] | PositiveInt = Field(
        "day",
        validation_alias=_gw("replay_window"),
        description="how far back `since` may reach on the exchange clock: `day` (the whole "
        "trading day of the newest quote) or seconds; Kafka's retention bounds it either way",
    )
    replay_max_records: int = Field(
        5_000_000,
        ge=1,
        validation_alias=_gw("replay_max_records"),
        description="records one replay may scan (its partition holds other stocks too)",
    )
    replay_max_quotes: int = Field(
        50_000,
        ge=1,
        validation_alias=_gw("replay_max_quotes"),
        description="quotes one replay may return (a trading day at 3 s is ~4,800)",
    )
    max_message_bytes: int = Field(
        4096,
        ge=256,
        le=1 << 20,
        validation_alias=_gw("max_message_bytes"),
        description="largest client WebSocket message (decompressed); larger: close 1009",
    )
    requests_per_second: float = Field(
        50.0,
        gt=0,
        validation_alias=_gw("requests_per_second"),
        description="sustained request rate per connection (token bucket refill)",
    )
    request_burst: int = Field(
        600,
        ge=1,
        validation_alias=_gw("request_burst"),
        description="token bucket size per connection (room to subscribe 500 stocks at once)",
    )
    max_queued_bytes: int = Field(
        8 << 20,
        ge=1 << 16,
        validation_alias=_gw("max_queued_bytes"),
        description="control messages (acks, snapshots, replays) queued for one client; "
        "more: close 4008",
    )
    replay_slots: int = Field(
        4, ge=1, validation_alias=_gw("replay_slots"), description="replays running at once"
    )
    replay_slots_per_key: int = Field(
        1,
        ge=1,
        validation_alias=_gw("replay_slots_per_key"),
        description="replays of one API key running at once (the others wait their turn)",
    )
    static_dir: str | None = Field(
        None, validation_alias=_gw("static_dir"), description="dashboard folder (api/static)"
    )
    archive_root: str = Field(
        "",
        validation_alias=_gw("archive_root"),
        description="the Parquet archive (HQ_ARCHIVE_ROOT of the archiver: a directory or a "
        "filesystem URL) that `replay_day` reads; empty: day replays are not offered",
    )
    day_replays_per_key: int = Field(
        1,
        ge=0,
        validation_alias=_gw("day_replays_per_key"),
        description="`replay_day` replays one API key may run at once (more: rate_limited)",
    )
    day_replay_slots: int = Field(
        8,
        ge=0,
        validation_alias=_gw("day_replay_slots"),
        description="`replay_day` replays running at once on this gateway (more: rate_limited)",
    )
    day_replay_max_speed: float = Field(
        100.0,
        gt=0,
        validation_alias=_gw("day_replay_max_speed"),
        description="fastest `replay_day` speed (the exchange's pacing divided by it)",
    )

    @property
    def normalized_topic(self) -> str:
        return self.topic(topics.NORMALIZED)

    @property
    def stats_topic(self) -> str:
        return self.topic(topics.MARKET_STATS)

    @property
    def alerts_topic(self) -> str:
        return self.topic(topics.ALERTS)

    @property
    def candle_topics(self) -> dict[str, str]:
        """Every timeframe's closed-bar topic."""
        return {tf: self.topic(name) for tf, name in topics.CANDLES.items()}

    def client_keys(self) -> tuple[str, ...]:
        return _split(self.api_keys) + self.admin_key_list()

    def admin_key_list(self) -> tuple[str, ...]:
        return _split(self.admin_keys)

    @property
    def auth_enabled(self) -> bool:
        """Whether callers must present a key (``HQ_GATEWAY_AUTH``, default on)."""
        return self.auth == "on"


def _split(secret: SecretStr) -> tuple[str, ...]:
    return tuple(k.strip() for k in secret.get_secret_value().split(",") if k.strip())


@cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()  # type: ignore[call-arg]  # pydantic fills defaults
