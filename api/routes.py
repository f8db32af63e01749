"""REST endpoints under ``/api/realtime``: reads from Redis, validated at the edge.

Input problems raise :mod:`api.errors` exceptions (handlers turn them into
responses); nothing here builds an error response by hand or writes data.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request

from api import bars
from api.auth import require_admin, require_key
from api.errors import BadCode, BadRequest, NotFound, UnknownMarket, UnknownMetric
from api.hub import Hub
from api.models import (
    AlertsResponse,
    BarsResponse,
    CandlesResponse,
    ComponentStatus,
    ErrorBody,
    MarketStats,
    PushState,
    Quote,
    QuotesResponse,
    RankItem,
    RankResponse,
    StatusResponse,
    TicksResponse,
)
from api.rebuild_watch import RebuildWatch
from api.status import StatusProbe
from api.store import Store
from schemas.exchange import MARKETS_AND_ALL, MarketOrAll, is_stock_code
from schemas.redis_keys import RANK_METRICS, RankMetric

logger = logging.getLogger(__name__)

MAX_CODES = 500
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "API key missing or invalid"},
    503: {"model": ErrorBody, "description": "Redis unavailable, or being rebuilt (Retry-After)"},
    404: {"model": ErrorBody, "description": "unknown code / market / metric"},
    422: {"model": ErrorBody, "description": "bad input (e.g. code not 6 digits)"},
}

router = APIRouter(prefix="/api/realtime", dependencies=[Depends(require_key)], responses=ERRORS)


async def _store(request: Request) -> Store:
    """The Redis reads of a REST route: refused (503, Retry-After) while Redis is rebuilt."""
    watch: RebuildWatch = request.app.state.rebuild_watch
    await watch.refuse_while_rebuilding()
    store: Store = request.app.state.store
    return store


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


StoreDep = Annotated[Store, Depends(_store)]


def valid_code(code: str) -> str:
    if not is_stock_code(code):
        raise BadCode(f"stock code must be 6 digits, got {code[:20]!r}")
    return code


def _iso_date(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise BadRequest(f"date must be YYYY-MM-DD, got {text[:20]!r}") from None


def valid_market(market: str) -> MarketOrAll:
    upper = market.upper()
    for m in MARKETS_AND_ALL:
        if m == upper:
            return m
    raise UnknownMarket(f"unknown market {market[:20]!r}; valid: {', '.join(MARKETS_AND_ALL)}")


def valid_metric(metric: str) -> RankMetric:
    for m in RANK_METRICS:
        if m == metric:
            return m
    raise UnknownMetric(f"unknown metric {metric[:20]!r}; valid: {', '.join(RANK_METRICS)}")


@router.get("/status", response_model=StatusResponse, summary="Health of every component")
async def status(request: Request) -> StatusResponse:
    probe: StatusProbe = request.app.state.probe
    hub = _hub(request)
    feed = request.app.state.feed

    feeds = await probe.feeds()
    components = {
        "receiver": probe.any_feed(feeds),
        "streams": await probe.streams_lag(),
        "redis": await probe.redis(),
        "kafka": await probe.kafka(),
        "gateway_consumer": ComponentStatus(
            ok=bool(feed is not None and feed.ready),
            detail="consuming" if feed is not None and feed.ready else "not consuming",
            data={"routed": hub.routed, "last_event_at": hub.last_event_at},
        ),
    }
    watch: RebuildWatch = request.app.state.rebuild_watch
    try:
        rebuilding = await watch.state()
    except Exception:  # redis down: the redis component says so
        rebuilding = None
    return StatusResponse(
        ok=rebuilding is None and all(c.ok for c in components.values()),
        rebuilding=rebuilding,
        pushing=hub.pushing,
        websocket_clients=len(hub.sessions),
        components=components,
        feeds=feeds,
    )


@router.get("/stock/{code}", response_model=Quote, summary="Latest quote of one stock")
async def stock(code: str, store: StoreDep) -> Any:
    quote = await store.quote(valid_code(code))
    if quote is None:
        raise NotFound(f"no quote for stock {code}")
    return quote


@router.get("/quotes", response_model=QuotesResponse, summary="Latest quotes of many stocks")
async def quotes(
    store: StoreDep,
    codes: Annotated[str, Query(description="comma-separated 6-digit codes", min_length=6)],
) -> Any:
    wanted = list(dict.fromkeys(c.strip() for c in codes.split(",") if c.strip()))
    if len(wanted) > MAX_CODES:
        raise BadRequest(f"at most {MAX_CODES} codes per call")
    for code in wanted:
        valid_code(code)
    found = await store.quote_events(wanted)

    return {
        "quotes": [orjson.loads(ev.raw) for ev in found if ev is not None],
        "missing": [c for c, ev in zip(wanted, found, strict=True) if ev is None],
    }


@router.get(
    "/market/{market}/summary", response_model=MarketStats, summary="Statistics of a market"
)
async def market_summary(market: str, store: StoreDep) -> Any:
    m = valid_market(market)
    raw = await store.market_stats_raw(m)
    if raw is None:
        raise NotFound(f"no statistics for market {m} yet")

    return orjson.loads(raw)


@router.get(
    "/rank/{market}/{metric}", response_model=RankResponse, summary="Ranking of a market by metric"
)
async def rank(
    market: str,
    metric: str,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> Any:
    m, met = valid_market(market), valid_metric(metric)
    rows = await store.rank(m, met, limit, order == "desc")
    found = await store.quote_events([code for code, _ in rows])

    items = []
    for i, ((code, value), ev) in enumerate(zip(rows, found, strict=True), start=1):
        item = RankItem(rank=i, code=code, value=value)
        if ev is not None:
            q = orjson.loads(ev.raw)
            item.name, item.price, item.change_pct = q["name"], q["price"], q["change_pct"]
        items.append(item)
    return RankResponse(market=m, metric=met, order=order, items=items)


@router.get("/candles/{code}", response_model=CandlesResponse, summary="1-minute candles of a day")
async def candles(
    code: str,
    store: StoreDep,
    date: Annotated[
        str | None, Query(description="YYYY-MM-DD (default: the trade date of its latest quote)")
    ] = None,
) -> Any:
    valid_code(code)
    day = await store.trade_date(code) if date is None else _iso_date(date)
    rows = await store.candles(code, day)
    if not rows and not await store.has_ticks(code):
        raise NotFound(f"no data for stock {code}")
    return {"code": code, "date": day, "candles": rows}


@router.get(
    "/stock/{code}/candles",
    response_model=BarsResponse,
    summary="Bars of a timeframe with technical indicators",
)
async def stock_candles(
    code: str,
    store: StoreDep,
    tf: Annotated[str, Query(description="1m, 5m, 15m, 30m, 60m or 1d")] = "1m",
    indicators: Annotated[
        str | None,
        Query(
            description="comma-separated groups: ma, ema, macd, rsi, kdj, boll, vwap, atr; "
            "all (default) or none"
        ),
    ] = None,
    date: Annotated[
        str | None, Query(description="YYYY-MM-DD (default: the trade date of its latest quote)")
    ] = None,
    limit: Annotated[
        int, Query(ge=0, le=5000, description="the newest N bars (0: all; 1d default 250)")
    ] = 0,
) -> Any:
    """The closed bars of the day (daily: the newest days), then the open bar, whose
    indicator values are evaluated now and are final when it closes."""
    valid_code(code)
    frame, groups = bars.timeframe(tf), bars.indicator_groups(indicators)
    day = await store.trade_date(code) if date is None else _iso_date(date)
    closed, series, minutes = await store.bar_parts(code, frame, day)
    if frame == "1d" and limit == 0:
        limit = bars.DAILY_LIMIT
    rows = bars.compose(frame, closed, series, minutes, groups, limit)
    if not rows and not await store.has_ticks(code):
        raise NotFound(f"no data for stock {code}")
    return {"code": code, "tf": frame, "date": day, "candles": rows}


@router.get("/ticks/{code}", response_model=TicksResponse, summary="Recent ticks of a stock")
async def ticks(
    code: str,
    store: StoreDep,
    start: Annotated[int | None, Query(ge=0, description="exchange_ts from, epoch ms")] = None,
    end: Annotated[int | None, Query(ge=0, description="exchange_ts to, epoch ms")] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 100,
) -> Any:
    valid_code(code)
    if start is not None and end is not None and start > end:
        raise BadRequest("start must be <= end")
    rows = await store.ticks(code, start, end, limit)
    if not rows and not await store.has_ticks(code):
        raise NotFound(f"no data for stock {code}")
    return {"code": code, "ticks": rows}


@router.get("/alerts", response_model=AlertsResponse, summary="Recent alerts, newest first")
async def alerts(store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> Any:
    return {"alerts": await store.alerts(limit)}


@router.post(
    "/start",
    response_model=PushState,
    dependencies=[Depends(require_admin)],
    summary="Start pushing to WebSocket clients (admin)",
    responses={403: {"model": ErrorBody, "description": "not an admin key"}},
)
async def start(request: Request) -> PushState:
    hub = _hub(request)
    hub.pushing = True
    logger.info("push to WebSocket clients started")
    return PushState(pushing=True)


@router.post(
    "/stop",
    response_model=PushState,
    dependencies=[Depends(require_admin)],
    summary="Stop pushing to WebSocket clients (admin)",
    responses={403: {"model": ErrorBody, "description": "not an admin key"}},
)
async def stop(request: Request) -> PushState:
    hub = _hub(request)
    hub.pushing = False
    logger.info("push to WebSocket clients stopped")
    return PushState(pushing=False)
