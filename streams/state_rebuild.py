"""Rebuild the Redis state from the workers' own Kafka outputs: cost = the state, not the retention.

What Redis holds is what the workers wrote to Kafka, so a lost Redis is
restored without reparsing a raw line or producing anything:

1. **recent ticks**: the tail of ``hq.ticks.normalized`` from
   ``offsets_for_times(newest record's timestamp - rebuild_ticks_s)``, per
   partition, into each stock's ticks stream (``HISTORY_LUA``: ascending,
   merged with any newer tick a live batch wrote first);
2. **latest quotes**: the compacted ``hq.quotes.latest`` (one record per code
   after compaction, plus the not yet compacted head; only the last record of
   each key is decoded), merged with the tail's
   newest per code, written through the live sink's newer-wins ``QUOTES_LUA``
   (quote HASH, rankings, code sets), so a quote a live worker wrote meanwhile
   is never replaced by an older one;
3. **today's candles**: ``hq.candles.1m`` from the start of the newest record's
   (Shanghai) day, only the newest trade date read (closed candles never lose
   to open ones);
4. **market** (once, by whichever worker finds its marker missing): the last
   record of each market in ``hq.market.stats`` where Redis has none, and
   today's alerts (the newest ``ALERTS_MAXLEN``) from ``hq.alerts``.

Every topic is read at the same time, each by a consumer of its own
(:class:`streams.kafka_ranges.KafkaRanges`); only the quotes wait for two
reads (1 and 2). Then the markers (``hq:state:ready``) of the rebuilt
partitions and of the market are written: a worker that dies mid-rebuild leaves them missing and
the next owner of those partitions rebuilds them again (every write here is
idempotent). Used by the stream worker before its next batch when a marker
is missing (:class:`streams.runtime.StreamsRuntime`) and by
``hqstream streams --rebuild``. Never writes to Kafka; commits no offsets.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Message
from confluent_kafka.admin import OffsetSpec

from hqcore.kafka_client import close_within
from schemas import redis_keys as rk
from schemas.serde import Codec, make_codec
from schemas.timeframes import TIMEFRAMES, Timeframe
from streams import metrics
from streams.alerts import Alert
from streams.arbitration import Winner
from streams.bars import TimeframeBars
from streams.candles import CandleBuilder
from streams.kafka_ranges import KafkaRanges, OneInFlight, Ranges, shanghai_day_start_ms
from streams.redis_sink import RedisSink, SinkBatch
from streams.settings import StreamsSettings

logger = logging.getLogger(__name__)

#: ticks decoded before they are written to Redis (bounds the rebuild's memory)
HISTORY_FLUSH = 10_000
#: candles decoded before they are written (~20 MB of JSON): ~10 per hash and HSET
CANDLE_FLUSH = 50_000
#: seconds between two refreshes of the ``hq:state:rebuilding`` entry (its TTL is 10 s)
ANNOUNCE_EVERY_S = 1.0
#: records of hq.market.stats read back from its end (every market publishes each second)
STATS_TAIL = 64

Progress = Callable[[str, int, int], None]
"""``progress(phase, records read so far, records to read)``."""


@dataclass
class StateRebuildSummary:
    """What one rebuild restored."""

    partitions: set[int]
    market: bool
    records: dict[str, int] = field(default_factory=dict)  # read, per source topic
    stocks: int = 0
    ticks: int = 0
    candles: int = 0
    minutes_folded: int = 0  # 1-minute candles folded into bar series after their checkpoint
    seconds: float = 0.0

    def __str__(self) -> str:
        read = sum(self.records.values())
        return (
            f"state rebuilt in {self.seconds:.1f}s: {self.stocks} stocks, {self.ticks} ticks, "
            f"{self.candles} candles ({self.minutes_folded} folded into bar series) from {read} "
            f"records ({len(self.partitions)} partitions"
            f"{', market' if self.market else ''})"
        )


class StateRebuilder:
    """Restores the Redis state of some partitions (and of the market) from Kafka."""

    def __init__(self, settings: StreamsSettings, sink: RedisSink) -> None:
        self.settings = settings
        self.sink = sink
        names = settings.topic_names
        self.topics = names
        url = settings.schema_registry_url
        self.quote_codec: Codec = make_codec("quote", url, names.normalized)
        self.candle_codec: Codec = make_codec("candle", url, names.candles)
        self.bar_codecs: dict[str, Codec] = {
            tf: make_codec("candle", url, topic)
            for tf, topic in names.candles_by_tf.items()
            if tf != "1m"
        }
        self.alert_codec: Codec = make_codec("alert", url, names.alerts)
        self.stats_codec: Codec = make_codec("market_stats", url, names.market_stats)

    async def missing(self, partitions: set[int]) -> tuple[set[int], bool]:
        """Partitions (of ``partitions``) and market whose state marker is missing."""
        return await self.sink.state_missing(partitions)

    async def rebuild(
        self,
        partitions: set[int] | None,
        market: bool = True,
        progress: Progress | None = None,
    ) -> StateRebuildSummary:
        """Rebuild ``partitions`` (None: all) and, when ``market``, the market; then mark them."""
        started = time.perf_counter()
        metrics.REBUILD_RUNNING.set(1)
        metrics.REBUILD_PROGRESS.set(0)
        metrics.HEALTH.rebuilding = True
        kafka = await asyncio.to_thread(KafkaRanges, self.settings)
        run = _Run(self, kafka, progress)
        announcing = asyncio.create_task(self._announce(run))
        try:
            summary = await run.execute(partitions, market)
        finally:
            announcing.cancel()
            await asyncio.gather(announcing, return_exceptions=True)
            await close_within(kafka.close, "the rebuild's Kafka clients")
            metrics.REBUILD_RUNNING.set(0)
            metrics.HEALTH.rebuilding = False
        await self.sink.end_rebuild(self.settings.worker_id)
        summary.seconds = time.perf_counter() - started
        metrics.REBUILDS.inc()
        metrics.REBUILD_SECONDS.set(summary.seconds)
        metrics.REBUILD_PROGRESS.set(1)
        logger.info("%s", summary)
        return summary

    async def _announce(self, run: _Run) -> None:
        """Refresh this worker's ``hq:state:rebuilding`` entry every second (for the gateway).

        While Redis is unavailable it tries again each second and says so
        once: the rebuild's own writes fail too, and the worker starts it again.
        """
        started_ms = int(time.time() * 1000)
        failing = False
        while True:
            try:
                fraction = run.done / run.total if run.total else 0.0
                await self.sink.announce_rebuild(
                    self.settings.worker_id, min(1.0, fraction), started_ms, int(time.time() * 1000)
                )
                failing = False
            except Exception as exc:
                if not failing:
                    logger.warning("rebuild progress not written to redis (retrying): %r", exc)
                failing = True
            await asyncio.sleep(ANNOUNCE_EVERY_S)


async def all_or_none(parts: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run ``parts`` at once; the first to fail cancels the others, and its error is raised
    as it is (the worker tells a Redis or Kafka outage by the error's type)."""
    tasks = [asyncio.ensure_future(part) for part in parts]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def rebuild_redis(
    settings: StreamsSettings,
    partitions: set[int] | None = None,
    market: bool = True,
    progress: Progress | None = None,
) -> StateRebuildSummary:
    """A rebuild outside a worker (the command, the benchmark): its own sink, closed after."""
    sink = RedisSink.from_url(
        settings.redis_url, chunk_ticks=settings.redis_chunk_ticks, native=settings.native
    )
    try:
        return await StateRebuilder(settings, sink).rebuild(partitions, market, progress)
    finally:
        await sink.close()


class _Run:
    """One rebuild: plans the ranges to read (so progress has a total), reads, writes."""

    def __init__(self, owner: StateRebuilder, kafka: KafkaRanges, progress: Progress | None):
        self.owner = owner
        self.kafka = kafka
        self.sink = owner.sink
        self.topics = owner.topics
        self.progress = progress
        self.total = 0
        self.done = 0
        self.started = time.perf_counter()
        self.open_candles = CandleBuilder()  # the tail's ticks folded

    def _advance(self, phase: str, source: str) -> Callable[[int], None]:
        def advance(n: int) -> None:
            self.done += n
            metrics.REBUILD_RECORDS.labels(source).inc(n)
            if self.total:
                metrics.REBUILD_PROGRESS.set(min(1.0, self.done / self.total))
            if self.progress is not None:
                self.progress(phase, self.done, self.total)

        return advance

    def _plan(self, partitions: set[int] | None, market: bool) -> dict[str, Ranges]:
        """Every topic's ``partition -> [start, end)`` to read: four offset requests in all.

        The tick tail starts ``rebuild_ticks_s`` before the newest normalized
        record, intraday bars and alerts at 00:00 Shanghai of their newest
        record, the statistics :data:`STATS_TAIL` records before the end; the
        compacted topics (latest quotes, bar series, feed winners) and the
        daily bars (their retention: the newest month) are read whole.
        """
        t, kafka = self.topics, self.kafka
        window_ms = self.owner.settings.rebuild_ticks_s * 1000
        since: dict[str, Callable[[int], int]] = {
            t.normalized: lambda newest: newest - window_ms,
            **{topic: shanghai_day_start_ms for tf, topic in t.candles_by_tf.items() if tf != "1d"},
        }
        per_stock = (t.normalized, t.quotes_latest, t.bars_state, t.feed_winners,
                     *t.candles_by_tf.values())  # fmt: skip
        topics = {name: kafka.partitions(name, partitions) for name in per_stock}
        if market:
            since[t.alerts] = shanghai_day_start_ms
            topics[t.alerts] = kafka.partitions(t.alerts, None)
            topics[t.market_stats] = kafka.partitions(t.market_stats, None)
        tps = [(name, p) for name, parts in topics.items() for p in parts]
        earliest, latest = OffsetSpec.earliest(), OffsetSpec.latest()  # type: ignore[no-untyped-call]
        newest_spec = OffsetSpec.max_timestamp()  # type: ignore[no-untyped-call]
        low = kafka.offsets(dict.fromkeys(tps, earliest))
        high = kafka.offsets(dict.fromkeys(tps, latest))
        newest = kafka.offsets({tp: newest_spec for tp in tps if tp[0] in since})
        starts: dict[tuple[str, int], OffsetSpec] = {}
        for name, cut in since.items():
            stamps = [
                ts for (topic, _), (offset, ts) in newest.items() if topic == name and offset >= 0
            ]
            if stamps:
                start_ts = cut(max(stamps))
                starts.update(
                    {tp: OffsetSpec.for_timestamp(start_ts) for tp in tps if tp[0] == name}
                )
        found = kafka.offsets(starts)
        plan: dict[str, Ranges] = {name: {} for name in topics}
        for tp in tps:
            name, p = tp
            lo, hi = low[tp][0], high[tp][0]
            if name == t.market_stats:
                lo = max(lo, hi - STATS_TAIL)
            elif name in since:
                start = found.get(tp, (hi, 0))[0]
                lo = max(lo, start if start >= 0 else hi)
            plan[name][p] = (lo, hi)
        return plan

    async def execute(self, partitions: set[int] | None, market: bool) -> StateRebuildSummary:
        t = self.topics
        plan = await asyncio.to_thread(self._plan, partitions, market)
        for ranges in plan.values():
            self.total += sum(end - start for start, end in ranges.values())
        rebuilt = set(partitions) if partitions is not None else set(plan[t.quotes_latest])
        summary = StateRebuildSummary(partitions=rebuilt, market=market)

        planned = time.perf_counter()
        # Every topic at once, each read by its own consumer: a small topic costs
        # only its round trips, and one read's fetch overlaps another's decoding.
        parts = [
            self._quotes(plan[t.normalized], plan[t.quotes_latest], summary),
            *(self._candles(tf, plan[t.candles_by_tf[tf]], summary)
              for tf in TIMEFRAMES if tf != "1m"),
            self._bars(plan[t.bars_state], plan[t.candles_by_tf["1m"]], summary),
            self._feed_winners(plan[t.feed_winners], summary),
        ]  # fmt: skip
        if market:
            parts += [
                self._alerts(plan[t.alerts], summary),
                self._market_stats(plan[t.market_stats], summary),
            ]
        await all_or_none(parts)
        logger.info("rebuild: planned in %.1fs, read and written in %.1fs; read %s",
                    planned - self.started, time.perf_counter() - planned,
                    summary.records)  # fmt: skip
        await self.sink.mark_state(rebuilt, market, int(time.time() * 1000))
        return summary

    # -- the parts -------------------------------------------------------------

    async def _ticks(
        self, ranges: dict[int, tuple[int, int]], summary: StateRebuildSummary
    ) -> dict[str, tuple[dict[str, Any], int]]:
        """The tail into the ticks streams; returns each code's newest quote.

        The tail is also folded into candles, as the worker folded it: each
        stock's open candle (the minute of its newest tick) is the worker's
        whenever the tail holds a tick of the minute before (only closed
        candles are on Kafka).

        Every partition is read at once; the ticks are written every
        :data:`HISTORY_FLUSH` ticks (a stock's ticks come in exchange-time order
        within its partition, so later writes append), which bounds memory.
        """
        decode = self.owner.quote_codec.decode
        dumps = orjson.dumps
        newest: dict[str, tuple[dict[str, Any], int]] = {}
        history: dict[str, dict[int, bytes]] = {}
        pending = 0
        fold = self.open_candles.update

        def keep(msg: Message) -> None:
            nonlocal pending
            quote = decode(msg.value() or b"")
            code, ts = quote["code"], quote["exchange_ts"]
            fold(quote)
            history.setdefault(code, {})[ts] = dumps(quote)
            pending += 1
            best = newest.get(code)
            if best is None or ts >= best[0]["exchange_ts"]:
                newest[code] = (quote, int(msg.partition() or 0))

        writes = OneInFlight()

        async def flush(force: bool = False) -> None:
            nonlocal pending
            if pending and (force or pending >= HISTORY_FLUSH):
                ordered = {code: sorted(by_ts.items()) for code, by_ts in history.items()}
                history.clear()
                pending = 0
                await writes.submit(self.sink.write_history(ordered))

        advance = self._advance("ticks", "normalized")
        try:
            n = await self.kafka.read(self.topics.normalized, ranges, keep, advance, flush)
            await flush(force=True)
        finally:
            await writes.drain()
            summary.ticks = writes.done
        summary.records["normalized"] = n
        return newest

    async def _last_per_key(
        self, topic: str, ranges: Ranges, phase: str, source: str, summary: StateRebuildSummary
    ) -> dict[bytes, tuple[bytes, int]]:
        """A compacted topic's last value (and partition) of each key: only those get decoded."""
        last: dict[bytes, tuple[bytes, int]] = {}

        def keep(msg: Message) -> None:
            last[msg.key() or b""] = (msg.value() or b"", int(msg.partition() or 0))

        summary.records[source] = await self.kafka.read(
            topic, ranges, keep, self._advance(phase, source)
        )
        return last

    async def _quotes(self, tail: Ranges, latest: Ranges, summary: StateRebuildSummary) -> None:
        """The tick tail and the compacted latest quotes, read at once; then each stock's
        newest of both, newer-wins into Redis, and its open candle folded from the tail."""
        newest: dict[str, tuple[dict[str, Any], int]]
        last: dict[bytes, tuple[bytes, int]]
        newest, last = await all_or_none([
            self._ticks(tail, summary),
            self._last_per_key(self.topics.quotes_latest, latest, "latest quotes", "latest",
                               summary),
        ])  # fmt: skip
        decode = self.owner.quote_codec.decode
        for value, partition in last.values():
            quote = decode(value)
            best = newest.get(quote["code"])
            if best is None or quote["exchange_ts"] > best[0]["exchange_ts"]:
                newest[quote["code"]] = (quote, partition)
        quotes = list(newest.values())
        for start in range(0, len(quotes), self.sink.chunk_ticks):
            chunk = quotes[start : start + self.sink.chunk_ticks]
            await self.sink.write(SinkBatch(quotes=chunk, candles=[], alerts=[]))
        summary.stocks = len(quotes)
        # through CANDLES_LUA: a closed candle of the minute, written before or after, wins
        opened = [c for c in map(self.open_candles.current, newest) if c is not None]
        if opened:
            await self.sink.write(SinkBatch(quotes=[], candles=[], alerts=[], open_candles=opened))

    async def _bars(self, ranges: Ranges, minutes: Ranges, summary: StateRebuildSummary) -> None:
        """Each stock's bar series into ``hq:bars:{code}``: its newest checkpoint
        (``hq.bars.state``) with today's closed 1-minute candles after it folded in
        (all of them into a fresh series where a stock has no checkpoint yet).

        The 1-minute candles are read here, after the checkpoints (which say
        from which minute each stock's are needed), and written to Redis as
        :meth:`_candles` writes every timeframe.
        """
        last = await self._last_per_key(self.topics.bars_state, ranges, "bars", "bars", summary)
        dumps, loads = orjson.dumps, orjson.loads
        bars: dict[str, dict[str, bytes]] = {}
        through: dict[str, int] = {}  # the oldest minute any of a stock's series holds
        for key, (value, _) in last.items():
            code, by_tf = key.decode(), loads(value)
            bars[code] = {tf: dumps(series) for tf, series in by_tf.items()}
            through[code] = min((series["through"] for series in by_tf.values()), default=-1)
        frames = TimeframeBars()  # the stocks with minutes after their checkpoint
        restored: set[str] = set()

        def after_checkpoint(minute: dict[str, Any]) -> None:
            # a stock's minutes come in their order (one partition): folded as they come;
            # one without a checkpoint yet (its first minutes) from a fresh series
            code = minute["code"]
            if minute["minute_ts"] <= through.get(code, -1):
                return
            if code not in restored:
                if code in bars:
                    frames.restore(code, bars[code])
                restored.add(code)
            frames.add_minute_records((minute,))
            summary.minutes_folded += 1

        # (with the indicators off the workers keep no series: nothing to fold)
        tap = after_checkpoint if self.owner.settings.indicators else None
        await self._candles("1m", minutes, summary, tap)
        bars.update(frames.take_changed())
        codes = list(bars)
        for start in range(0, len(codes), self.sink.chunk_ticks):
            chunk = {code: bars[code] for code in codes[start : start + self.sink.chunk_ticks]}
            await self.sink.write(SinkBatch(quotes=[], candles=[], alerts=[], bars=chunk))

    async def _feed_winners(self, ranges: Ranges, summary: StateRebuildSummary) -> None:
        """Each stock's newest feed winner (``hq.feeds.winners``) into its partition's hash."""
        last = await self._last_per_key(
            self.topics.feed_winners, ranges, "feed winners", "winners", summary
        )
        by_partition: dict[int, dict[str, Winner]] = {}
        for key, (value, _) in last.items():
            partition, unit, source, price, volume, seen = orjson.loads(value)
            winner = (int(unit), str(source), float(price), int(volume), int(seen))
            by_partition.setdefault(int(partition), {})[key.decode()] = winner
        if by_partition:
            await self.sink.write_feed_winners(by_partition)

    async def _candles(
        self,
        tf: Timeframe,
        ranges: Ranges,
        summary: StateRebuildSummary,
        tap: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Today's bars of ``tf`` (the newest trade date read; all daily bars) into Redis.

        Each flush writes every hash it touches with one HSET of all its new
        fields; a hash gets its TTL with its first HSET of this rebuild.
        ``tap`` is shown every bar read.
        """
        decode = (self.owner.candle_codec if tf == "1m" else self.owner.bar_codecs[tf]).decode
        dumps = orjson.dumps
        intraday = tf != "1d"
        ttl_s = rk.candles_ttl_s(tf)
        hash_of = functools.cache(lambda code, trade_date: rk.candles(code, trade_date, tf))
        with_ttl: set[str] = set()  # the hashes written so far (and given their TTL)
        trade_date = ""  # of the bars written: the newest read
        bars: list[tuple[str, str, str, bytes]] = []  # (trade date, code, minute, JSON)
        writes = OneInFlight()

        async def flush(force: bool = False) -> None:
            nonlocal trade_date
            if not bars or (not force and len(bars) < CANDLE_FLUSH):
                return
            trade_date = max(trade_date, *(bar[0] for bar in bars))
            hashes: dict[str, dict[str, bytes]] = {}
            for date, code, minute, value in bars:
                if date == trade_date or not intraday:
                    hashes.setdefault(hash_of(code, date), {})[minute] = value
            bars.clear()
            new = hashes.keys() - with_ttl
            with_ttl.update(new)
            await writes.submit(self.sink.write_closed_bars(hashes, ttl_s, new))

        def keep(msg: Message) -> None:
            bar = decode(msg.value() or b"")
            bars.append((bar["trade_date"], bar["code"], str(bar["minute_ts"]), dumps(bar)))
            if tap is not None:
                tap(bar)

        advance = self._advance(f"candles {tf}", f"candles_{tf}")
        try:
            n = await self.kafka.read(self.topics.candles_by_tf[tf], ranges, keep, advance, flush)
            await flush(force=True)
        finally:
            await writes.drain()
        summary.records[f"candles_{tf}"] = n
        summary.candles += writes.done

    async def _alerts(
        self, ranges: dict[int, tuple[int, int]], summary: StateRebuildSummary
    ) -> None:
        """Today's newest alerts (at most the stream's cap), oldest first."""
        decode = self.owner.alert_codec.decode
        alerts: list[Alert] = []

        def keep(msg: Message) -> None:
            alerts.append(Alert(**decode(msg.value() or b"")))

        n = await self.kafka.read(
            self.topics.alerts, ranges, keep, self._advance("market", "alerts")
        )
        summary.records["alerts"] = n
        alerts.sort(key=lambda a: a.exchange_ts)
        recent = alerts[-rk.ALERTS_MAXLEN :]
        if recent:
            await self.sink.write(SinkBatch(quotes=[], candles=[], alerts=recent))

    async def _market_stats(
        self, ranges: dict[int, tuple[int, int]], summary: StateRebuildSummary
    ) -> None:
        """The last published statistics of each market Redis holds none of."""
        decode = self.owner.stats_codec.decode
        last: dict[str, dict[str, Any]] = {}

        def keep(msg: Message) -> None:
            record = decode(msg.value() or b"")
            prior = last.get(record["market"])
            if prior is None or record["ts"] >= prior["ts"]:
                last[record["market"]] = record

        n = await self.kafka.read(
            self.topics.market_stats, ranges, keep, self._advance("market", "market_stats")
        )
        summary.records["market_stats"] = n
        missing = set(await self.sink.markets_missing())
        wanted = {m: r for m, r in last.items() if m in missing}
        if wanted:
            await self.sink.write_market(wanted, max(r["ts"] for r in wanted.values()))
