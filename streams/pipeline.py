"""The processing of one batch of raw records: the single code path of every runner.

The faust agent (:mod:`streams.app`), the rebuild (:mod:`streams.rebuild`) and
the plain-consumer benchmark all hand batches of :class:`RawRecord` to
:class:`Processor`: parse -> Avro encode -> DLQ for bad records -> market
stats / 1-minute candles / alerts (in-memory state) -> what to write to Redis
and Kafka. It is synchronous and does no I/O, except :meth:`Processor.warm_up`
and :meth:`Processor.seed`, which read Redis to rebuild in-memory state.

In-memory state and restarts: each stock's candle builder and alert detector
state is rebuilt lazily, the first time this worker sees the stock, by
replaying that stock's recent ticks from the Redis ticks stream (the last
``warmup_window_s`` of exchange time); the market statistics of a worker's
partitions are seeded from the stored latest quotes on every assignment.
A quote whose ``exchange_ts`` is not newer than the last one this worker
applied (an at-least-once replay) still goes to Redis (newer-wins makes it a
no-op) and to Kafka, but never into the in-memory state twice.
Never drops a record: every input ends in an output or the DLQ, except the
copies of a snapshot another feed delivered first, which the feed arbiter
(:mod:`streams.arbitration`) drops and counts per feed and reason.

No record can stop a partition: whatever one record raises while it is
parsed, encoded (Avro, and the JSON Redis stores) or folded into the
stats/candles/alerts goes to the DLQ with its reason (``unprocessable`` and
the exception class for what no check foresaw) and the batch goes on. A
record that fails in the in-memory state also makes this worker forget that
stock's state, which is rebuilt from Redis (without the record) on its next
tick. Everything per record is done here, before the batch's Redis and Kafka
writes, so those batch steps only fail for an outage (retried, never
dead-lettered); :class:`streams.runtime.StreamsRuntime` still isolates a
record Redis itself refuses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from schemas.bar_series import Bar
from schemas.dlq import DlqReason
from schemas.records import Quote
from schemas.serde import Codec, SerdeError, make_codec
from schemas.topics import H_RECEIVE_TS, H_SOURCE, Headers
from streams.alerts import Alert, AlertConfig, alert_detector
from streams.arbitration import IMPLICIT_SOURCE, Arbiter, Winner
from streams.bars import TimeframeBars
from streams.candles import Candle, candle_builder
from streams.dlq import DlqRecord, dlq_record
from streams.errors import BadRecord
from streams.market_stats import market_stats
from streams.native_parse import QuoteMaker, parse_path
from streams.parse import parse_record
from streams.redis_sink import RedisSink, SinkBatch
from streams.settings import StreamsSettings, TopicNames

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RawRecord:
    """One record of ``hq.ticks.raw`` as any consumer sees it."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(slots=True)
class KafkaOut:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers | None = None


@dataclass(slots=True)
class BatchResult:
    """Everything a processed batch must write before its offsets may be committed."""

    sink: SinkBatch
    kafka: list[KafkaOut]
    dlq: list[DlqRecord]
    receive_ts: list[int] = field(default_factory=list)
    n_in: int = 0
    sources: list[RawRecord] = field(default_factory=list)  # the raw record of each sink quote
    refused: set[int] = field(default_factory=set)  # sink quotes Redis refused (dead-lettered)
    arbitrated: int = 0  # copies of another feed's quotes dropped by the arbiter
    #: the arbiter's new winners, by raw partition: stored once Kafka has the batch
    feed_winners: dict[int, dict[str, Winner]] = field(default_factory=dict)
    #: ``hq.quotes.latest`` records (:meth:`Processor.latest_outputs`), not in ``kafka``:
    #: the runtime sends each stock's newest at most every ``latest_interval_s``
    latest: list[KafkaOut] = field(default_factory=list)


@dataclass(eq=False)
class Parsed:
    """The valid records of a batch (parallel lists: each quote's Avro, code, raw
    partition and raw record) and its dead letters.

    Parsed with a ``maker`` (the compiled parse, :meth:`Processor.parse_batch`)
    a quote is its Avro and what the arbiter needs; its dict and JSON
    (:attr:`quotes`, :attr:`data`) are made from the Avro when first asked
    for, by the batch's finish: on a burst's path the worker's parse makes
    each line's Avro only, which its quotes are published with (the dict and
    the JSON were more than half of a compiled line's parse; docs/benchmarks.md,
    "A quote's dict and JSON after the burst"). Without one they are made
    with the parse.
    """

    encoded: list[bytes] = field(default_factory=list)  # Avro, the normalized topic's value
    codes: list[str] = field(default_factory=list)  # the key of its normalized record
    partitions: list[int] = field(default_factory=list)  # its raw record's partition
    sources: list[RawRecord] = field(default_factory=list)
    dead: list[DlqRecord] = field(default_factory=list)
    arbitrated: int = 0  # copies of another feed's quotes, dropped by the arbiter
    n_in: int = 0  # records parsed
    #: the arbiter's new winners, by raw partition (:attr:`BatchResult.feed_winners`)
    feed_winners: dict[int, dict[str, Winner]] = field(default_factory=dict)
    #: makes the dicts and JSON of quotes from their Avro (None: the parse makes them)
    maker: QuoteMaker | None = None
    #: the dicts and JSON made so far: those of the first quotes
    made_quotes: list[tuple[Quote, int]] = field(default_factory=list)
    made_data: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        """The quotes (made or not)."""
        return len(self.encoded)

    @property
    def quotes(self) -> list[tuple[Quote, int]]:
        """Each quote and its raw partition (made now if not yet)."""
        self.make()
        return self.made_quotes

    @property
    def data(self) -> list[bytes]:
        """Each quote's JSON, as Redis stores it (made now if not yet)."""
        self.make()
        return self.made_data

    def make(self, upto: int | None = None) -> None:
        """Make the dicts and JSON of the quotes not made yet (the first ``upto`` of them
        at least: default all), from their Avro."""
        done, end = len(self.made_quotes), len(self.encoded) if upto is None else upto
        if done >= end:
            return
        if self.maker is None:
            raise RuntimeError("quotes parsed without their dicts and no maker to make them")
        quotes, data = self.maker(self.encoded[done:end])
        self.made_quotes += zip(quotes, self.partitions[done:end], strict=True)
        self.made_data += data

    def drop(self, failed: dict[int, DlqRecord]) -> None:
        """Move the records at the indices of ``failed`` to the dead letters."""
        self.make()
        keep = [i for i in range(len(self)) if i not in failed]
        for name in _PARALLEL:
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])
        self.dead += failed.values()

    def take_first(self, n: int) -> Parsed:
        """The first ``n`` quotes as a batch of their own, with the dead letters and the
        counts; this one keeps the rest of the quotes and the arbiter's winners
        (stored once Kafka has the last of them)."""
        made = min(n, len(self.made_quotes))
        head = Parsed(dead=self.dead, arbitrated=self.arbitrated, n_in=self.n_in,
                      maker=self.maker)  # fmt: skip
        for name in _PARALLEL:
            values = getattr(self, name)
            first = n if name not in _MADE else made
            setattr(head, name, values[:first])
            del values[:first]
        self.dead, self.arbitrated, self.n_in = [], 0, 0
        return head


#: :class:`Parsed`'s parallel lists (the made ones may be shorter: their first quotes)
_MADE = ("made_quotes", "made_data")
_PARALLEL = ("encoded", "codes", "partitions", "sources", *_MADE)


#: what the compiled parse needs of :func:`receive_ts_and_source`: the header names and
#: the source of a record without one
FEED_HEADERS: Final = (H_RECEIVE_TS, H_SOURCE, IMPLICIT_SOURCE)


def receive_ts_and_source(record: RawRecord) -> tuple[int, str]:
    """The receiver's ``receive_ts`` (else the Kafka timestamp) and feed (``source``) headers."""
    receive_ts, source = record.timestamp_ms, IMPLICIT_SOURCE
    for name, value in record.headers:
        if name == H_RECEIVE_TS:
            try:
                receive_ts = int(value)
            except (TypeError, ValueError):
                receive_ts = record.timestamp_ms
        elif name == H_SOURCE:
            source = value.decode("utf-8", "replace")
    return receive_ts, source


#: records parsed between two turns of the event loop (see Processor.process)
YIELD_EVERY = 250


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def dead_letter(rec: RawRecord, reason: DlqReason, detail: str, now_ms: int) -> DlqRecord:
    """The DLQ record of ``rec``."""
    return dlq_record(
        key=rec.key,
        value=rec.value,
        reason=reason,
        detail=detail,
        topic=rec.topic,
        partition=rec.partition,
        offset=rec.offset,
        now_ms=now_ms,
    )


def unprocessable(rec: RawRecord, exc: BaseException, now_ms: int) -> DlqRecord:
    """The DLQ record of ``rec`` whose processing raised ``exc`` (no check foresaw it)."""
    logger.error("record %s[%d]@%d is unprocessable, dead-lettered: %r",
                 rec.topic, rec.partition, rec.offset, exc)  # fmt: skip
    return dead_letter(rec, "unprocessable", f"{type(exc).__name__}: {exc}", now_ms)


def derived_outputs(topic: str, codec: Codec, records: Iterable[dict[str, Any]]) -> list[KafkaOut]:
    """The Kafka records of bars or alerts (Avro records, keyed by code).

    One that cannot be encoded is logged as an error and left out of Kafka
    (it still goes to Redis): it is no input record to dead-letter, and it
    must not stop the batch. Bounded quotes make it impossible in practice.
    """
    out: list[KafkaOut] = []
    for record in records:
        try:
            out.append(KafkaOut(topic, record["code"].encode(), codec.encode(record)))
        except Exception as exc:
            logger.error("not produced to %s, cannot be encoded: %r: %r", topic, exc, record)
    return out


class Processor:
    """Parse, encode and derive; owns the in-memory stats/candle/alert state."""

    def __init__(self, settings: StreamsSettings, *, publish_normalized: bool = True) -> None:
        self.settings = settings
        self.topics: TopicNames = settings.topic_names
        self.publish_normalized = publish_normalized
        url = settings.schema_registry_url
        self.quote_codec: Codec = make_codec("quote", url, self.topics.normalized)
        self.candle_codec: Codec = make_codec("candle", url, self.topics.candles)
        self.bar_codecs: dict[str, Codec] = {
            tf: self.candle_codec if tf == "1m" else make_codec("candle", url, topic)
            for tf, topic in self.topics.candles_by_tf.items()
        }
        self.alert_codec: Codec = make_codec("alert", url, self.topics.alerts)
        self.max_ahead_ms = round(settings.max_ahead_s * 1000)
        self.timer_grace_ms = round(settings.candle_timer_grace_s * 1000)
        self.parse_path = parse_path(self.quote_codec, settings.native)
        self.arbiter = Arbiter(settings.arbitration)
        self.reset()

    def reset(self) -> None:
        """Forget all in-memory state (after a rebalance it is rebuilt from Redis)."""
        self.stats = market_stats(compiled=self.settings.native)
        self.candles = candle_builder(compiled=self.settings.native)
        self.bars = TimeframeBars() if self.settings.indicators else None
        self.alerts = alert_detector(AlertConfig(), compiled=self.settings.native)
        self.last_ts: dict[str, int] = {}
        self.partition_of: dict[str, int] = {}  # code -> raw partition it came from
        self.warmed: set[str] = set()
        self.newest_ts = 0  # newest exchange_ts seen, replays included (the exchange clock)
        self.newest_by_partition: dict[int, int] = {}  # the same, per raw partition
        self.partition_wall_ms: dict[int, int] = {}  # wall clock when that last advanced
        self.newest_wall_ms = 0  # wall clock when newest_ts last advanced
        self.paused: set[int] = set()  # revoked partitions: state kept, no candle closes

    def pause_partitions(self, partitions: set[int]) -> int:
        """Revoked ``partitions``: their stocks leave the market statistics (this worker's
        partial must not count them beside their new owner's) and their candles stop
        closing (a timer here must not overwrite the new owner's); the rest of their
        state waits for :meth:`seed`, which keeps it if they come back at once.
        Returns how many stocks left the statistics."""
        self.paused |= partitions
        return self.stats.forget([c for c, p in self.partition_of.items() if p in partitions])

    def forget_partitions(self, partitions: set[int]) -> int:
        """Drop everything this worker holds of the stocks of revoked ``partitions``.

        Else this worker's partial would count them as well as their new
        owner's until its next reseed, and its candle timer would close their
        candles from a state that misses the new owner's ticks, overwriting
        the new owner's candles in Redis. If the partitions come back, the
        stocks are warmed up again from Redis. Returns how many were dropped.
        """
        codes = [c for c, p in self.partition_of.items() if p in partitions]
        self.arbiter.forget_partitions(partitions)
        for partition in partitions:
            self.newest_by_partition.pop(partition, None)
            self.partition_wall_ms.pop(partition, None)
        return self._forget_stocks(codes)

    def _forget_stocks(self, codes: Collection[str]) -> int:
        """Drop ``codes``' in-memory state; returns how many left the market statistics."""
        for code in codes:
            self.partition_of.pop(code, None)
            self.last_ts.pop(code, None)
            self.warmed.discard(code)
        self.candles.forget(codes)
        if self.bars is not None:
            self.bars.forget(codes)
        self.alerts.forget(codes)
        return self.stats.forget(codes)

    def flush_candles(
        self, wall_ms: int, quiet_ms: int, fetched_to_end_ms: Mapping[int, int] | None = None
    ) -> list[Bar]:
        """Close the candles whose minute is over; returns them (``closed=True``).

        A stock's clock is the newest exchange_ts seen in its raw partition:
        ticks of a partition come in exchange-time order, but the partitions
        of a backlog do not progress together, so the worker's newest tick may
        be a minute ahead of ticks still to come in another partition. A
        partition that went quiet (its stocks stopped ticking) follows the
        worker's newest exchange_ts; once the whole feed went quiet (lunch,
        the close) every clock is the wall clock if that is later, so the
        11:29 and 14:59 candles of stocks that stop ticking close too.

        Quiet is the broker's word, not a pause in the ticks:
        ``fetched_to_end_ms`` gives, per assigned raw partition, the wall time
        of the latest fetch that found it read to its end (0: it was not). A
        partition is quiet when such a fetch came ``quiet_ms`` or more after
        its clock last moved. While the broker is unreachable (the receiver
        journals the feed meanwhile) or fetched records wait to be processed,
        nothing is quiet, so every candle closes on its own partition's
        exchange clock: the rest of its minute is still to come. ``None``
        counts every partition as read to its end at ``wall_ms`` (no consumer
        to ask: the rebuild and tests of the clock alone).

        A partition that still ticks closes its stocks' candles once its clock
        is ``candle_timer_grace_s`` past their end (the vendor's snapshot
        interval, 3 s): by then a stock that still trades has closed its
        candle with its own next tick, in the batch, so a minute's 5,000
        closes come with the ticks over the interval rather than all in the
        timer's slices within a second (the minute's worst second, 410-530
        ms at 1,667 ticks/s before: docs/benchmarks.md, "Outputs sent
        ahead, and the minute's closes with the ticks").
        """
        return self.flush_candle_slice(wall_ms, quiet_ms, fetched_to_end_ms, None)[0]

    def flush_candle_slice(
        self,
        wall_ms: int,
        quiet_ms: int,
        fetched_to_end_ms: Mapping[int, int] | None,
        limit: int | None,
    ) -> tuple[list[Bar], bool]:
        """:meth:`flush_candles` in slices: (the bars closed, whether all due are closed).

        At most ``limit`` 1-minute candles close, then, once none is left to
        close, at most ``limit`` bars of the higher timeframes whose last
        minute had no candle (a stock's such bar never closes before its last
        1-minute candle is folded in). Each call leaves the state whole, so
        batches may be processed between two calls; each call reads the
        clocks afresh.
        """
        since, by_partition = self.partition_wall_ms, self.newest_by_partition
        if fetched_to_end_ms is None:
            fetched_to_end_ms = dict.fromkeys(by_partition, wall_ms)
            feed_quiet = wall_ms - self.newest_wall_ms >= quiet_ms
        else:
            confirmed = min(fetched_to_end_ms.values(), default=0)
            feed_quiet = confirmed - self.newest_wall_ms >= quiet_ms
        newest = max(self.newest_ts, wall_ms) if feed_quiet else self.newest_ts
        if not newest:
            return [], True
        quiet_partitions = {
            p for p, at in fetched_to_end_ms.items() if at - since.get(p, 0) >= quiet_ms
        }
        partition_of = self.partition_of
        grace = self.timer_grace_ms

        paused = self.paused

        def clock_of(code: str) -> int:
            partition = partition_of.get(code, -1)
            if partition in paused:
                return -1  # revoked: closes nothing
            if feed_quiet or partition in quiet_partitions or partition not in by_partition:
                return newest
            return by_partition[partition] - grace  # its stocks' next ticks close them first

        minutes = self.candles.flush(newest, clock_of, limit)
        if limit is not None and len(minutes) == limit:
            return self.close_bars(minutes), False  # more may be due: gap bars wait
        if self.bars is None:
            return self.close_bars(minutes), True
        bars = self.bars.add_minutes(minutes)
        gaps = self.bars.flush(newest, clock_of, limit)  # after the minutes they may end with
        return bars + gaps, limit is None or len(gaps) < limit

    def close_bars(self, minutes: list[Candle]) -> list[Bar]:
        """Closed 1-minute candles -> the closed bars of every timeframe, with indicators
        (without indicators: the candles' Avro records)."""
        if self.bars is None:
            return [minute.as_record() for minute in minutes]
        return self.bars.add_minutes(minutes)

    def take_bar_states(self) -> dict[str, dict[str, bytes]] | None:
        """The stored form of the bar series changed since the last call (for Redis)."""
        return None if self.bars is None else self.bars.take_changed() or None

    def latest_outputs(
        self, quotes: list[tuple[Quote, int]], encoded: list[bytes]
    ) -> list[KafkaOut]:
        """``hq.quotes.latest`` records: each stock's newest quote of the batch.

        Only a quote at the stock's newest applied ``exchange_ts`` qualifies, so
        an older tick (a replay, a vendor glitch) never follows a newer one into
        the compacted topic, which keeps the last record of each key.
        """
        last_ts = self.last_ts
        newest: dict[str, bytes] = {}
        for (quote, _), payload in zip(quotes, encoded, strict=True):
            code = quote["code"]
            if quote["exchange_ts"] == last_ts.get(code):
                newest[code] = payload
        topic = self.topics.quotes_latest
        return [KafkaOut(topic, code.encode(), payload) for code, payload in newest.items()]

    def bar_state_outputs(self, states: dict[str, dict[str, bytes]] | None) -> list[KafkaOut]:
        """``hq.bars.state`` records: the checkpoints of bar series now due.

        ``states``: what :meth:`take_bar_states` just returned (for Redis). A
        stock's checkpoint is due every few minutes, not at each change
        (:meth:`streams.bars.TimeframeBars.take_checkpoints`); the value is
        the JSON object of ``hq:bars:{code}`` (timeframe -> series), which the
        state rebuild restores and brings up to date with the closed 1-minute
        candles after it.
        """
        if not self.publish_normalized or self.bars is None:
            return []
        due = self.bars.take_checkpoints(self.newest_ts // 60_000, states)
        topic = self.topics.bars_state
        return [
            KafkaOut(
                topic,
                code.encode(),
                orjson.dumps({tf: orjson.Fragment(v) for tf, v in by_tf.items()}),
            )
            for code, by_tf in due.items()
        ]

    def feed_winner_outputs(self, changes: dict[int, dict[str, Winner]]) -> list[KafkaOut]:
        """``hq.feeds.winners`` records: ``[raw partition, *winner]`` of each changed stock."""
        if not self.publish_normalized:
            return []
        topic = self.topics.feed_winners
        return [
            KafkaOut(topic, code.encode(), orjson.dumps([partition, *winner]))
            for partition, winners in changes.items()
            for code, winner in winners.items()
        ]

    def candle_outputs(self, closed: list[Bar]) -> list[KafkaOut]:
        """The closed bars' Kafka records, to their timeframe's topic (none when not publishing)."""
        if not self.publish_normalized:
            return []
        by_tf: dict[str, list[Bar]] = {}
        for bar in closed:
            by_tf.setdefault(bar.get("tf", "1m"), []).append(bar)
        out: list[KafkaOut] = []
        for tf, bars in by_tf.items():
            topic = self.topics.candles_by_tf[tf]
            out += derived_outputs(topic, self.bar_codecs[tf], bars)
        return out

    # -- state recovery ----------------------------------------------------

    async def seed(
        self, sink: RedisSink, partitions: set[int] | None, keep: set[int] | None = None
    ) -> int:
        """Seed the market statistics with the stored latest quotes of ``partitions``.

        Every other state starts afresh (warmed up from Redis by the next batches),
        but for the stocks of ``keep``: partitions revoked and given back at once,
        whose candles, alerts and bars this worker still holds exactly (a
        takeover's warm-up then replays only the stocks that moved here).
        """
        if keep:
            held = {*self.partition_of.values(), *self.newest_by_partition, *self.paused}
            self.forget_partitions(held - keep)
            # only stocks known to be of a kept partition stay: any other state
            # (however it came here) would be taken for a warm one if its
            # partition came back later, and never be warmed up again
            kept = {c for c, p in self.partition_of.items() if p in keep}
            self._forget_stocks({*self.last_ts, *self.warmed, *self.partition_of} - kept)
            # every stock seeded below, the kept ones too
            self.stats = market_stats(compiled=self.settings.native)
            self.paused = set()
        else:
            self.reset()
        n = 0
        for quote, partition in await sink.latest_quotes():
            if partitions is None or partition in partitions:
                try:
                    self.stats.update(quote)
                except Exception as exc:  # stored before a check refused such quotes
                    logger.error("stored quote not seeded into the stats: %r", exc)
                    continue
                self.partition_of[quote["code"]] = partition
                n += 1
        logger.info("market stats seeded from redis with %d stocks of partitions %s", n,
                    sorted(partitions) if partitions is not None else "all")  # fmt: skip
        await self.restore_feed_winners(sink, partitions)
        return n

    async def restore_feed_winners(self, sink: RedisSink, partitions: set[int] | None) -> None:
        """Load the feed arbitration winners of ``partitions`` (all: None) stored in Redis."""
        wanted = sorted(partitions) if partitions is not None else range(self.settings.partitions)
        stored = await sink.feed_winners(list(wanted))
        for partition, winners in stored.items():
            self.arbiter.restore(partition, winners)
        if any(stored.values()):
            logger.info("feed arbitration: %d stocks' winners restored from redis",
                        sum(map(len, stored.values())))  # fmt: skip

    async def warm_up(self, sink: RedisSink, codes: set[str]) -> None:
        """Replay the recent Redis ticks of stocks this worker has not seen yet."""
        cold = [c for c in codes if c not in self.warmed]
        if not cold:
            return
        window_ms = self.settings.warmup_window_s * 1000
        ticks = await sink.recent_ticks(cold, window_ms) if window_ms else {}
        stored_bars = await sink.stored_bars(cold) if self.bars is not None else {}
        for code in cold:
            try:
                if self.bars is not None:
                    self.bars.restore(code, stored_bars.get(code, {}))
                for quote in ticks.get(code, ()):
                    ts = quote["exchange_ts"]
                    if ts > self.last_ts.get(code, -1):
                        self.last_ts[code] = ts
                        replayed = self.candles.update(quote)
                        if replayed and self.bars is not None:
                            self.bars.add_minutes(replayed)  # minutes the stored bars hold: no-ops
                        self.alerts.update(quote)
                history = ticks.get(code)
                if history:
                    self.stats.update(history[-1])
            except Exception as exc:  # stored before a check refused such ticks
                logger.error("stock %s: recent ticks in redis not replayed: %r", code, exc)
                self._forget_stocks((code,))  # starts afresh with its next tick
        self.warmed.update(cold)

    # -- the hot path -------------------------------------------------------

    def parse(self, records: list[RawRecord], into: Parsed) -> None:
        """Parse, check, arbitrate and encode ``records``: the published quotes and the
        dead letters go ``into``; copies the arbiter drops are counted there, not encoded.
        With ``into.maker`` the compiled parse makes a quote's Avro only (its dict and
        JSON are made later from it: :class:`Parsed`), and goes through the records
        in one call, the arbiter's judgement included (``parse_run``), handing each
        record it does not take as it is (a bad line, an unusual header) to the
        Python path, which names a bad record's reason."""
        now = _now_ms()
        run = self.parse_path.run if into.maker is not None else None
        if run is None:
            self._parse(records, into, now)
            return
        max_ahead, arbiter, n, start = self.max_ahead_ms, self.arbiter, len(records), 0
        lists = into.encoded, into.codes, into.partitions, into.sources
        while start < n:
            stop, dropped = run(records, start, now, max_ahead, arbiter, FEED_HEADERS, *lists)
            into.arbitrated += dropped
            if stop < n:
                self._parse(records[stop : stop + 1], into, now, compiled=False)
            start = stop + 1

    def _parse(
        self, records: list[RawRecord], into: Parsed, now: int, *, compiled: bool = True
    ) -> None:
        """:meth:`parse` one record at a time (``compiled``: trying the compiled line
        parse first, when there is one)."""
        encode, dumps, max_ahead = self.quote_codec.encode, orjson.dumps, self.max_ahead_ms
        encoded_add, codes_add, partitions_add = (
            into.encoded.append, into.codes.append, into.partitions.append)  # fmt: skip
        quotes_add, data_add = into.made_quotes.append, into.made_data.append
        sources_add, dead_add = into.sources.append, into.dead.append
        judge, lazy, path = self.arbiter.judge, into.maker is not None, self.parse_path
        fast = path.fast if compiled and not lazy else None  # the quote, its Avro, its JSON
        avro = path.avro if compiled and lazy else None  # its Avro, code, time, price, volume
        for rec in records:
            try:
                receive_ts, source = receive_ts_and_source(rec)
                quote: Quote | None = None
                data: bytes | None = None
                # the compiled paths; None: the Python path decides
                if avro and (head := avro(rec.value, receive_ts, now, max_ahead)):
                    code, ts, price, volume, payload = head
                else:
                    if fast and (full := fast(rec.value, receive_ts, now, max_ahead)):
                        quote, payload, data = full
                    else:
                        quote = parse_record(rec.value, receive_ts, now, max_ahead_ms=max_ahead)
                        payload = None
                    code, ts, price, volume = (quote["code"], quote["exchange_ts"],
                                               quote["price"], quote["volume"])  # fmt: skip
                if judge(code, ts, source, rec.partition, price, volume):
                    into.arbitrated += 1
                    continue
                if payload is None:
                    assert quote is not None  # the Python path's
                    payload = encode(quote)
                if not lazy and data is None:  # (a lazy quote's is made from its Avro)
                    data = dumps(quote)
            except BadRecord as bad:
                dead_add(dead_letter(rec, bad.reason, bad.detail, now))
                continue
            except SerdeError as exc:
                dead_add(dead_letter(rec, "encode_error", str(exc), now))
                continue
            except Exception as exc:
                dead_add(unprocessable(rec, exc, now))
                continue
            encoded_add(payload)
            codes_add(code)
            partitions_add(rec.partition)
            sources_add(rec)
            if not lazy:
                assert quote is not None and data is not None  # made above
                quotes_add((quote, rec.partition))
                data_add(data)

    def derive(
        self,
        quotes: list[tuple[Quote, int]],
        failed: dict[int, BaseException] | None = None,
    ) -> tuple[list[Candle], list[Candle], list[Alert]]:
        """Feed new quotes to stats/candles/alerts: (closed candles, open candles, alerts).

        A quote that raises there is put in ``failed`` (by index; re-raised
        when ``failed`` is None) and its stock's state is forgotten, to be
        warmed up again from Redis.
        """
        closed: list[Candle] = []
        alerts: list[Alert] = []
        touched: dict[str, None] = {}
        self._derive_into(quotes, 0, failed, closed, alerts, touched)
        return closed, self._open_candles(touched), alerts

    def _derive_into(
        self,
        quotes: list[tuple[Quote, int]],
        start: int,
        failed: dict[int, BaseException] | None,
        closed: list[Candle],
        alerts: list[Alert],
        touched: dict[str, None],
    ) -> None:
        """:meth:`derive` into the lists given (``touched``: the codes whose open candle
        changed); the index of a quote in ``failed`` counts from ``start``."""
        last_ts, partition_of = self.last_ts, self.partition_of
        stats_update, candle_update = self.stats.update, self.candles.update
        alert_update = self.alerts.update
        newest = self.newest_ts
        by_partition: dict[int, int] = self.newest_by_partition
        advanced: set[int] = set()
        for index, (quote, partition) in enumerate(quotes):
            code = quote["code"]
            ts = quote["exchange_ts"]
            # the clocks count replayed ticks too: they show where the feed is
            if ts > newest:
                newest = ts
            if ts > by_partition.get(partition, -1):
                by_partition[partition] = ts
                advanced.add(partition)
            # a replay's too: its stock may have been warmed up, and its state
            # must leave with its partition
            partition_of[code] = partition
            if ts <= last_ts.get(code, -1):
                continue  # replayed or out of order: state already has it (or newer)
            try:
                last_ts[code] = ts
                stats_update(quote)
                done = candle_update(quote)
                if done:
                    closed += done
                fired = alert_update(quote)
                if fired:
                    alerts += fired
            except Exception as exc:
                if failed is None:
                    raise
                failed[start + index] = exc
                self._forget_stocks((code,))
                continue
            touched[code] = None
        if advanced:
            now = _now_ms()
            for partition in advanced:
                self.partition_wall_ms[partition] = now
        if newest > self.newest_ts:
            self.newest_ts = newest
            self.newest_wall_ms = _now_ms()

    def _open_candles(self, codes: Iterable[str]) -> list[Candle]:
        return self.candles.current_of(list(codes))

    async def process(self, records: list[RawRecord], sink: RedisSink | None) -> BatchResult:
        """One batch: parse, (warm up from ``sink``), derive; nothing is written yet."""
        return await self.finish(await self.parse_batch(records), sink)

    async def parse_batch(self, records: list[RawRecord]) -> Parsed:
        """The parse of a batch: its quotes (encoded for the normalized topic) and dead letters.

        Parses in slices of :data:`YIELD_EVERY` records and lets the event loop
        run between them, so the previous batch's writes (a megabyte to Redis)
        go out and its answers come in while this batch is parsed.
        """
        p = Parsed(n_in=len(records), maker=self.parse_path.make)
        for start in range(0, len(records), YIELD_EVERY):
            self.parse(records[start : start + YIELD_EVERY], p)
            await asyncio.sleep(0)
        p.feed_winners = self._feed_winners_to_store()  # this parse's, stored with its batch
        return p

    def normalized_outputs(self, p: Parsed) -> list[KafkaOut]:
        """The normalized topic's records of ``p`` (none when this worker publishes none)."""
        if not self.publish_normalized:
            return []
        topic = self.topics.normalized
        return [
            KafkaOut(topic, code.encode(), payload)
            for code, payload in zip(p.codes, p.encoded, strict=True)
        ]

    def closing(self, p: Parsed, n: int) -> list[bool]:
        """Whether each of the first ``n`` quotes of ``p`` closes its stock's candle, as the
        candles are now: such a tick costs its finish several times a plain one's
        (its bar, every timeframe's, their state and records)."""
        p.make(n)
        closes = self.candles.closes
        return [closes(quote["code"], quote["exchange_ts"]) for quote, _ in p.made_quotes[:n]]

    async def finish(
        self, p: Parsed, sink: RedisSink | None, *, published: bool = False
    ) -> BatchResult:
        """The rest of a parsed batch: (warm up from ``sink``), derive, every output.

        ``published``: the quotes of ``p`` went to the normalized topic
        already (:meth:`normalized_outputs`, sent before this step); a quote
        whose statistics, candles or alerts raise is then dead-lettered
        (``unprocessable``) but stays published and stored, as it was sent.
        Otherwise it is dead-lettered only. Either way its stock's state is
        forgotten, to be warmed up from Redis again.
        """
        if sink is not None:
            await self.warm_up(sink, {q["code"] for q, _ in p.quotes})
        else:
            self.warmed.update(q["code"] for q, _ in p.quotes)
        failed: dict[int, BaseException] = {}
        minutes: list[Candle] = []
        alerts: list[Alert] = []
        touched: dict[str, None] = {}
        for start in range(0, len(p.quotes), YIELD_EVERY):  # as the parse: the loop runs between
            some = p.quotes[start : start + YIELD_EVERY]
            self._derive_into(some, start, failed, minutes, alerts, touched)
            await asyncio.sleep(0)
        open_candles = self._open_candles(touched)
        closed = self.close_bars(minutes)
        if failed:
            now = _now_ms()
            dead_letters = {i: unprocessable(p.sources[i], exc, now) for i, exc in failed.items()}
            if published:
                p.dead += dead_letters.values()
            else:
                p.drop(dead_letters)
        quotes, dead = p.quotes, p.dead
        out: list[KafkaOut] = []
        latest: list[KafkaOut] = []
        if self.publish_normalized:
            t = self.topics
            out = self.normalized_outputs(p)
            latest = self.latest_outputs(quotes, p.encoded)
            out += self.candle_outputs(closed)
            out += derived_outputs(t.alerts, self.alert_codec, (a.as_record() for a in alerts))
            out += [KafkaOut(t.dlq, d.key, d.value, d.headers) for d in dead]
        bars = self.take_bar_states()
        out += self.bar_state_outputs(bars)
        return BatchResult(
            sink=SinkBatch(
                quotes=quotes,
                candles=closed,
                alerts=alerts,
                data=p.data,
                bars=bars,
                open_candles=open_candles,
            ),
            kafka=out,
            dlq=dead,
            receive_ts=[q["receive_ts"] for q, _ in quotes],
            n_in=p.n_in,
            sources=p.sources,
            arbitrated=p.arbitrated,
            feed_winners=p.feed_winners,
            latest=latest,
        )

    def _feed_winners_to_store(self) -> dict[int, dict[str, Winner]]:
        """The arbiter's new winners; nothing to store while one feed is all there is."""
        changes = self.arbiter.take_changes()
        return changes if self.arbiter.multi_source else {}

    # -- market statistics ---------------------------------------------------

    def snapshots(self, now_ms: int) -> dict[str, dict[str, Any]]:
        """This worker's statistics of every market (single-worker runs)."""
        return self.stats.snapshot_all(self.settings.stats_top_n, now_ms=now_ms)
