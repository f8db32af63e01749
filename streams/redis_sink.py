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
arguments. The result equals one newer-wins write per quote in batch order.

On a Redis Cluster (``HQ_REDIS_URL=redis+cluster://...``, see
:mod:`hqcore.redis_client`) each master gets its share of the batch in
script calls of ~``chunk_ticks`` quotes that touch the keys of all its slots
(``allow-cross-slot-keys``, :data:`streams.redis_lua.CLUSTER_SCRIPTS`), over
a pipeline of its own ending with a WAIT for a replica, all masters at once
(:mod:`streams.cluster_pipeline`); the calls return which stocks to rank,
and one more call per master ranks them (ZADD/SADD). Newer-wins holds
per stock exactly as on one server (the same script per stock); a ranking is
written after its quote instead of in the same script, so it may lag the
quote by one round trip.

Errors (Redis down, a master failing over) propagate to the caller, which
retries the whole batch: this module never sleeps, never swallows an error
(but :meth:`RedisSink.answers`, a probe) and never drops data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import orjson
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException, ResponseError

from hqcore.redis_client import AnyAsyncRedis, async_client, is_cluster_url, parse_cluster_url
from schemas import redis_keys as rk
from schemas.bar_series import Bar
from schemas.exchange import MARKETS, MARKETS_AND_ALL
from schemas.records import Quote
from streams.alerts import Alert
from streams.arbitration import Winner
from streams.candles import Candle
from streams.cluster_pipeline import Command, NodePipelines, non_local_key
from streams.market_stats import PARTIAL_JSON, PartialState, PartialStateError
from streams.redis_lua import (
    CLUSTER_SCRIPTS,
    SCRIPTS,
    QuoteRow,
    ScriptCall,
    alert_call,
    bars_call,
    bars_node_calls,
    candle_call,
    candle_node_calls,
    history_calls,
    quote_chunks_path,
    quote_node_chunks,
    rank_node_calls,
)

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class SinkBatch:
    """What one processed batch writes to Redis."""

    quotes: list[tuple[Quote, int]]  # (quote, source partition), in order
    candles: list[Bar]  # closed bars of every timeframe (Avro Candle records)
    alerts: list[Alert]
    data: list[bytes] | None = None  # each quote's JSON (orjson), when already encoded
    bars: dict[str, dict[str, bytes]] | None = None  # code -> stored bar series by timeframe
    #: the open 1-minute candles (written after the closed ones, which they never overwrite)
    open_candles: list[Candle] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to write (a batch of Kafka outputs only)."""
        return not (self.quotes or self.candles or self.alerts or self.bars or self.open_candles)


class StoredPartial(msgspec.Struct, frozen=True):
    """A worker's partial as ``hq:stats:partials`` holds it, with when it was written."""

    ts: int
    state: PartialState


_PARTIAL_DECODER: Final = msgspec.json.Decoder(StoredPartial)


@dataclass(frozen=True, slots=True)
class WriteResult:
    won: int
    same: int
    stale: int
    alerts_new: int


class RedisSink:
    """Batched, idempotent writer over one ``redis.asyncio`` client."""

    def __init__(
        self,
        client: AnyAsyncRedis,
        *,
        chunk_ticks: int = 1000,
        replica_wait_ms: int = 500,
        node_options: dict[str, Any] | None = None,
        native: bool = True,
    ) -> None:
        """``native``: the quote script's arguments compiled when hqstream_native is
        installed (:func:`streams.redis_lua.quote_chunks_path`)."""
        self.client = client
        self.chunk_ticks = chunk_ticks  # ticks per script call: bounds how long Redis is busy
        self.replica_wait_ms = replica_wait_ms  # cluster: WAIT this long for a replica's ack
        #: on a Redis Cluster: the batch's script calls, by master (None: one server)
        self.nodes = (
            NodePipelines(client, node_options or {})
            if isinstance(client, aioredis.RedisCluster)
            else None
        )
        self._sha: dict[str, str] = {}
        self._unreplicated = False
        self._quote_chunks = quote_chunks_path(native)

    @property
    def cluster(self) -> bool:
        return self.nodes is not None

    @classmethod
    def from_url(
        cls, url: str, *, chunk_ticks: int = 1000, replica_wait_ms: int = 500, native: bool = True
    ) -> RedisSink:
        """A sink on ``url``: one server or a Redis Cluster (``redis+cluster://``)."""
        timeouts = {"socket_timeout": 5, "socket_connect_timeout": 3}
        client = async_client(url, **timeouts)
        node_options = (
            {**parse_cluster_url(url).options(), **timeouts} if is_cluster_url(url) else {}
        )
        return cls(
            client, chunk_ticks=chunk_ticks, replica_wait_ms=replica_wait_ms,
            node_options=node_options, native=native,
        )  # fmt: skip

    async def close(self) -> None:
        if self.nodes is not None:
            await self.nodes.aclose()
        await self.client.aclose()

    async def answers(self, timeout_s: float) -> bool:
        """Whether Redis answers a PING within ``timeout_s`` (any error: no). Never raises."""
        try:
            return bool(await asyncio.wait_for(self.client.ping(), timeout_s))
        except Exception:
            return False

    async def load_scripts(self) -> None:
        """SCRIPT LOAD the Lua scripts (on every master of a cluster; again after a
        restart or a failover left a master without them)."""
        loaded = {}  # then all at once: a write running meanwhile sees none or all of them
        for name, body in (SCRIPTS if self.nodes is None else CLUSTER_SCRIPTS).items():
            loaded[name] = str(await self.client.script_load(body))
        self._sha = loaded

    async def write(self, batch: SinkBatch) -> WriteResult:
        """Write one batch; raises on any Redis error (the caller retries it all)."""
        if not self._sha:
            await self.load_scripts()
        write = self._write if self.nodes is None else self._write_cluster
        try:
            return await write(batch)
        except NoScriptError:
            logger.warning("redis lost the Lua scripts (restarted?); loading them again")
            await self.load_scripts()
            return await write(batch)

    async def _write(self, batch: SinkBatch) -> WriteResult:
        """One pipeline: alerts, candles, bars, then the quotes in chunks (one script call each).

        Alerts and candles go first: when a tick is in Redis, its derived
        records are too (a replay skips ticks already present).
        """
        pipe: Any = self.client.pipeline(transaction=False)
        derived = self._derived_commands(
            batch,
            [candle_call(batch.candles, batch.open_candles)],
            [bars_call(batch.bars)] if batch.bars else [],
        )
        for _, command in derived:
            pipe.execute_command(*command)
        for keys, argv in self._quote_chunks(batch.quotes, _quote_data(batch), self.chunk_ticks):
            pipe.execute_command("EVALSHA", self._sha["quotes"], len(keys), *keys, *argv)
        results = _raise_first_error(await pipe.execute(raise_on_error=False))
        return _write_result(batch, results, results[len(derived) :])

    async def _write_cluster(self, batch: SinkBatch) -> WriteResult:
        """Redis Cluster: per master, its share of the batch in ~``chunk_ticks`` script
        calls over a pipeline of its own ending with a WAIT for its replica, all
        masters at once; then the rankings."""
        nodes = self.nodes
        assert nodes is not None
        await nodes.learn_slots()
        candle_calls = (
            candle_node_calls(batch.candles, batch.open_candles, nodes.node_of)
            if batch.candles or batch.open_candles
            else []
        )
        bar_calls = bars_node_calls(batch.bars, nodes.node_of) if batch.bars else []
        commands = [
            (key_slot(key.encode()), command)
            for key, command in self._derived_commands(batch, candle_calls, bar_calls)
        ]
        n_derived = len(commands)
        quote_calls = quote_node_chunks(
            batch.quotes, _quote_data(batch), self.chunk_ticks, nodes.node_of
        )
        for (keys, argv), _ in quote_calls:
            command = ("EVALSHA", self._sha["quotes"], len(keys), *keys, *argv)
            commands.append((key_slot(keys[0].encode()), command))
        results, acks = await nodes.execute(commands, self.replica_wait_ms)
        _raise_first_error(results)
        self._note_replication(acks)
        quote_results = results[n_derived:]
        to_rank = [
            (header[abs(int(i)) - 1], int(i) < 0)
            for (_, header), res in zip(quote_calls, quote_results, strict=True)
            for i in res[3:]
        ]
        await self._rank(to_rank)
        return _write_result(batch, results, quote_results)

    def _derived_commands(
        self, batch: SinkBatch, candle_calls: list[ScriptCall], bar_calls: list[ScriptCall]
    ) -> list[tuple[str, Command]]:
        """(a key, the command) of the batch's alerts, candles and bars, in that order."""
        commands: list[tuple[str, Command]] = []
        if batch.alerts:
            keys, argv = alert_call(batch.alerts, cluster=self.cluster)
            commands.append((keys[0], ("EVALSHA", self._sha["alerts"], len(keys), *keys, *argv)))
        for keys, argv in candle_calls if batch.candles or batch.open_candles else []:
            commands.append((keys[0], ("EVALSHA", self._sha["candles"], len(keys), *keys, *argv)))
        for keys, argv in bar_calls:
            if keys:  # (a stock without a series stores nothing)
                commands.append((keys[0], ("EVALSHA", self._sha["bars"], len(keys), *keys, *argv)))
        return commands

    def _note_replication(self, replicas_acked: list[int]) -> None:
        """Warn once when a written master had no replica's ack within the wait (and when
        every one has again)."""
        unreplicated = sum(1 for acked in replicas_acked if acked < 1)
        if unreplicated and not self._unreplicated:
            logger.warning("%d redis master(s) wrote without a replica's ack within %d ms "
                           "(a replica down or behind); writing on", unreplicated,
                           self.replica_wait_ms)  # fmt: skip
        elif self._unreplicated and not unreplicated and replicas_acked:
            logger.warning("every written redis master has a replica again")
        if replicas_acked:
            self._unreplicated = bool(unreplicated)

    async def _rank(self, rows: list[tuple[QuoteRow, bool]]) -> None:
        """Redis Cluster: rank the stocks the quote scripts asked for (a call per master)."""
        nodes = self.nodes
        if not rows or nodes is None:
            return
        commands = [
            (key_slot(keys[0].encode()), ("EVALSHA", self._sha["ranks"], len(keys), *keys, *argv))
            for keys, argv in rank_node_calls(rows, nodes.node_of)
        ]
        results, _ = await nodes.execute(commands)
        _raise_first_error(results)

    # -- market statistics -------------------------------------------------

    async def write_market(self, stats: dict[str, dict[str, Any]], now_ms: int) -> None:
        """Write the merged statistics of each market (SH, SZ, BJ, ALL)."""
        pipe = self.client.pipeline(transaction=False)
        for market, record in stats.items():
            key = rk.market_summary(market)  # type: ignore[arg-type]
            pipe.hset(key, mapping={"data": orjson.dumps(record), "ts": now_ms})
            pipe.expire(key, rk.MARKET_TTL_S)
        await pipe.execute()

    async def write_partial(self, worker_id: str, state: PartialState, now_ms: int) -> None:
        payload = PARTIAL_JSON.encode(StoredPartial(now_ms, state))
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(rk.STATS_PARTIALS, worker_id, payload)
        pipe.expire(rk.STATS_PARTIALS, rk.MARKET_TTL_S)
        await pipe.execute()

    async def read_partials(self) -> dict[str, tuple[int, PartialState]]:
        """Every worker's stored partial and when it was written (PartialStateError: one
        that is not a partial of this shape)."""
        client: Any = self.client
        raw = await client.hgetall(rk.STATS_PARTIALS)
        out: dict[str, tuple[int, PartialState]] = {}
        for wid, payload in raw.items():
            try:
                stored = _PARTIAL_DECODER.decode(payload)
            except msgspec.ValidationError as exc:
                raise PartialStateError(f"stats partial of {wid.decode()!r}: {exc}") from exc
            out[wid.decode()] = (stored.ts, stored.state)
        return out

    async def delete_partials(self, worker_ids: Sequence[str]) -> None:
        if worker_ids:
            await self.client.hdel(rk.STATS_PARTIALS, *worker_ids)

    # -- state recovery ----------------------------------------------------

    async def latest_quotes(self) -> list[tuple[Quote, int]]:
        """Every stored latest quote with the raw partition it came from."""
        pipe: Any = self.client.pipeline(transaction=False)
        for market in MARKETS:
            pipe.smembers(rk.codes(market))
        codes = sorted({c.decode() for members in await pipe.execute() for c in members})
        out: list[tuple[Quote, int]] = []
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
        # a cluster: one call per code (its ticks stream is one slot)
        calls = history_calls(ticks, 1 if self.cluster else self.chunk_ticks)
        try:
            return await self._history(calls)
        except NoScriptError:
            await self.load_scripts()
            return await self._history(calls)

    async def _history(self, calls: list[tuple[list[str], list[Any]]]) -> int:
        commands = [
            ("EVALSHA", self._sha["history"], len(keys), *keys, *argv) for keys, argv in calls
        ]
        if self.nodes is not None:  # a cluster pipeline refuses EVALSHA: per master instead
            slots = [key_slot(keys[0].encode()) for keys, _ in calls]
            results, _ = await self.nodes.execute(list(zip(slots, commands, strict=True)))
            _raise_first_error(results)
            return sum(int(n) for n in results)
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
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

    async def write_closed_bars(
        self, hashes: dict[str, dict[str, bytes]], ttl_s: int, new: Collection[str]
    ) -> int:
        """Closed bars (the rebuild's): hash -> minute -> the bar's JSON; returns how many.

        What CANDLES_LUA does for closed bars (a closed bar replaces whatever
        the minute holds) with one HSET per hash instead of two commands per
        bar, and an EXPIRE of the ``new`` hashes only: those the caller had
        not written yet (a later HSET keeps the TTL).
        """
        pipe: Any = self.client.pipeline(transaction=False)
        for key, fields in hashes.items():
            pipe.hset(key, mapping=fields)
            if key in new:
                pipe.expire(key, ttl_s)
        await pipe.execute()
        return sum(map(len, hashes.values()))

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


def _quote_data(batch: SinkBatch) -> list[bytes]:
    return batch.data if batch.data is not None else [orjson.dumps(q) for q, _ in batch.quotes]


def _write_result(batch: SinkBatch, results: list[Any], quote_results: list[Any]) -> WriteResult:
    """The batch's counts from its script answers (the alerts' come first)."""
    return WriteResult(
        won=sum(int(res[0]) for res in quote_results),
        same=sum(int(res[1]) for res in quote_results),
        stale=sum(int(res[2]) for res in quote_results),
        alerts_new=int(results[0]) if batch.alerts else 0,
    )


def _raise_first_error(results: list[Any]) -> list[Any]:
    for res in results:
        if isinstance(res, Exception):
            raise res
    return results


def is_redis_error(exc: BaseException) -> bool:
    """Errors that mean "Redis is unavailable": retry, never skip.

    On a cluster also a failover under way: the slot's master is down or not
    yet replaced (CLUSTERDOWN, TRYAGAIN, a slot no node serves, a topology
    the client cannot refresh yet), or a slot moved (MOVED, ASK, a script's
    non local key).
    """
    from redis.exceptions import AskError, ClusterError, SlotNotCoveredError, TryAgainError
    from redis.exceptions import ConnectionError as RConnectionError
    from redis.exceptions import TimeoutError as RTimeoutError

    busy = isinstance(exc, ResponseError) and (
        "LOADING" in str(exc) or "BUSY" in str(exc) or "NOSCRIPT" in str(exc)
    )
    failing_over = (
        isinstance(exc, ClusterError | TryAgainError | SlotNotCoveredError | AskError)
        or non_local_key(exc)
        or (isinstance(exc, RedisClusterException) and "connect" in str(exc))
    )
    return isinstance(exc, RConnectionError | RTimeoutError | OSError) or busy or failing_over
