"""Pydantic models at the HTTP edge: the REST responses and their OpenAPI docs.

Quote, Candle, MarketStats and Alert mirror the Avro schemas in schemas/avro/
field by field (a test checks it). These models validate what REST returns;
the WebSocket path sends the decoded Avro dicts as they are (orjson), never
through these models, to stay fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.exchange import Market, MarketOrAll
from schemas.market_rules import Board
from schemas.records import AlertKind
from schemas.redis_keys import RankMetric


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Quote(_Record):
    """One normalized quote snapshot (Avro ``io.hqstream.v1.Quote``)."""

    symbol: str = Field(description="exchange prefix + code, e.g. sz000001")
    code: str
    market: Market
    board: Board
    name: str
    is_st: bool = False
    exchange_ts: int = Field(description="exchange time, epoch ms")
    trade_date: str
    open: float
    prev_close: float
    price: float
    high: float
    low: float
    bid: float
    ask: float
    volume: int
    amount: float
    bid_prices: list[float]
    bid_volumes: list[int]
    ask_prices: list[float]
    ask_volumes: list[int]
    change: float
    change_pct: float
    limit_up: float
    limit_down: float
    traded: bool
    suspended: bool
    at_limit_up: bool
    at_limit_down: bool
    receive_ts: int
    process_ts: int
    limit_free: bool = Field(False, description="new listing without a daily price limit")
    not_traded_yet: bool = Field(False, description="no trade yet today, not suspended")
    phase: str = Field("", description="exchange session at exchange_ts (Avro v2)")
    avg_price: float = Field(0.0, description="amount / volume, yuan per share")
    amplitude: float = Field(0.0, description="(high - low) / prev_close, percent")
    order_imbalance: float = Field(0.0, description="weibi: 5-level book imbalance, percent")


class Candle(_Record):
    """An OHLCV bar of one timeframe with its indicators (Avro ``io.hqstream.v1.Candle``)."""

    code: str
    market: str
    trade_date: str
    minute_ts: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    amount: float
    ticks: int
    closed: bool
    tf: str = Field("1m", description="1m, 5m, 15m, 30m, 60m or 1d")
    indicators: dict[str, float | None] | None = Field(
        None,
        description="ma5 ... atr14 as of now (open bar) or the close; only the groups asked "
        "for; null when none were asked for (schemas/indicators.py: the definitions)",
    )


class RankEntry(_Record):
    code: str
    name: str
    price: float
    change_pct: float
    amount: float


class BoardBreadth(_Record):
    """The breadth of one board (Avro ``io.hqstream.v1.BoardBreadth``)."""

    board: Board
    stocks: int
    advancers: int
    decliners: int
    unchanged: int
    suspended: int
    not_traded_yet: int
    limit_up: int
    limit_down: int


class MarketStats(_Record):
    """Statistics of one market at one moment (Avro ``io.hqstream.v1.MarketStats``)."""

    market: str
    ts: int
    stocks: int
    advancers: int
    decliners: int
    unchanged: int
    limit_up: int
    limit_down: int
    suspended: int
    volume: int
    amount: float
    avg_change_pct: float
    top_gainers: list[RankEntry]
    top_losers: list[RankEntry]
    top_turnover: list[RankEntry]
    not_traded_yet: int = Field(0, description="no trade yet today, not suspended")
    boards: list[BoardBreadth] = Field(default_factory=list, description="breadth per board")


class Alert(_Record):
    """A quote alert (Avro ``io.hqstream.v1.Alert``)."""

    code: str
    name: str
    market: str
    kind: AlertKind
    exchange_ts: int
    price: float
    change_pct: float
    value: float
    message: str


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code, e.g. bad_code, not_found")
    message: str


class QuotesResponse(BaseModel):
    quotes: list[Quote]
    missing: list[str] = Field(description="requested codes with no quote")


class RankItem(BaseModel):
    rank: int
    code: str
    value: float = Field(description="the metric's value")
    name: str | None = None
    price: float | None = None
    change_pct: float | None = None


class RankResponse(BaseModel):
    market: MarketOrAll
    metric: RankMetric
    order: Literal["asc", "desc"]
    items: list[RankItem]


class CandlesResponse(BaseModel):
    code: str
    date: str
    candles: list[Candle]


class BarsResponse(BaseModel):
    code: str
    tf: str
    date: str = Field(description="the trade date of the intraday bars (1d: of the newest)")
    candles: list[Candle]


class TicksResponse(BaseModel):
    code: str
    ticks: list[Quote]


class AlertsResponse(BaseModel):
    alerts: list[Alert]


class PushState(BaseModel):
    pushing: bool = Field(description="whether updates are pushed to WebSocket clients")


class ComponentStatus(BaseModel):
    ok: bool
    detail: str = ""
    data: dict[str, float | int | str | bool | None] = Field(default_factory=dict)


class RebuildState(BaseModel):
    progress: float = Field(description="0..1, the slowest rebuilding worker's")
    started: int = Field(description="epoch ms when the first worker started rebuilding")
    workers: int = Field(description="stream workers rebuilding")


class StatusResponse(BaseModel):
    ok: bool = Field(description="every component healthy")
    rebuilding: RebuildState | None = Field(
        None,
        description="set while stream workers rebuild the Redis state from Kafka (REST answers "
        "503 with Retry-After meanwhile; docs/architecture.md, 'Cold start')",
    )
    pushing: bool
    websocket_clients: int
    components: dict[str, ComponentStatus]
    feeds: dict[str, ComponentStatus] = Field(
        default_factory=dict,
        description="each vendor feed's receiver (HQ_FEEDS; `default` when there is one feed)",
    )


class Health(BaseModel):
    status: Literal["ok", "not_ready"]
    checks: dict[str, bool] = Field(default_factory=dict)
