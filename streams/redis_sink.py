"""Materialize quotes, ticks, rankings, candles, alerts and market stats into Redis.

Key layout: :mod:`schemas.redis_keys`. Every write is idempotent and
newer-wins, so at-least-once replay (a restart, a rebalance, a rebuild over
live data) can never move Redis backwards:

* a quote is written (Lua, loaded once, called with EVALSHA) only when its
  ``exchange_ts`` is newer than the stored ``ts``; the same script appends the
  tick with the explicit id ``<exchange_ts>-0`` so a tick is never added
  twice. Each tick counts as won (newer: written), same (same ts: already
  stored) or stale (older: ignored); rankings follow a stock's newest tick
  unless it is stale.
* an open candle never overwrites a closed one of the same minute;
* an alert is appended only when its id (code|kind|exchange_ts) is new.

One batch = ONE pipelined round trip: one script call for the alerts, one for
the candles, one per ~``chunk_ticks`` quotes (grouped by code, rankings
included); see :mod:`streams.redis_lua` for the scripts and their compact
arguments (and why they need a standalone Redis, not a Cluster). The result
equals one newer-wins write per quote in batch order. Errors (Redis down)
propagate to the caller, which retries the whole batch: this module never
sleeps, never swallows an error and never drops data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from schemas import redis_keys as rk
from schemas.exchange import MARKETS, MARKETS_AND_ALL
from streams.arbitration import Winner
from streams.redis_lua import SCRIPTS, alert_call, candle_call, history_calls, quote_chunks

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class SinkBatch:
    """What one processed batch writes to Redis."""

    quotes: list[tuple[dict[str, Any], int]]  # (quote, source partition), in order
    candles: list[dict[str, Any]]  # closed ones and current open ones
    alerts: list[dict[str, Any]]
    data: list[bytes] | None = None  # each quote's JSON (orjson), when already encoded
    bars: dict[str, dict[str, bytes]] | None = None  # code -> stored bar series by timeframe


@dataclass(frozen=True, slots=True)
class WriteResult:
    won: int
    same: int
    stale: int
    alerts_new: int


class RedisSink:
    """Batched, idempotent writer over one ``redis.asyncio`` client."""

    def __init__(self, client: aioredis.Redis, *, chunk_ticks: int = 1000) -> None:
        self.client = client
        self.chunk_ticks = chunk_ticks  # ticks per script call: bounds how long Redis is busy
        self._sha: dict[str, str] = {}

    @classmethod
    def from_url(cls, url: str, *, chunk_ticks: int = 1000) -> RedisSink:
        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
        return cls(client, chunk_ticks=chunk_ticks)

    async def close(self) -> None:
        await self.client.aclose()

    async def load_scripts(self) -> None:
        """SCRIPT LOAD the Lua scripts (again after a Redis restart flushed them)."""
        for name, body in SCRIPTS.items():
            self._sha[name] = str(await self.client.script_load(body))

    async def write(self, batch: SinkBatch) -> WriteResult:
        """Write one batch; raises on any Redis error (the caller retries it all)."""
        if not self._sha:
            await self.load_scripts()
        try:
            return await self._write(batch)
        except NoScriptError:
            logger.warning("redis lost the Lua scripts (restarted?); loading them again")
            await self.load_scripts()
            return await self._write(batch)

    async def _write(self, batch: SinkBatch) -> WriteResult:
        """One pipeline: alerts, candles, then the quotes in chunks (one script call each).

        Alerts and candles go first: when a tick is in Redis, its derived
        records are too (a replay skips ticks already present).
        """
        pipe = self.client.pipeline(transaction=False)
        sha = self._sha
        if batch.alerts:
            keys, argv = alert_call(batch.alerts)
            pipe.evalsha(sha["alerts"], len(keys), *keys, *argv)
        if batch.candles:
            keys, argv = candle_call(batch.candles)
            pipe.evalsha(sha["candles"], len(keys), *keys, *argv)
        for code, series in (batch.bars or {}).items():
            pipe.hset(rk.bars(code), mapping=series)  # type: ignore[arg-type]
            pipe.expire(rk.bars(code), rk.BARS_TTL_S)
        n_bars = 2 * len(batch.bars or ())
        data = batch.data if batch.data is not None else [orjson.dumps(q) for q, _ in batch.quotes]
        for keys, argv in quote_chunks(batch.quotes, data, self.chunk_ticks):
            pipe.evalsha(sha["quotes"], len(keys), *keys, *argv)
        results = await pipe.execute(raise_on_error=False)
        for res in results:
            if isinstance(res, Exception):
                raise res
        alerts_new = int(results[0]) if batch.alerts else 0
        won = same = stale = 0
        for res in results[bool(batch.alerts) + bool(batch.candles) + n_bars :]:
            won += int(res[0])
            same += int(res[1])
            stale += int(res[2])
        return WriteResult(won, same, stale, alerts_new)

    # -- market statistics -------------------------------------------------

    async def write_market(self, stats: dict[str, dict[str, Any]], now_ms: int) -> None:
        """Write the merged statistics of each market (SH, SZ, BJ, ALL)."""
        pipe = self.client.pipeline(transaction=False)
        for market, record in stats.items():
            key = rk.market_summary(market)  # type: ignore[arg-type]
            pipe.hset(key, mapping={"data": orjson.dumps(record), "ts": now_ms})
            pipe.expire(key, rk.MARKET_TTL_S)
        await pipe.execute()

    async def write_partial(self, worker_id: str, state: dict[str, Any], now_ms: int) -> None:
        payload = orjson.dumps({"ts": now_ms, "state": state})
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(rk.STATS_PARTIALS, worker_id, payload)
        pipe.expire(rk.STATS_PARTIALS, rk.MARKET_TTL_S)
        await pipe.execute()

    async def read_partials(self) -> dict[str, tuple[int, dict[str, Any]]]:
        client: Any = self.client
        raw = await client.hgetall(rk.STATS_PARTIALS)
        out: dict[str, tuple[int, dict[str, Any]]] = {}
        for wid, payload in raw.items():
            obj = orjson.loads(payload)
            out[wid.decode()] = (int(obj["ts"]), obj["state"])
        return out

    async def delete_partials(self, worker_ids: Sequence[str]) -> None:
        if worker_ids:
            await self.client.hdel(rk.STATS_PARTIALS, *worker_ids)

    # -- state recovery ----------------------------------------------------

    async def latest_quotes(self) -> list[tuple[dict[str, Any], int]]:
        """Every stored latest quote with the raw partition it came from."""
        pipe: Any = self.client.pipeline(transaction=False)
        for market in MARKETS:
            pipe.smembers(rk.codes(market))
        codes = sorted({c.decode() for members in await pipe.execute() for c in members})
        out: list[tuple[dict[str, Any], int]] = []
        for start in range(0, len(codes), 1000):
            pipe = self.client.pipeline(transaction=False)
            for code in codes[start : start + 1000]:
                pipe.hmget(rk.quote(code), "data", "partition")
            for data, partition in await pipe.execute():
                if data is not None:
                    out.append((orjson.loads(data), int(partition or -1)))
        return out

    async def write_feed_winners(self, changes: dict[int, dict[str, Winner]]) -> None:
        """Store the arbitration winners of processed, acknowledged batches."""
        pipe: Any = self.client.pipeline(transaction=False)
        for partition, winners in changes.items():
            key = rk.feed_winners(partition)
            pipe.hset(key, mapping={code: orjson.dumps(w) for code, w in winners.items()})
            pipe.expire(key, rk.QUOTE_TTL_S)
        await pipe.execute()

    async def feed_winners(self, partitions: Sequence[int]) -> dict[int, dict[str, Winner]]:
        """The stored arbitration winners of ``partitions``."""
        pipe: Any = self.client.pipeline(transaction=False)
        for partition in partitions:
            pipe.hgetall(rk.feed_winners(partition))
        out: dict[int, dict[str, Winner]] = {}
        for partition, stored in zip(partitions, await pipe.execute(), strict=True):
            winners: dict[str, Winner] = {}
            for code, blob in stored.items():
                unit, source, price, volume, seen = orjson.loads(blob)
                winners[code.decode()] = (int(unit), str(source), float(price), int(volume),
                                          int(seen))  # fmt: skip
            out[partition] = winners
        return out

    async def recent_ticks(
        self, codes: Sequence[str], window_ms: int
    ) -> dict[str, list[dict[str, Any]]]:
        """Per code, the ticks of the last ``window_ms`` (exchange time) before its newest."""
        out: dict[str, list[dict[str, Any]]] = {}
        if not codes:
            return out
        pipe: Any = self.client.pipeline(transaction=False)
        for code in codes:
            pipe.hget(rk.quote(code), "ts")
        latest = await pipe.execute()
        present = [(c, int(ts)) for c, ts in zip(codes, latest, strict=True) if ts is not None]
        pipe = self.client.pipeline(transaction=False)
        for code, ts in present:
            pipe.xrange(rk.ticks(code), min=f"{max(0, ts - window_ms)}-0", max="+")
        for (code, _), entries in zip(present, await pipe.execute(), strict=True):
            out[code] = [orjson.loads(fields[b"data"]) for _, fields in entries]
        return out

    async def stored_bars(self, codes: Sequence[str]) -> dict[str, dict[str, bytes]]:
        """Per code, its stored bar series (``hq:bars:{code}``: timeframe -> JSON)."""
        pipe: Any = self.client.pipeline(transaction=False)
        for code in codes:
            pipe.hgetall(rk.bars(code))
        found = await pipe.execute()
        return {
            code: {k.decode(): v for k, v in stored.items()}
            for code, stored in zip(codes, found, strict=True)
            if stored
        }

    # -- rebuild -----------------------------------------------------------

    async def write_history(self, ticks: dict[str, list[tuple[int, bytes]]]) -> int:
        """Append older ticks to the ticks streams (HISTORY_LUA); returns how many were added."""
        if not self._sha:
            await self.load_scripts()
        calls = history_calls(ticks, self.chunk_ticks)
        try:
            return await self._history(calls)
        except NoScriptError:
            await self.load_scripts()
            return await self._history(calls)

    async def _history(self, calls: list[tuple[list[str], list[Any]]]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for keys, argv in calls:
            pipe.evalsha(self._sha["history"], len(keys), *keys, *argv)
        return sum(int(n) for n in await pipe.execute())

    async def state_missing(self, partitions: set[int]) -> tuple[set[int], bool]:
        """The partitions whose state marker is missing, and whether the market's is."""
        ordered = sorted(partitions)
        fields = [rk.state_partition(p) for p in ordered] + [rk.STATE_MARKET]
        client: Any = self.client
        values = await client.hmget(rk.STATE_READY, fields)
        missing = {p for p, v in zip(ordered, values, strict=False) if v is None}
        return missing, values[-1] is None

    async def mark_state(self, partitions: set[int], market: bool, now_ms: int) -> None:
        """Write the state markers of ``partitions`` (and of the market)."""
        fields: dict[str, int] = {rk.state_partition(p): now_ms for p in partitions}
        if market:
            fields[rk.STATE_MARKET] = now_ms
        if fields:
            await self.client.hset(rk.STATE_READY, mapping=fields)  # type: ignore[arg-type]

    async def write_closed_bars(self, bars: list[dict[str, Any]]) -> int:
        """Closed bars (the rebuild's), one HSET and EXPIRE per hash; returns how many.

        What CANDLES_LUA does for closed bars (a closed bar replaces whatever
        the minute holds) in a few commands per stock instead of two per bar.
        """
        by_key: dict[str, dict[str, bytes]] = {}
        ttl: dict[str, int] = {}
        dumps = orjson.dumps
        for bar in bars:
            tf = bar.get("tf", "1m")
            key = rk.candles(bar["code"], bar["trade_date"], tf)
            fields = by_key.get(key)
            if fields is None:
                fields = by_key[key] = {}
                ttl[key] = rk.candles_ttl_s(tf)
            fields[str(bar["minute_ts"])] = dumps(bar)
        pipe: Any = self.client.pipeline(transaction=False)
        for key, fields in by_key.items():
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl[key])
        await pipe.execute()
        return len(bars)

    async def announce_rebuild(
        self, worker: str, progress: float, started_ms: int, now_ms: int
    ) -> None:
        """Say (for the gateway) that ``worker`` is rebuilding, and how far it is."""
        entry = orjson.dumps({"progress": round(progress, 4), "started": started_ms, "at": now_ms})
        pipe: Any = self.client.pipeline(transaction=False)
        pipe.hset(rk.STATE_REBUILDING, worker, entry)
        pipe.expire(rk.STATE_REBUILDING, rk.REBUILDING_TTL_S)
        await pipe.execute()

    async def end_rebuild(self, worker: str) -> None:
        await self.client.hdel(rk.STATE_REBUILDING, worker)

    async def markets_missing(self) -> list[str]:
        """The market summaries (SH, SZ, BJ, ALL) Redis does not hold."""
        pipe = self.client.pipeline(transaction=False)
        for market in MARKETS_AND_ALL:
            pipe.exists(rk.market_summary(market))
        found = await pipe.execute()
        return [m for m, n in zip(MARKETS_AND_ALL, found, strict=True) if not n]

    async def hq_key_count(self) -> int:
        count = 0
        async for _ in self.client.scan_iter(match="hq:*", count=1000):
            count += 1
        return count

    async def flush_hq(self) -> int:
        """Delete every ``hq:*`` key (and nothing else); returns how many."""
        deleted = 0
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match="hq:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(await self.client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(await self.client.delete(*batch))
        return deleted


def is_redis_error(exc: BaseException) -> bool:
    """Errors that mean "Redis is unavailable": retry, never skip."""
    from redis.exceptions import ConnectionError as RConnectionError
    from redis.exceptions import TimeoutError as RTimeoutError

    busy = isinstance(exc, ResponseError) and (
        "LOADING" in str(exc) or "BUSY" in str(exc) or "NOSCRIPT" in str(exc)
    )
    return isinstance(exc, RConnectionError | RTimeoutError | OSError) or busy
