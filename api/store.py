"""Read-only access to the Redis layout of schemas.redis_keys (redis.asyncio).

Returns JSON bytes/str as stored, or small decoded structures; the REST layer
validates them into models. This module never writes to Redis.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

from api.models import RebuildState
from api.ws_session import QuoteEvent
from hqcore.redis_client import async_client, is_cluster_url, with_fast_packing
from schemas import redis_keys as keys
from schemas.bar_series import StoredSeries
from schemas.exchange import MARKETS, MarketOrAll, today_in_shanghai
from schemas.redis_keys import RankMetric
from schemas.timeframes import Timeframe

MAX_CONNECTIONS = 32
#: per node of a Redis Cluster, whose pools fail (MaxConnectionsError) instead of waiting
MAX_CONNECTIONS_PER_CLUSTER_NODE = 256


class Store:
    """The gateway's Redis reads (one server, or a Redis Cluster: ``redis+cluster://``)."""

    def __init__(self, url: str) -> None:
        self.redis: Any
        if is_cluster_url(url):
            self.redis = async_client(
                url,
                max_connections=MAX_CONNECTIONS_PER_CLUSTER_NODE,
                socket_timeout=5,
                socket_connect_timeout=3,
                health_check_interval=30,
            )
            return
        # Blocking pool: a burst of subscribes waits for a connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=3,
            health_check_interval=30,
        )
        self.redis = with_fast_packing(aioredis.Redis(connection_pool=pool))

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def rebuild_state(self, now_ms: int) -> RebuildState | None:
        """How far the stream workers' rebuild of the Redis state is; None when none runs.

        The live entries of ``hq:state:rebuilding`` (refreshed within
        REBUILDING_TTL_S): the slowest worker's progress, the earliest start.
        """
        entries = await self.redis.hvals(keys.STATE_REBUILDING)
        live = [e for e in map(orjson.loads, entries)
                if now_ms - e["at"] <= keys.REBUILDING_TTL_S * 1000]  # fmt: skip
        if not live:
            return None
        return RebuildState(
            progress=min(e["progress"] for e in live),
            started=min(e["started"] for e in live),
            workers=len(live),
        )

    async def quote_events(self, codes: list[str]) -> list[QuoteEvent | None]:
        """The stored latest quote of each code (None when absent), pipelined."""
        if not codes:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for code in codes:
                pipe.hmget(keys.quote(code), "ts", "data")
            rows = await pipe.execute()
        out: list[QuoteEvent | None] = []
        for code, (ts, data) in zip(codes, rows, strict=True):
            if data is None:
                out.append(None)
                continue
            rec = orjson.loads(data)
            stamp = int(ts) if ts is not None else int(rec.get("exchange_ts", 0))
            out.append(QuoteEvent(code, str(rec.get("market", "")), stamp, bytes(data)))
        return out

    async def quote(self, code: str) -> dict[str, Any] | None:
        data = await self.redis.hget(keys.quote(code), "data")
        return None if data is None else _loads(data)

    async def trade_date(self, code: str) -> str:
        """The trade date of ``code``'s latest quote (the exchange's day, not the
        server's), or today in Shanghai when the stock has no quote yet."""
        data = await self.redis.hget(keys.quote(code), "data")
        if data is not None:
            day = _loads(data).get("trade_date")
            if isinstance(day, str) and day:
                return day
        return today_in_shanghai()

    async def market_codes(self, market: MarketOrAll) -> list[str]:
        markets = MARKETS if market == "ALL" else (market,)
        async with self.redis.pipeline(transaction=False) as pipe:
            for one in markets:  # one SMEMBERS per set: on a cluster they live in other slots
                pipe.smembers(keys.codes(one))
            found: list[Any] = await pipe.execute()
        members = set().union(*found)
        return sorted(map(_text, members))

    async def market_stats_raw(self, market: MarketOrAll) -> bytes | None:
        data: Any = await self.redis.hget(keys.market_summary(market), "data")
        return None if data is None else bytes(data)

    async def rank(
        self, market: MarketOrAll, metric: RankMetric, limit: int, descending: bool
    ) -> list[tuple[str, float]]:
        """The first ``limit`` (code, score) of a market's ranking, in Redis's order.

        ALL has no ZSET of its own (the workers would update six per tick
        instead of three): its first ``limit`` are among the first ``limit`` of
        each market, merged as one ZSET would order them (score, then code;
        both reversed when descending).
        """
        markets = MARKETS if market == "ALL" else (market,)
        async with self.redis.pipeline(transaction=False) as pipe:
            for one in markets:  # one ZRANGE per ZSET: on a cluster they live in other slots
                pipe.zrange(keys.rank(one, metric), 0, limit - 1, desc=descending, withscores=True)
            found: list[Any] = await pipe.execute()
        rows = [(_text(m), float(s)) for ranked in found for m, s in ranked]
        if len(markets) > 1:
            rows.sort(key=lambda row: (row[1], row[0]), reverse=descending)
        return rows[:limit]

    async def candles(self, code: str, trade_date: str) -> list[dict[str, Any]]:
        rows = await self.redis.hgetall(keys.candles(code, trade_date))
        return sorted((_loads(v) for v in rows.values()), key=lambda c: int(c["minute_ts"]))

    async def bar_parts(
        self, code: str, tf: Timeframe, trade_date: str
    ) -> tuple[list[bytes], StoredSeries | None, list[bytes]]:
        """What :func:`api.bars.compose` needs: the closed ``tf`` bars (by start), the
        stock's stored ``tf`` series and, for other timeframes than 1m, the day's minutes."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.candles(code, trade_date, tf))
            pipe.hmget(keys.bars(code), _series_fields([tf]))
            if tf != "1m":
                pipe.hgetall(keys.candles(code, trade_date))
            found: list[Any] = await pipe.execute()
        closed = [bytes(found[0][k]) for k in sorted(found[0], key=int)]
        minutes = [bytes(v) for v in found[2].values()] if tf != "1m" else []
        return closed, _series(*found[1]), minutes

    async def open_bar_parts(
        self, wanted: list[tuple[str, str, int | None, list[Timeframe]]]
    ) -> list[tuple[int | None, bytes | None, list[StoredSeries | None]]]:
        """What :func:`api.bars.open_bars` needs, for the push of open bars (api.open_bars).

        Per ``(code, trade_date, minute, timeframes)``, one pipeline for all: the
        stored quote's ``ts`` (read first), the 1-minute candle of ``minute``
        (None: no minute) and the stored series of each timeframe.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for code, trade_date, minute, tfs in wanted:
                pipe.hget(keys.quote(code), "ts")
                if minute is not None:
                    pipe.hget(keys.candles(code, trade_date), str(minute))
                pipe.hmget(keys.bars(code), _series_fields(tfs))
            found: list[Any] = await pipe.execute()
        out: list[tuple[int | None, bytes | None, list[StoredSeries | None]]] = []
        at = 0
        for _, _, minute, _ in wanted:
            ts = found[at]
            candle = found[at + 1] if minute is not None else None
            at += 2 if minute is not None else 1
            pairs = zip(found[at][::2], found[at][1::2], strict=True)
            series = [_series(whole, part) for whole, part in pairs]
            at += 1
            out.append((None if ts is None else int(ts), None if candle is None else bytes(candle),
                        series))  # fmt: skip
        return out

    async def ticks(self, code: str, start: int | None, end: int | None, limit: int) -> list[Any]:
        """Quotes with ``start <= exchange_ts <= end``, oldest first; the latest ``limit``."""
        lo = "-" if start is None else f"{start}-0"
        hi = "+" if end is None else f"{end}-18446744073709551615"
        rows: Any = await self.redis.xrevrange(keys.ticks(code), max=hi, min=lo, count=limit)
        return [_loads(fields[b"data"]) for _, fields in reversed(rows) if b"data" in fields]

    async def has_ticks(self, code: str) -> bool:
        return bool(await self.redis.exists(keys.ticks(code), keys.quote(code)))

    async def alerts(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` alerts, newest first."""
        rows: Any = await self.redis.xrevrange(keys.ALERTS, count=limit)
        return [_loads(fields[b"data"]) for _, fields in rows if b"data" in fields]


def _loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def _series_fields(tfs: list[Timeframe]) -> list[str]:
    """The fields of ``hq:bars:{code}`` holding the series of ``tfs`` (see _series)."""
    return [field for tf in tfs for field in (tf, keys.bars_open_field(tf))]


def _series(whole: bytes | None, part: bytes | None) -> StoredSeries | None:
    """A series as read from its two fields (None when it has no whole form)."""
    return None if whole is None else (bytes(whole), None if part is None else bytes(part))


def _text(member: bytes | str) -> str:
    """A ZSET's or SET's member as text (bytes from a client that does not decode)."""
    return member.decode() if isinstance(member, bytes) else str(member)
