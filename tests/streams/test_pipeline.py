"""streams.pipeline and the runtime's writes: no record can stop a partition.

Every poison input of issue 10 goes through ``Processor.process`` in the middle
of a batch of good records: it must come out as a DLQ record with its reason,
and every other record of the batch must come out as if it were not there
(normalized output, Redis batch). Then the last-resort paths: whatever a
record raises in parse, encode, stats, candles or alerts is ``unprocessable``;
a record Redis refuses is isolated without dead-lettering anything during an
outage; market statistics saturate instead of overflowing the Avro long.
No broker and no Redis: the sink and the outbox are small fakes.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec
import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from schemas import dlq
from schemas.serde import SingleObjectCodec
from schemas.topics import H_RECEIVE_TS
from streams import metrics, pipeline
from streams import runtime as runtime_module
from streams.alerts import AlertConfig
from streams.dlq import DlqRecord
from streams.market_stats import (
    LONG_MAX,
    PARTIAL_JSON,
    MarketStats,
    PartialState,
    merge_partials,
)
from streams.native_parse import ParsePath
from streams.outbox import KafkaOutputError
from streams.parse import parse_record
from streams.pipeline import BatchResult, Processor, RawRecord
from streams.redis_sink import SinkBatch, WriteResult
from streams.runtime import StreamsRuntime
from streams.settings import StreamsSettings
from tests.feed_lines import bj_line, bse_line, sh_line, sse_line
from tests.kafka_utils import headers_dict
from tests.streams.stats_reference import recompute

#: the lines' own time: 2026-11-23 14:59:57 Asia/Shanghai (tests.feed_lines)
LINE_TS = 1_795_417_197_000
GOOD_CODES = ("000001", "000002", "600000", "600519", "300750")


def settings() -> StreamsSettings:
    return StreamsSettings(metrics_port=0, redis_retry_max_s=0.05)


def record(value: bytes, offset: int, key: bytes = b"000009") -> RawRecord:
    headers = [(H_RECEIVE_TS, str(LINE_TS).encode())]
    return RawRecord(key, value, headers, "raw", offset % 3, offset, LINE_TS)


def good_lines() -> list[bytes]:
    market = {"6": "sh"}
    return [sh_line(c, market=market.get(c[0], "sz")) for c in GOOD_CODES] + [bj_line("920819")]


def batch_around(poison: Sequence[bytes]) -> list[RawRecord]:
    """Good lines, the poison in the middle, good lines again (other stocks)."""
    good = good_lines()
    later = [sh_line(c, market="sz") for c in ("000004", "000005", "000006")]
    values = [*good, *poison, *later]
    return [record(v, i) for i, v in enumerate(values)]


def good_count(poison: Sequence[bytes]) -> int:
    return len(batch_around(poison)) - len(poison)


def process(records: list[RawRecord], processor: Processor | None = None) -> BatchResult:
    return asyncio.run((processor or Processor(settings())).process(records, None))


def reasons(result: BatchResult) -> dict[int, str]:
    """Source offset -> reason of each DLQ record."""
    out: dict[int, str] = {}
    for dead in result.dlq:
        h = headers_dict(dead.headers)
        out[int(h[dlq.SOURCE_OFFSET])] = h[dlq.REASON]
    return out


def assert_rest_processed(result: BatchResult, records: list[RawRecord], dead: set[int]) -> None:
    """Every record not dead-lettered is in the Redis batch and the normalized output."""
    alive = [parse_record(r.value, 0, 0)["code"] for r in records if r.offset not in dead]
    assert [q["code"] for q, _ in result.sink.quotes] == alive
    if result.sink.data is not None:
        assert [orjson.loads(d) for d in result.sink.data] == [q for q, _ in result.sink.quotes]
    normalized = [o for o in result.kafka if o.topic.endswith("hq.ticks.normalized")]
    assert len(normalized) == len(alive)
    codec = SingleObjectCodec("quote")
    for out, (quote, _) in zip(normalized, result.sink.quotes, strict=True):
        assert codec.decode(out.value) == quote
    dlq_out = [o for o in result.kafka if o.topic.endswith("hq.ticks.dlq")]
    assert sorted(v.value for v in dlq_out) == sorted(r.value for r in records if r.offset in dead)


# --------------------------------------------------------------------------- issue 10's inputs

ISSUE_POISON: list[tuple[str, list[bytes], str]] = [
    # decimal.InvalidOperation in the limit prices: crashed the agent of both workers
    ("prev-close-1e27", [sse_line(prev_close="1000000000000000000000000000.00")], "out_of_range"),
    ("price-1e308", [sse_line(price="1e308")], "out_of_range"),  # OverflowError in normalize
    ("amount-1e308", [sse_line(amount="1e308")], "out_of_range"),  # market stats
    # two quotes of themselves valid, whose merged market volume overflowed the Avro long
    (
        "two-volumes-near-9e18",
        [
            sh_line("000007").replace(b"$58342100$", b"$9000000000000000000$"),
            sh_line("000008").replace(b"$58342100$", b"$9000000000000000000$"),
        ],
        "out_of_range",
    ),
    # pinned the stock's Redis quote and the partition's candle clock to 2099
    ("dated-2099", [sse_line(symbol="sz000009", date="2099-01-01")], "future_timestamp"),
    (
        "bj-dated-2099",
        [bse_line(symbol="bj920001", timestamp=4_070_908_800_000)],
        "future_timestamp",
    ),
]


@pytest.mark.parametrize(
    ("poison", "reason"),
    [(p, why) for _, p, why in ISSUE_POISON],
    ids=[i for i, *_ in ISSUE_POISON],
)
def test_issue_poison_is_dead_lettered_and_the_batch_goes_on(
    poison: list[bytes], reason: str
) -> None:
    records = batch_around(poison)
    result = process(records)
    dead = {r.offset for r in records if r.value in poison}
    assert reasons(result) == dict.fromkeys(dead, reason)
    assert_rest_processed(result, records, dead)


#: the malformed kinds of issue 10's run, each with its reason (dead-lettered before too)
MALFORMED: list[tuple[str, bytes, str]] = [
    ("wrong-field-count", sse_line().rsplit(b"$", 1)[0], "wrong_field_count"),
    ("abc-price", sse_line(price="abc"), "not_a_number"),
    ("bad-symbol", sse_line(symbol="sx000001"), "bad_symbol"),
    ("negative-price", sse_line(price="-11.05"), "negative_value"),
    ("truncated-json", bse_line()[:25], "invalid_json"),
    ("feb-30", sse_line(date="2026-02-30"), "bad_datetime"),
    ("25-61-00", sse_line(time="25:61:00"), "bad_datetime"),
    ("high-below-low", sse_line(high="10.90", low="10.98"), "high_below_low"),
    ("not-utf8", b"sz000001$\xff\xfe" + sse_line()[21:], "invalid_utf8"),
    ("json-without-price", bse_line(drop="lastPrice"), "missing_field"),
]


@pytest.mark.parametrize(
    ("poison", "reason"), [(p, why) for _, p, why in MALFORMED], ids=[i for i, *_ in MALFORMED]
)
def test_malformed_record_is_dead_lettered_and_the_batch_goes_on(
    poison: bytes, reason: str
) -> None:
    records = batch_around([poison])
    result = process(records)
    dead = {r.offset for r in records if r.value == poison}
    assert reasons(result) == dict.fromkeys(dead, reason)
    assert_rest_processed(result, records, dead)


def test_every_poison_of_the_issue_in_one_batch() -> None:
    """All of them at once, between good records: one batch, every good record out."""
    poison = [line for _, lines, _ in ISSUE_POISON for line in lines]
    poison += [line for _, line, _ in MALFORMED]
    records = batch_around(poison)
    processor = Processor(settings())
    result = process(records, processor)
    expected = {line: why for _, lines, why in ISSUE_POISON for line in lines}
    expected.update({line: why for _, line, why in MALFORMED})
    assert reasons(result) == {r.offset: expected[r.value] for r in records if r.value in expected}
    assert_rest_processed(result, records, {r.offset for r in records if r.value in expected})
    # and the worker's state took the good records only: the clock is not in 2099
    assert processor.newest_ts == LINE_TS
    assert len(processor.stats) == good_count(poison)
    snapshots = processor.snapshots(LINE_TS)
    codec = SingleObjectCodec("market_stats")
    for snapshot in snapshots.values():
        codec.encode(snapshot)
    # the next batch is processed as usual
    again = process([record(sh_line("000001", price="11.06"), 100)], processor)
    assert len(again.sink.quotes) == 1 and again.dlq == []


def test_future_tolerance_is_a_setting_and_old_data_is_accepted() -> None:
    ahead = sse_line(symbol="sz000009", time="15:04:57")  # 5 min after its receive time
    late = sse_line(symbol="sz000010", date="2021-03-01")  # a replay of old data
    strict = Processor(StreamsSettings(metrics_port=0, max_ahead_s=60))
    result = process([record(ahead, 0), record(late, 1)], strict)
    assert reasons(result) == {0: "future_timestamp"}
    relaxed = Processor(StreamsSettings(metrics_port=0, max_ahead_s=600))
    assert process([record(ahead, 0), record(late, 1)], relaxed).dlq == []


# --------------------------------------------------------------------------- what no check foresaw


@pytest.mark.parametrize("path", ["python", "compiled"])
def test_an_unforeseen_parse_error_is_unprocessable(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison = sh_line("000009")

    def raise_on_poison(raw: bytes) -> None:
        if raw == poison:
            raise ZeroDivisionError("float division by zero")

    def parse_or_raise(raw: bytes, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise_on_poison(raw)
        return parse_record(raw, *args, **kwargs)

    def fast_or_raise(raw: bytes, *args: Any) -> None:
        raise_on_poison(raw)
        return None  # every other line: the Python path

    processor = Processor(settings().model_copy(update={"native": False}))
    if path == "python":
        monkeypatch.setattr(pipeline, "parse_record", parse_or_raise)
    else:
        processor.parse_path = ParsePath(fast_or_raise, "a compiled parse that raises")
    records = batch_around([poison])
    result = process(records, processor)
    (dead,) = result.dlq
    h = headers_dict(dead.headers)
    assert h[dlq.REASON] == "unprocessable"
    assert h[dlq.DETAIL].startswith("ZeroDivisionError: float division by zero")
    assert_rest_processed(result, records, {int(h[dlq.SOURCE_OFFSET])})


@pytest.mark.parametrize("step", ["stats", "candles", "alerts"])
def test_a_record_that_raises_in_the_aggregates_is_unprocessable(step: str) -> None:
    poison_code = "000009"
    processor = Processor(settings())
    target: Any = {"stats": processor.stats, "candles": processor.candles,
                   "alerts": processor.alerts}[step]  # fmt: skip
    original = target.update

    def update_or_raise(quote: dict[str, Any]) -> Any:
        if quote["code"] == poison_code:
            raise OverflowError("cannot convert float infinity to integer")
        return original(quote)

    target.update = update_or_raise
    poison = sh_line(poison_code)
    records = batch_around([poison])
    result = process(records, processor)
    (dead,) = result.dlq
    h = headers_dict(dead.headers)
    assert (h[dlq.REASON], h[dlq.DETAIL].split(":")[0]) == ("unprocessable", "OverflowError")
    assert_rest_processed(result, records, {int(h[dlq.SOURCE_OFFSET])})
    # the stock's half-updated state is gone, to be warmed up from Redis again
    assert poison_code not in processor.last_ts and poison_code not in processor.warmed
    assert processor.candles.current(poison_code) is None
    assert {c.code for c in result.sink.open_candles} == {q["code"] for q, _ in result.sink.quotes}
    assert len(processor.stats) == len(result.sink.quotes)


def test_market_stats_stay_consistent_when_a_quote_raises() -> None:
    q = parse_record(sse_line(), LINE_TS, LINE_TS)
    other = parse_record(sse_line(symbol="sz000002"), LINE_TS, LINE_TS)
    stats = MarketStats()
    stats.update(q)
    stats.update(other)
    with pytest.raises(OverflowError):
        stats.update({**q, "exchange_ts": q["exchange_ts"] + 1, "amount": float("inf")})
    # the stock is out of the books (the pipeline rewarms it from Redis), nothing else moved
    assert stats.snapshot_all(now_ms=0) == recompute([other], now_ms=0)
    fixed = {**q, "exchange_ts": q["exchange_ts"] + 2, "amount": 1.0}
    stats.update(fixed)
    assert stats.snapshot_all(now_ms=0) == recompute([other, fixed], now_ms=0)


def test_market_stats_saturate_instead_of_overflowing_the_avro_long() -> None:
    """Two quotes near 9e18 (say, stored in Redis before the bounds) cannot stop publishing."""
    stats = MarketStats()
    for code in ("000001", "000002", "600000"):
        q = parse_record(sh_line(code, market="sh" if code[0] == "6" else "sz"), LINE_TS, LINE_TS)
        stats.update({**q, "volume": 9_000_000_000_000_000_000, "amount": 9e16})
    codec = SingleObjectCodec("market_stats")
    records = stats.snapshot_all(now_ms=0)
    for snapshot in records.values():
        codec.decode(codec.encode(snapshot))
    assert records["ALL"]["volume"] == LONG_MAX
    partial = stats.partial_state(now_ms=0)
    other = msgspec.json.decode(PARTIAL_JSON.encode(partial), type=PartialState)  # read back
    merged = merge_partials([partial, other], now_ms=0)
    assert merged["SZ"]["volume"] == LONG_MAX
    for snapshot in merged.values():
        codec.encode(snapshot)


# --------------------------------------------------------------------------- the batch writes


class FakeSink:
    """A RedisSink stand-in: refuses batches holding ``refuse`` (a script error), or is down."""

    def __init__(self, refuse: str = "", down_for: int = 0) -> None:
        self.refuse = refuse
        self.down_for = down_for
        self.written: list[str] = []

    async def recent_ticks(self, codes: Sequence[str], window_ms: int) -> dict[str, list[Any]]:
        return {}

    async def stored_bars(self, codes: Sequence[str]) -> dict[str, dict[str, bytes]]:
        return {}

    async def answers(self, timeout_s: float) -> bool:
        """Whether the next write goes through (the runtime's PING while it waits)."""
        return not self.down_for

    async def write(self, batch: SinkBatch) -> WriteResult:
        if self.down_for:
            self.down_for -= 1
            raise RedisConnectionError("Connection refused")
        codes = [q["code"] for q, _ in batch.quotes]
        if self.refuse in codes:
            raise ResponseError("Error running script: user_script:1: bad argument")
        self.written += codes
        return WriteResult(len(codes), 0, 0, 0)


class FakeOutbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> None:
        self.sent.append((topic, value))

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


def runtime(
    sink: FakeSink | None = None,
    outbox: Any = None,
    latest_interval_s: float = 0.0,
    clock: Any = time.monotonic,
    quotes_first_ticks: int = 10_000,
    quotes_first_batch: int = 250,
    timer: Any = lambda: 0.0,
) -> StreamsRuntime:
    """A runtime whose batches send their latest quotes themselves, unless
    ``latest_interval_s`` says otherwise; ``timer`` measures what its slices of waiting
    work take (frozen: none is measured, each slice is sized as the last)."""
    sink = sink if sink is not None else FakeSink()
    outbox = outbox if outbox is not None else FakeOutbox()
    s = settings().model_copy(
        update={
            "latest_interval_s": latest_interval_s,
            "quotes_first_ticks": quotes_first_ticks,
            "quotes_first_batch": quotes_first_batch,
        }
    )
    return StreamsRuntime(s, sink, outbox, "unit", processor=Processor(s), clock=clock,  # type: ignore[arg-type]
                          timer=timer)  # fmt: skip


def test_a_record_redis_refuses_is_isolated_and_dead_lettered() -> None:
    sink, outbox = FakeSink(refuse="000009"), FakeOutbox()
    poison = sh_line("000009")
    records = batch_around([poison])
    result = asyncio.run(runtime(sink, outbox).handle(records))
    good = [parse_record(r.value, 0, 0)["code"] for r in records if r.value != poison]
    assert sink.written == good
    (dead,) = result.dlq
    assert isinstance(dead, DlqRecord) and dead.value == poison
    assert headers_dict(dead.headers)[dlq.REASON] == "unprocessable"
    assert ("hq.ticks.dlq", poison) in outbox.sent


def test_a_redis_outage_dead_letters_nothing() -> None:
    sink, outbox = FakeSink(down_for=3), FakeOutbox()
    records = batch_around([])
    result = asyncio.run(runtime(sink, outbox).handle(records))
    assert result.dlq == [] and len(sink.written) == len(records)
    assert not [t for t, _ in outbox.sent if t == "hq.ticks.dlq"]


class GatedOutbox:
    """Each flush delivers what it took when the test opens its gate, or fails it."""

    def __init__(self) -> None:
        self.queued: list[bytes] = []  # sent, not taken by a flush yet
        self.delivered: list[bytes] = []  # in the order the broker appended them
        self.gates: list[asyncio.Future[bool]] = []  # one per flush: True delivers
        self.open = False  # later flushes deliver at once

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> None:
        self.queued.append(value)

    async def flush(self) -> None:
        taken, self.queued = self.queued, []
        if not taken:
            return
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        if self.open:
            gate.set_result(True)
        if not await gate:
            raise KafkaOutputError("not delivered")
        self.delivered += taken

    async def close(self) -> None:
        return None

    async def flushes(self, n: int) -> None:
        """Wait until ``n`` flushes have started (5 s at most: a condition, not a pace)."""

        async def started() -> None:
            while len(self.gates) < n:
                await asyncio.sleep(0.001)

        await asyncio.wait_for(started(), 5)


class SlowSink(FakeSink):
    """Holds each write until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def write(self, batch: SinkBatch) -> WriteResult:
        await self.release.wait()
        return await super().write(batch)


def two_batches() -> tuple[list[RawRecord], list[RawRecord]]:
    first = [record(line, i) for i, line in enumerate(good_lines())]
    later = [sh_line(c, price="11.07", market="sh" if c[0] == "6" else "sz") for c in GOOD_CODES]
    return first, [record(line, len(first) + i) for i, line in enumerate(later)]


def test_a_batch_is_sent_to_kafka_before_the_previous_batch_is_in_redis() -> None:
    """A burst's last batch waited for the previous batch's Redis write (~150 ms for
    2,000 ticks) before its ticks left for the gateway; it no longer does."""

    async def run() -> None:
        sink, outbox = SlowSink(), GatedOutbox()
        outbox.open = True
        rt = runtime(sink, outbox)  # type: ignore[arg-type]
        first, second = two_batches()
        durable: list[int] = []
        done_first = await rt.submit(first, lambda: durable.append(1))
        later = asyncio.create_task(rt.submit(second, lambda: durable.append(2)))
        await outbox.flushes(2)  # the second batch's outputs delivered ...
        assert done_first is not None  # (no ``defer``: finished at once)
        one = [o.value for o in done_first.kafka]
        assert outbox.delivered[: len(one)] == one and len(outbox.delivered) > len(one)
        assert sink.written == [] and durable == []  # ... while the first waits for Redis
        sink.release.set()
        done_second = await later
        await rt.drain()
        assert durable == [1, 2] and done_second is not None
        assert outbox.delivered == one + [o.value for o in done_second.kafka]

    asyncio.run(run())


class StatsSink(FakeSink):
    """Keeps the stats partials; reading them waits until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.partials: dict[str, tuple[int, Any]] = {}
        self.reading = asyncio.Event()
        self.release = asyncio.Event()
        self.market: dict[str, Any] | None = None

    async def write_partial(self, worker_id: str, state: Any, now_ms: int) -> None:
        self.partials[worker_id] = (now_ms, state)

    async def read_partials(self) -> dict[str, tuple[int, Any]]:
        self.reading.set()
        await self.release.wait()
        return dict(self.partials)

    async def write_market(self, stats: dict[str, Any], now_ms: int) -> None:
        self.market = stats


def test_batches_go_on_while_the_market_stats_are_merged() -> None:
    """A stats round held the worker's lock through four Redis round trips and the
    produce, stalling the next batch 10-40 ms every second; only taking and
    storing the partial holds the batches up now."""

    async def run() -> None:
        sink, outbox = StatsSink(), FakeOutbox()
        rt = runtime(sink, outbox)  # type: ignore[arg-type]
        first, second = two_batches()
        await rt.handle(first)
        publishing = asyncio.create_task(rt.publish_stats())
        await asyncio.wait_for(sink.reading.wait(), 5)  # the partial is stored, being merged
        done = await asyncio.wait_for(rt.handle(second), 5)  # not stuck behind the merge
        assert len(done.sink.quotes) == len(second)
        assert sink.market is None and not publishing.done()
        sink.release.set()
        merged = await asyncio.wait_for(publishing, 5)
        assert merged is not None and sink.market == merged
        topic = rt.settings.topic_names.market_stats
        assert sum(1 for t, _ in outbox.sent if t == topic) == len(merged)

    asyncio.run(run())


class StatsRefusingOutbox(FakeOutbox):
    """Raises (not an outage) on the first flush holding a market-stats record."""

    def __init__(self, stats_topic: str) -> None:
        super().__init__()
        self.stats_topic = stats_topic
        self.refused = False

    async def flush(self) -> None:
        if not self.refused and any(t == self.stats_topic for t, _ in self.sent):
            self.refused = True
            raise RuntimeError("a bug in the outputs' producer")


def test_a_failed_stats_round_does_not_fail_the_next_batch() -> None:
    async def run() -> None:
        sink = StatsSink()
        sink.release.set()
        outbox = StatsRefusingOutbox(settings().topic_names.market_stats)
        rt = runtime(sink, outbox)  # type: ignore[arg-type]
        first, second = two_batches()
        await rt.handle(first)
        assert await rt.publish_stats() is not None  # merged; its records failed (logged)
        assert outbox.refused
        done = await asyncio.wait_for(rt.handle(second), 5)
        assert len(done.sink.quotes) == len(second)

    asyncio.run(run())


def test_unchanged_statistics_are_published_again_only_after_the_quiet_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At lunch and after the close nothing changes: the leader merged, encoded and
    wrote the same statistics every second. Now only every stats_quiet_interval_s,
    and at once when a quote changes them."""
    clock = [1_800_000_000_000]
    monkeypatch.setattr(runtime_module, "now_ms", lambda: clock[0])

    async def run() -> None:
        sink, outbox = StatsSink(), FakeOutbox()
        sink.release.set()
        rt = runtime(sink, outbox)  # type: ignore[arg-type]
        assert rt.settings.stats_quiet_interval_s == 10.0
        topic = rt.settings.topic_names.market_stats

        def published() -> int:
            return sum(1 for t, _ in outbox.sent if t == topic)

        await rt.handle(two_batches()[0])
        first = await rt.publish_stats()
        assert first is not None
        rounds = published()
        for _ in range(9):  # nine quiet seconds
            clock[0] += 1000
            assert await rt.publish_stats() is None
            assert sink.partials[rt.worker_id][0] == clock[0]  # its partial: still each round
        assert published() == rounds
        clock[0] += 1000  # ten seconds after: the same figures once more, with a new ts
        again = await rt.publish_stats()
        assert again is not None and published() == 2 * rounds
        assert {m: {**r, "ts": 0} for m, r in again.items()} == {
            m: {**r, "ts": 0} for m, r in first.items()
        }
        clock[0] += 1000  # a quote that changes them: published in its round
        later = sse_line(symbol=f"sz{GOOD_CODES[1]}", price="11.20", time="14:59:58")
        await rt.handle([record(later, 100, key=GOOD_CODES[1].encode())])
        changed = await rt.publish_stats()
        assert changed is not None and changed != again and sink.market == changed
        assert published() == 3 * rounds

    asyncio.run(run())


def test_a_stats_round_whose_records_failed_is_tried_again_next_round() -> None:
    async def run() -> None:
        sink = StatsSink()
        sink.release.set()
        outbox = StatsRefusingOutbox(settings().topic_names.market_stats)
        rt = runtime(sink, outbox)  # type: ignore[arg-type]
        await rt.handle(two_batches()[0])
        assert await rt.publish_stats() is not None
        assert outbox.refused  # that round's records failed: not counted as published
        assert await rt.publish_stats() is not None  # so the next round publishes them

    asyncio.run(run())


class StallingOutbox(GatedOutbox):
    """Refuses the first send (no metadata yet); the send after it waits for ``go``."""

    def __init__(self) -> None:
        super().__init__()
        self.open = True
        self.refuse = self.stall = True
        self.go = asyncio.Event()

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> None:
        if self.refuse:
            self.refuse = False
            raise KafkaOutputError("no metadata yet")
        if self.stall:
            self.stall = False
            await self.go.wait()
        await super().send(topic, key, value, headers)


def test_no_batch_goes_ahead_of_one_its_persist_has_yet_to_send() -> None:
    """A batch that could not be sent ahead is sent by its persist; the batch after it
    waits for that, or its ticks would precede older ones in their partition."""

    async def run() -> None:
        outbox = StallingOutbox()
        rt = runtime(FakeSink(), outbox)  # type: ignore[arg-type]
        first, second = two_batches()
        done_first = await rt.submit(first, lambda: None)
        later = asyncio.create_task(rt.submit(second, lambda: None))
        for _ in range(50):
            await asyncio.sleep(0)
        outbox.go.set()
        done_second = await later
        await rt.drain()
        assert done_first is not None and done_second is not None
        one = [o.value for o in done_first.kafka]
        assert outbox.delivered == one + [o.value for o in done_second.kafka]

    asyncio.run(asyncio.wait_for(run(), 10))


@pytest.mark.parametrize("quotes_first", [True, False])
def test_a_batch_sent_ahead_of_a_failed_one_is_sent_again_after_it(quotes_first: bool) -> None:
    """Kafka gets the batches in order even when one fails after the next was sent:
    the last record of every key (what a compacted topic keeps) is the newest. With
    quotes first, a batch's quotes and the rest of its outputs are two flushes."""

    async def run() -> None:
        outbox = GatedOutbox()
        rt = runtime(outbox=outbox)
        first, second = two_batches()
        durable: list[int] = []
        if quotes_first:  # both parsed and their quotes sent, then their rests
            await rt.submit(first, lambda: durable.append(1), defer=lambda: True)
            await rt.submit(second, lambda: durable.append(2), defer=lambda: True)
            done_first = await rt.finish_next()
            later = asyncio.create_task(rt.finish_next())
        else:
            done_first = await rt.submit(first, lambda: durable.append(1))
            later = asyncio.create_task(rt.submit(second, lambda: durable.append(2)))
        await outbox.flushes(4 if quotes_first else 2)  # both batches on their way
        outbox.open = True
        for gate in reversed(outbox.gates[1:]):  # the second is appended first,
            gate.set_result(True)
        outbox.gates[0].set_result(False)  # the first fails and is sent again
        done_second = await later
        await rt.drain()
        assert done_first is not None and done_second is not None
        one = [o.value for o in done_first.kafka]
        two = [o.value for o in done_second.kafka]
        assert durable == [1, 2]
        if quotes_first:  # flushes: its quotes (failed), the second's, its rest, the second's
            q1, q2 = len(done_first.sink.quotes), len(done_second.sink.quotes)
            assert outbox.delivered == two[q2:] + one[q1:] + two[:q2] + one + two
        else:
            assert outbox.delivered == two + one + two

    asyncio.run(asyncio.wait_for(run(), 10))


# --------------------------------------------------------------------------- quotes first


def three_batches() -> list[list[RawRecord]]:
    records = [record(line, i) for i, line in enumerate(good_lines())]
    return [records[0:2], records[2:4], records[4:]]


def test_a_burst_s_quotes_all_go_out_before_any_of_its_batches_is_derived() -> None:
    """While more input waits, a batch is parsed and its quotes sent; its statistics,
    candles, other outputs and Redis write wait, so the last line of a burst does not
    wait for the whole processing of the batches before it. Then all of it, in order."""

    async def run() -> None:
        sink, outbox = FakeSink(), FakeOutbox()
        rt = runtime(sink, outbox)
        normalized = rt.settings.topic_names.normalized
        batches = three_batches()
        acks: list[int] = []
        assert await rt.submit(batches[0], lambda: acks.append(1), defer=lambda: True) is None
        assert await rt.submit(batches[1], lambda: acks.append(2), defer=lambda: True) is None
        assert [t for t, _ in outbox.sent] == [normalized] * 4
        assert len(rt.processor.stats) == 0 and sink.written == [] and acks == []
        assert rt.waiting == 2 and metrics.TICKS_WAITING._value.get() == 4
        assert await rt.submit(batches[2], lambda: acks.append(3), defer=lambda: True) is None
        while rt.waiting:  # no more input: the agent finishes them, oldest first
            assert await rt.finish_next() is not None
        await rt.drain()
        assert acks == [1, 2, 3] and rt.waiting == 0 and metrics.TICKS_WAITING._value.get() == 0
        codes = [parse_record(r.value, 0)["code"] for batch in batches for r in batch]
        assert sink.written == codes and len(rt.processor.stats) == len(codes)
        topics = [t for t, _ in outbox.sent]
        assert topics[:6] == [normalized] * 6 and normalized not in topics[6:]
        assert len(topics) > 6  # the latest quotes, the bars' states

    asyncio.run(asyncio.wait_for(run(), 10))


def test_a_batch_no_input_waits_behind_goes_out_in_one_produce_request() -> None:
    """The steady feed's batches (nothing waits behind them, none before them) are finished
    at once, quotes and the rest in one flush: quotes first would double the requests."""

    async def run() -> None:
        outbox = GatedOutbox()
        outbox.open = True
        rt = runtime(outbox=outbox)
        first, second, third = three_batches()
        assert await rt.submit(first, lambda: None, defer=lambda: False) is not None
        assert len(outbox.gates) == 1  # quotes and the rest at once
        assert await rt.submit(second, lambda: None, defer=lambda: True) is None
        assert len(outbox.gates) == 2  # its quotes
        # while a batch waits, the next one's quotes go first too (one at a time after)
        assert await rt.submit(third, lambda: None, defer=lambda: False) is None
        assert len(outbox.gates) == 3 and rt.waiting == 2
        while rt.waiting:
            await rt.finish_next()
        await rt.drain()
        assert len(outbox.gates) == 5  # the rests of the second and the third

    asyncio.run(asyncio.wait_for(run(), 10))


@pytest.mark.parametrize(("least", "quotes_first"), [(3, True), (4, False), (0, False)])
def test_a_batch_as_large_as_a_burst_s_fetch_goes_quotes_first_with_nothing_behind_it(
    least: int, quotes_first: bool
) -> None:
    """A burst's first fetch may be parsed before its next one is handed over: at least
    ``quotes_first_batch`` records wait for no input to go quotes first (0: off)."""

    async def run() -> None:
        outbox = GatedOutbox()
        outbox.open = True
        rt = runtime(outbox=outbox, quotes_first_batch=least)
        batch = [record(line, i) for i, line in enumerate(good_lines()[:3])]
        result = await rt.submit(batch, lambda: None, defer=lambda: False)
        assert (result is None) is quotes_first
        assert rt.waiting == (1 if quotes_first else 0)
        assert len(outbox.gates) == 1  # its quotes alone, or quotes and the rest at once
        while rt.waiting:
            await rt.finish_next()
        await rt.drain()
        assert len(outbox.gates) == (2 if quotes_first else 1)

    asyncio.run(asyncio.wait_for(run(), 10))


def test_the_batches_waiting_are_held_until_no_batch_came_for_the_hold() -> None:
    """A burst's next fetch comes a window after the last: the batches waiting wait
    ``quotes_first_hold_ms`` after the newest began to wait, so their rest follows the
    burst's last fetch, not the first's hold."""

    async def run() -> None:
        now = [100.0]
        rt = runtime(clock=lambda: now[0])
        hold = rt.settings.quotes_first_hold_ms / 1000
        assert hold > 0 and rt.finish_wait_s() == 0.0  # nothing waits
        first, second, _ = three_batches()
        await rt.submit(first, lambda: None, defer=lambda: True)
        assert rt.finish_wait_s() == pytest.approx(hold)
        now[0] += hold / 2
        await rt.submit(second, lambda: None, defer=lambda: False)  # waits behind it
        assert rt.finish_wait_s() == pytest.approx(hold)  # the hold starts again
        now[0] += hold / 2  # the first has waited its hold: still held for the second
        assert rt.finish_wait_s() == pytest.approx(hold / 2)
        now[0] += hold / 2
        assert rt.finish_wait_s() == 0.0
        await rt.finish_next()
        assert rt.waiting == 1 and rt.finish_wait_s() == 0.0  # the rest goes on
        rt.settings = rt.settings.model_copy(update={"quotes_first_hold_ms": 0.0})
        assert rt.finish_wait_s() == 0.0
        await rt.finish_next()
        await rt.drain()

    asyncio.run(asyncio.wait_for(run(), 10))


def test_while_input_keeps_coming_a_batch_s_rest_waits_at_most_the_max_wait() -> None:
    """A steady feed on a slow host always has input waiting: once the oldest batch
    waited ``quotes_first_max_wait_ms``, each batch parsed is followed by twice its
    ticks of the batches waiting, oldest first, until none waits; then a batch with
    nothing behind it is finished at once again."""

    async def run() -> None:
        now = [0.0]
        sink = FakeSink()
        rt = runtime(sink, clock=lambda: now[0])
        most = rt.settings.quotes_first_max_wait_ms / 1000
        assert most > 0
        acks: list[int] = []
        records = [record(line, i) for i, line in enumerate(good_lines())]
        codes = [parse_record(r.value, 0)["code"] for r in records]

        async def submit(n: int) -> BatchResult | None:
            result = await rt.submit([records[n]], functools.partial(acks.append, n),
                                     defer=lambda: True)  # fmt: skip
            await rt.catch_up(1)
            return result

        for n in range(3):  # each a third of the most later: none has waited it yet
            assert await submit(n) is None
            now[0] += most / 3
        assert rt.waiting == 3 and len(rt.processor.stats) == 0
        catch_ups = metrics.CATCH_UPS._value.get()
        now[0] = most  # (exactly: the first came at 0)
        await submit(3)  # the oldest has waited the most: two ticks of the oldest finished
        assert len(rt.processor.stats) == 2 and rt.waiting == 2
        assert rt.finish_wait_s() == 0.0  # not held for the newest (just come) while catching up
        now[0] += most / 3
        await submit(4)
        assert len(rt.processor.stats) == 4 and rt.waiting == 1
        await submit(5)  # caught up: none waits
        assert len(rt.processor.stats) == 6 and rt.waiting == 0
        assert metrics.CATCH_UPS._value.get() == catch_ups + 1  # one catch-up, counted once
        await rt.drain()
        assert sink.written == codes and acks == list(range(6))
        # caught up, a batch with nothing behind it is finished at once, as before
        again = [record(good_lines()[0], 6)]
        assert await rt.submit(again, lambda: None, defer=lambda: False) is not None
        await rt.catch_up(1)
        assert rt.waiting == 0
        await rt.drain()

    asyncio.run(asyncio.wait_for(run(), 10))


def test_without_a_max_wait_the_batches_wait_for_the_input_to_stop() -> None:
    async def run() -> None:
        now = [100.0]
        sink = FakeSink()
        rt = runtime(sink, clock=lambda: now[0])
        rt.settings = rt.settings.model_copy(update={"quotes_first_max_wait_ms": 0.0})
        for n, line in enumerate(good_lines()):
            await rt.submit([record(line, n)], lambda: None, defer=lambda: True)
            await rt.catch_up(1)
            now[0] += 10.0
        assert rt.waiting == len(good_lines()) and sink.written == []
        while rt.waiting:
            await rt.finish_next()
        await rt.drain()

    asyncio.run(asyncio.wait_for(run(), 10))


def test_the_batches_waiting_are_finished_one_at_a_time_oldest_first() -> None:
    """The agent finishes one batch whenever no input waits, so a burst's next batch is
    parsed after one batch's rest, not after every batch's."""

    async def run() -> None:
        sink = FakeSink()
        rt = runtime(sink)
        acks: list[int] = []
        batches = three_batches()
        for n, batch in enumerate(batches[:2], 1):
            await rt.submit(batch, functools.partial(acks.append, n), defer=lambda: True)
        first = await rt.finish_next()
        assert first is not None and [r.offset for r in first.sources] == [0, 1]
        assert rt.waiting == 1 and len(sink.written) == 2
        await rt.submit(batches[2], functools.partial(acks.append, 3), defer=lambda: True)
        assert rt.waiting == 2
        while rt.waiting:
            await rt.finish_next()
        assert await rt.finish_next() is None
        await rt.drain()
        assert acks == [1, 2, 3] and len(sink.written) == 6

    asyncio.run(asyncio.wait_for(run(), 10))


def test_a_waiting_batch_is_finished_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Input that comes while a big batch is finished waits for one slice of it, not the
    whole (a minute's closes: ~300 µs a tick); the batch is acked with its last slice."""
    monkeypatch.setattr(runtime_module, "FINISH_SLICE", 2)

    async def run() -> None:
        sink, outbox = FakeSink(), FakeOutbox()
        rt = runtime(sink, outbox)
        normalized = rt.settings.topic_names.normalized
        records = [record(line, i) for i, line in enumerate(good_lines())]
        first, second = records[:5], records[5:]
        acks: list[int] = []
        assert await rt.submit(first, lambda: acks.append(1), defer=lambda: True) is None
        part = await rt.finish_next()
        assert part is not None and [r.offset for r in part.sources] == [0, 1]
        assert part.n_in == 5 and rt.waiting == 1 and metrics.TICKS_WAITING._value.get() == 3
        assert len(sink.written) == 2 and acks == []  # durable, but the batch is not yet
        assert await rt.submit(second, lambda: acks.append(2), defer=lambda: True) is None
        assert [t for t, _ in outbox.sent].count(normalized) == 6  # before the first's rest
        results = [part]
        while rt.waiting:
            results.append(await rt.finish_next())
        await rt.drain()
        assert acks == [1, 2] and metrics.TICKS_WAITING._value.get() == 0
        outputs = Counter((o.topic, o.value) for r in results if r is not None for o in r.kafka)
        assert not outputs - Counter(outbox.sent)  # every output of every slice went out
        codes = [parse_record(r.value, 0)["code"] for r in records]
        assert sink.written == codes and len(rt.processor.stats) == len(codes)
        assert [t for t, _ in outbox.sent].count(normalized) == 6  # each quote once

    asyncio.run(asyncio.wait_for(run(), 10))


def test_the_slices_of_a_batch_whose_quotes_failed_send_them_again_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The slices share their batch's quotes' flush: when it fails, each slice sends its
    own quotes again, after the slices before it (the newest record of a key is last)."""
    monkeypatch.setattr(runtime_module, "FINISH_SLICE", 2)

    async def run() -> None:
        outbox = GatedOutbox()
        rt = runtime(outbox=outbox)
        batch = [record(line, i) for i, line in enumerate(good_lines()[:5])]
        durable: list[int] = []
        assert await rt.submit(batch, lambda: durable.append(1), defer=lambda: True) is None
        slices = [await rt.finish_next()]

        async def the_rest() -> None:
            while rt.waiting:
                slices.append(await rt.finish_next())

        later = asyncio.create_task(the_rest())
        await outbox.flushes(3)  # the quotes, the first slice's rest, the second's
        outbox.open = True
        for gate in reversed(outbox.gates[1:]):
            gate.set_result(True)
        outbox.gates[0].set_result(False)  # the quotes are not delivered
        await later
        await rt.drain()
        assert durable == [1] and len(slices) == 3
        every = [o.value for result in slices if result is not None for o in result.kafka]
        assert len(every) == 5 + 5  # (normalized, latest) of each quote
        last = {value: i for i, value in enumerate(outbox.delivered)}
        assert all(value in last for value in every)  # every quote delivered after all
        newest_last = sorted(dict.fromkeys(every), key=last.__getitem__)
        assert newest_last == list(dict.fromkeys(every))  # the slices' outputs in order

    asyncio.run(asyncio.wait_for(run(), 10))


def test_the_slices_of_a_batch_whose_quotes_could_not_go_first_each_send_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch whose quotes were not sent at its parse (no metadata yet) is sent by its
    slices' persists; then the next batch's quotes go first again."""
    monkeypatch.setattr(runtime_module, "FINISH_SLICE", 2)

    async def run() -> None:
        outbox = StallingOutbox()
        outbox.stall = False
        rt = runtime(FakeSink(), outbox)  # type: ignore[arg-type]
        records = [record(line, i) for i, line in enumerate(good_lines())]
        acks: list[int] = []
        assert await rt.submit(records[:5], lambda: acks.append(1), defer=lambda: True) is None
        while rt.waiting:
            await rt.finish_next()
        await rt.drain()
        assert acks == [1] and len(outbox.delivered) == 10  # (normalized, latest) x 5
        assert await rt.submit(records[5:], lambda: acks.append(2), defer=lambda: True) is None
        for _ in range(20):
            await asyncio.sleep(0)
        assert rt.waiting == 1 and len(outbox.delivered) == 11  # its quote went first
        await rt.drain()
        assert acks == [1, 2] and len(outbox.delivered) == 12

    asyncio.run(asyncio.wait_for(run(), 10))


def minute_lines(codes: Sequence[str], time_of_day: str) -> list[bytes]:
    return [sse_line(symbol=f"sz{code}", time=time_of_day) for code in codes]


class TimedFinish:
    """Wraps a processor's finish: records the ticks of each (slice of a) batch finished
    and moves :attr:`now` on by ``each_s`` a call, what it took."""

    def __init__(self, processor: Processor, each_s: float, events: list[str]) -> None:
        self.now, self.each_s, self.events = 0.0, each_s, events
        self._finish = processor.finish

    async def __call__(self, p: Any, *args: Any, **kwargs: Any) -> BatchResult:
        self.events.append(f"finish {len(p)}")
        self.now += self.each_s
        result: BatchResult = await self._finish(p, *args, **kwargs)
        return result


def test_a_slice_holds_the_ticks_that_fit_its_time_a_closing_one_costing_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tick that closes its stock's candle costs several plain ones: a minute's first
    snapshot, sliced by ticks, held the parse of new input ~0.4 s on a slow host. A
    slice holds the ticks that fit ``finish_slice_ms``, each costed as measured."""

    async def run() -> None:
        events: list[str] = []
        rt = runtime()
        rt.settings = rt.settings.model_copy(update={"finish_slice_ms": 10.0})
        timed = TimedFinish(rt.processor, 0.004, events)
        monkeypatch.setattr(rt.processor, "finish", timed)
        rt._timer = lambda: timed.now
        opened, new = ("000011", "000012", "000013"), ("000021", "000022", "000023", "000024")
        first = minute_lines(opened, "14:58:57")
        await rt.handle([record(line, i) for i, line in enumerate(first)])
        events.clear()
        rt.tick_cost.plain_s, rt.tick_cost.closing_s = 0.001, 0.004
        lines = minute_lines(opened, "14:59:03") + minute_lines(new, "14:59:03")
        acks: list[int] = []
        batch = [record(line, 10 + i) for i, line in enumerate(lines)]
        assert await rt.submit(batch, lambda: acks.append(1), defer=lambda: True) is None
        assert rt.processor.closing(rt._pending[0].parsed, 7) == [True] * 3 + [False] * 4
        await rt.finish_next()  # 4 + 4 ms fit 10, a third closing tick does not
        assert events == ["finish 2"] and rt.waiting == 1 and acks == []
        # the two took 4 ms: 2 ms each, and the estimate moves a third of the way there
        assert rt.tick_cost.closing_s == pytest.approx(0.004 + 0.3 * (0.002 - 0.004))
        await rt.finish_next()  # 3.4 + 4 x 1 ms: the rest fits
        assert events == ["finish 2", "finish 5"] and rt.waiting == 0
        await rt.drain()
        assert acks == [1] and len(rt.processor.stats) == 7

    asyncio.run(asyncio.wait_for(run(), 10))


def test_a_catch_up_finishes_twice_a_batch_s_ticks_or_a_slice_s_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twice a batch's closing ticks starved the parse of new input on a slow host: the
    catch-up stops once it took a slice's time (at least one slice); with
    ``finish_slice_ms`` 0 it goes by ticks only, as before."""
    monkeypatch.setattr(runtime_module, "FINISH_SLICE", 2)

    async def run(slice_ms: float) -> list[str]:
        events: list[str] = []
        rt = runtime(clock=lambda: 100.0)
        rt.settings = rt.settings.model_copy(update={"finish_slice_ms": slice_ms})
        timed = TimedFinish(rt.processor, 0.015, events)
        monkeypatch.setattr(rt.processor, "finish", timed)
        rt._timer = lambda: timed.now
        records = [record(line, i) for i, line in enumerate(good_lines())]
        await rt.submit(records[:5], lambda: None, defer=lambda: True)
        rt._pending[0].waiting_since = 0.0  # it waited its most
        await rt.submit(records[5:], lambda: None, defer=lambda: True)
        await rt.catch_up(5)
        finished = list(events)
        while rt.waiting:
            await rt.finish_next()
        await rt.drain()
        return finished

    assert asyncio.run(asyncio.wait_for(run(20.0), 10)) == ["finish 2", "finish 2"]  # 30 ms
    by_ticks = asyncio.run(asyncio.wait_for(run(0.0), 10))
    assert by_ticks == ["finish 2", "finish 2", "finish 1", "finish 1"]  # all, up to 10 ticks


def test_the_candle_timer_finishes_the_batches_waiting_a_slice_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The timer gives way to the batches waiting for one round; the next finishes them
    a slice at a time, not all at once: input that comes meanwhile is parsed between
    two slices (all at once, they held the parse for seconds at a minute's close)."""
    monkeypatch.setattr(runtime_module, "FINISH_SLICE", 2)

    async def run() -> None:
        events: list[str] = []
        rt = runtime()
        monkeypatch.setattr(rt.processor, "finish", TimedFinish(rt.processor, 0.0, events))
        parse_batch = rt.processor.parse_batch

        async def recording_parse(*args: Any) -> Any:
            events.append("parse")
            return await parse_batch(*args)

        monkeypatch.setattr(rt.processor, "parse_batch", recording_parse)
        records = [record(line, i) for i, line in enumerate(good_lines())]
        acks: list[int] = []
        await rt.submit(records[:5], lambda: acks.append(1), defer=lambda: True)
        assert await rt.flush_candles() == 0 and rt.waiting == 1  # gave way, once
        timer = asyncio.create_task(rt.flush_candles())
        await asyncio.sleep(0)  # it takes the worker
        await rt.submit(records[5:], lambda: acks.append(2), defer=lambda: True)
        await timer
        assert events == ["parse", "finish 2", "parse", "finish 2", "finish 1", "finish 1"]
        await rt.drain()
        assert acks == [1, 2]

    asyncio.run(asyncio.wait_for(run(), 10))


def test_a_batch_is_derived_while_the_one_before_is_written_not_two() -> None:
    """Two persists may be queued: the next batch (or slice) is derived and its outputs
    sent while the one before is written, not after (that held the parse ~RTT a slice
    at a minute's close on a slow host); a third waits. Redis gets them in order."""

    async def run() -> None:
        sink = SlowSink()
        rt = runtime(sink)
        records = [record(line, i) for i, line in enumerate(good_lines())]
        acks: list[int] = []
        for n, part in enumerate((records[:2], records[2:4]), 1):
            assert await rt.submit(part, functools.partial(acks.append, n)) is not None
        assert sink.written == [] and acks == []  # both derived, neither written yet
        third = asyncio.create_task(rt.submit(records[4:], functools.partial(acks.append, 3)))
        for _ in range(50):
            await asyncio.sleep(0)
        assert not third.done()  # waits for the first to be written
        sink.release.set()
        await third
        await rt.drain()
        codes = [parse_record(r.value, 0)["code"] for r in records]
        assert sink.written == codes and acks == [1, 2, 3]

    asyncio.run(asyncio.wait_for(run(), 10))


def test_while_the_worker_catches_up_the_candle_timer_leaves_the_batches_to_it() -> None:
    """A catch-up finishes the batches waiting as input comes: the timer gives way every
    round meanwhile, rather than take the worker from the parse one slice in two."""

    async def run() -> None:
        now = [0.0]
        rt = runtime(clock=lambda: now[0])
        records = [record(line, i) for i, line in enumerate(good_lines())]
        await rt.submit(records[:5], lambda: None, defer=lambda: True)
        now[0] = 10.0  # it waited its most
        await rt.submit(records[5:], lambda: None, defer=lambda: True)
        rt.settings = rt.settings.model_copy(update={"finish_slice_ms": 0.0})
        await rt.catch_up(0)  # catching up, nothing finished yet
        assert rt.waiting == 2
        for _ in range(3):
            assert await rt.flush_candles() == 0 and rt.waiting == 2
        await rt.catch_up(2)  # 4 ticks: the first batch (5, one slice)
        assert rt.waiting == 1
        await rt.catch_up(1)  # caught up: the timer finishes what waits again (none)
        assert rt.waiting == 0
        await rt.flush_candles()
        await rt.drain()

    asyncio.run(asyncio.wait_for(run(), 10))


def test_no_more_than_quotes_first_ticks_wait_for_the_rest() -> None:
    """A backlog (more input all the time) is finished every ``quotes_first_ticks``."""

    async def run() -> None:
        sink = FakeSink()
        rt = runtime(sink, quotes_first_ticks=3)
        batches = three_batches()
        acks: list[int] = []
        assert await rt.submit(batches[0], lambda: acks.append(1), defer=lambda: True) is None
        assert await rt.submit(batches[1], lambda: acks.append(2), defer=lambda: True) is not None
        assert rt.waiting == 0 and len(sink.written) == 4
        off = runtime(FakeSink(), quotes_first_ticks=0)  # every batch finished at once
        assert await off.submit(batches[2], lambda: acks.append(3), defer=lambda: True) is not None
        await rt.drain()
        await off.drain()
        assert acks == [1, 2, 3]

    asyncio.run(asyncio.wait_for(run(), 10))


def test_a_rebalance_finishes_the_batches_waiting_and_gets_their_acks() -> None:
    """What takes the worker next (a timer's round, a rebalance, a stop) first
    finishes the batches whose rest waits: faust then commits them."""

    async def run() -> None:
        sink = FakeSink()
        rt = runtime(sink)
        acks: list[int] = []
        batches = three_batches()
        await rt.submit(batches[0], lambda: acks.append(1), defer=lambda: True)
        await rt.submit(batches[1], lambda: acks.append(2), defer=lambda: True)
        await rt.hand_over_acks()
        assert acks == [1, 2] and len(sink.written) == 4 and rt.waiting == 0

    asyncio.run(asyncio.wait_for(run(), 10))


def test_a_published_quote_whose_aggregates_raise_is_dead_lettered_and_kept() -> None:
    """Its quote went out before its statistics were derived: it stays published and
    stored (as sent), is dead-lettered ``unprocessable``, and its stock's state is
    forgotten, as when the quote had not been sent."""
    poison_code = "000009"
    processor = Processor(settings())
    original = processor.stats.update

    def update_or_raise(quote: dict[str, Any]) -> Any:
        if quote["code"] == poison_code:
            raise OverflowError("cannot convert float infinity to integer")
        return original(quote)

    processor.stats.update = update_or_raise  # type: ignore[method-assign]
    records = batch_around([sh_line(poison_code)])

    async def run() -> BatchResult:
        parsed = await processor.parse_batch(records)
        return await processor.finish(parsed, None, published=True)

    result = asyncio.run(run())
    (dead,) = result.dlq
    assert headers_dict(dead.headers)[dlq.REASON] == "unprocessable"
    assert [q["code"] for q, _ in result.sink.quotes].count(poison_code) == 1
    normalized = [o for o in result.kafka if o.topic.endswith("hq.ticks.normalized")]
    assert len(normalized) == len(records)
    assert poison_code not in processor.last_ts and processor.candles.current(poison_code) is None


def test_a_stored_tick_that_raises_does_not_stop_the_warm_up() -> None:
    """Redis may hold ticks stored before a check refused them: they cannot stop a batch."""
    good = parse_record(sh_line("000001"), LINE_TS, LINE_TS)
    broken = {**parse_record(sh_line("000002"), LINE_TS, LINE_TS), "amount": float("inf")}

    class History(FakeSink):
        async def recent_ticks(self, codes: Sequence[str], window_ms: int) -> dict[str, list[Any]]:
            return {"000001": [{**good, "exchange_ts": LINE_TS - 3000}],
                    "000002": [{**broken, "exchange_ts": LINE_TS - 3000}]}  # fmt: skip

    processor = Processor(settings())
    records = [record(sh_line("000001"), 0), record(sh_line("000002"), 1)]
    result = asyncio.run(processor.process(records, History()))  # type: ignore[arg-type]
    assert result.dlq == [] and len(result.sink.quotes) == 2
    assert len(processor.stats) == 2 and processor.warmed >= {"000001", "000002"}


def test_the_warm_up_replays_the_alert_windows_and_no_more() -> None:
    """A worker replays each stock it takes over before that stock's first batch: as much
    as the alert windows look back (the open candle's minute is within them), and no
    more, since every extra second is paid by every stock of a failover."""
    config = AlertConfig()
    needed_s = max(config.fast_move_window_s, config.volume_window_s)
    assert StreamsSettings(metrics_port=0).warmup_window_s == needed_s


class Rebalanced(FakeSink):
    """A sink that records which stocks each warm-up asked for, with no stored state."""

    def __init__(self) -> None:
        super().__init__()
        self.warmed_up: list[set[str]] = []

    async def recent_ticks(self, codes: Sequence[str], window_ms: int) -> dict[str, list[Any]]:
        self.warmed_up.append(set(codes))
        return {}

    async def latest_quotes(self) -> list[tuple[Any, int]]:
        return []

    async def feed_winners(self, partitions: Sequence[int]) -> dict[int, dict[str, Any]]:
        return {p: {} for p in partitions}

    async def write_partial(self, worker_id: str, state: Any, now_ms: int) -> None:
        return None


def test_a_rebalance_warms_up_only_the_stocks_that_moved() -> None:
    """Partitions revoked and given back in the next generation keep their stocks'
    candles and alerts (nobody else had them); only the others are warmed up again.
    Before, every rebalance reset the whole worker: a survivor taking over half the
    market late in the day replayed all 5,000 stocks' windows, not 2,500."""
    sink = Rebalanced()
    # the feed never counts as quiet here: the timer closes no candle on the wall clock
    s = StreamsSettings(metrics_port=0, redis_retry_max_s=0.05, candle_quiet_s=3600)
    processor = Processor(s)
    rt = StreamsRuntime(s, sink, FakeOutbox(), "unit", processor=processor)  # type: ignore[arg-type]
    lines = good_lines()  # record(line, i) puts stock i on partition i % 3
    by_partition = {
        p: {parse_record(v, 0)["code"] for i, v in enumerate(lines) if i % 3 == p} for p in range(3)
    }

    async def scenario() -> None:
        rt.on_assigned({0, 1, 2}, generation=1)
        await rt.handle([record(v, i) for i, v in enumerate(lines)])
        assert sink.warmed_up == [set().union(*by_partition.values())]
        open_candles = processor.candles.open_count()

        # partition 2 moves away; 0 and 1 come back in the next generation
        await rt.on_revoked({0, 1, 2})
        far = LINE_TS + 3_600_000
        assert processor.flush_candles(far, 0) == []  # revoked: no candle closes meanwhile
        assert len(processor.stats) == 0  # nor does this worker's partial count them
        rt.on_assigned({0, 1}, generation=2)
        await rt.flush_candles()  # no tick yet (lunch): the timer seeds the assignment
        assert processor.paused == set()
        kept = [record(v, i) for i, v in enumerate(lines) if i % 3 != 2]
        await rt.handle(kept)
        assert len(sink.warmed_up) == 1  # nothing warmed up again
        assert set(processor.partition_of) == by_partition[0] | by_partition[1]
        assert processor.candles.open_count() == open_candles - len(by_partition[2])

        # revoked in generation 2, given back in 4: another worker may have had them
        await rt.on_revoked({0, 1})
        rt.on_assigned({0, 1}, generation=4)
        await rt.handle(kept)
        assert sink.warmed_up[1:] == [by_partition[0] | by_partition[1]]

    asyncio.run(scenario())


def test_a_stock_warmed_up_on_replays_alone_leaves_with_its_partition() -> None:
    """A takeover whose first ticks of a stock are all replays (Redis already holds
    newer ones) still learns that stock's partition: when the partition moves away
    while the others stay, its warmed-up state goes too, so the next time it comes
    back it is warmed up again rather than taken for warm (CI saw alerts differ)."""

    class Ahead(Rebalanced):
        async def recent_ticks(self, codes: Sequence[str], window_ms: int) -> dict[str, list[Any]]:
            await super().recent_ticks(codes, window_ms)
            ahead = {**parse_record(sh_line("000001"), 0), "exchange_ts": LINE_TS + 60_000}
            return {c: [{**ahead, "code": c}] for c in codes}

    sink = Ahead()
    s = StreamsSettings(metrics_port=0, redis_retry_max_s=0.05, candle_quiet_s=3600)
    processor = Processor(s)
    rt = StreamsRuntime(s, sink, FakeOutbox(), "unit", processor=processor)  # type: ignore[arg-type]
    lines = good_lines()  # record(line, i) puts stock i on partition i % 3
    moved = {parse_record(v, 0)["code"] for i, v in enumerate(lines) if i % 3 == 2}

    async def scenario() -> None:
        rt.on_assigned({0, 1, 2}, generation=1)
        await rt.handle([record(v, i) for i, v in enumerate(lines)])  # every tick a replay
        await rt.on_revoked({0, 1, 2})
        rt.on_assigned({0, 1}, generation=2)  # 0 and 1 kept, 2 moves away
        await rt.flush_candles()
        assert not moved & (processor.warmed | set(processor.last_ts))
        await rt.on_revoked({0, 1})
        rt.on_assigned({0, 1, 2}, generation=3)  # 2 comes back: warmed up again
        await rt.handle([record(v, i) for i, v in enumerate(lines) if i % 3 == 2])
        assert sink.warmed_up[-1] == moved

    asyncio.run(scenario())


def test_a_candle_or_alert_that_cannot_be_encoded_does_not_stop_the_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    processor = Processor(settings())
    first = [record(sh_line(c, price="11.00"), i) for i, c in enumerate(("000001", "000002"))]
    process(first, processor)

    def refuse(record: dict[str, Any]) -> bytes:
        raise ValueError(f"cannot encode {record['code']}")

    for codec in processor.bar_codecs.values():  # every timeframe's
        codec.encode = refuse  # type: ignore[method-assign]
    processor.alert_codec.encode = refuse  # type: ignore[method-assign]
    # a minute later (closes the candles) and 10% up (a limit-up touch: an alert)
    later = sse_line(price="12.10", high="12.10", time="15:00:57")  # sz000001
    records = [record(later, 10), record(sh_line("000003"), 11)]
    result = process(records, processor)
    assert result.dlq == [] and len(result.sink.quotes) == 2
    assert result.sink.alerts and any(c["closed"] for c in result.sink.candles)
    produced = {o.topic for o in [*result.kafka, *result.latest]}
    # the bar series' state is JSON, not Avro: it still goes out
    assert produced == {"hq.ticks.normalized", "hq.quotes.latest", "hq.bars.state"}, produced
    assert "cannot be encoded" in caplog.text


def test_the_latest_topic_gets_each_stocks_newest_quote_once_per_batch() -> None:
    """hq.quotes.latest keeps the last record of a key: it must never be an older tick."""
    processor = Processor(settings())
    codec = SingleObjectCodec("quote")
    first = [record(sse_line(time="14:59:50"), 0), record(sse_line(time="14:59:53"), 1),
             record(sse_line(symbol="sz000002", time="14:59:50"), 2)]  # fmt: skip
    result = process(first, processor)
    assert {o.topic for o in result.latest} == {"hq.quotes.latest"}
    latest = {o.key: codec.decode(o.value)["exchange_ts"] for o in result.latest}
    newest = processor.last_ts
    assert latest == {b"000001": newest["000001"], b"000002": newest["000002"]}
    # a replay of the older tick (at-least-once) and a tick of the past: nothing newer
    again = process([record(sse_line(time="14:59:50"), 0)], processor)
    assert again.latest == []
    assert [o.topic for o in again.kafka] == ["hq.ticks.normalized"]


# --------------------------------------------------------------------------- hq.quotes.latest


def ticks_at(exchange_time: str, offset: int) -> list[RawRecord]:
    """Stocks 000001 and 000002 at ``exchange_time`` (of the lines' day)."""
    codes = ("000001", "000002")
    return [record(sse_line(symbol=f"sz{c}", time=exchange_time), offset + i, c.encode())
            for i, c in enumerate(codes)]  # fmt: skip


def latest_sent(outbox: FakeOutbox) -> list[tuple[str, str]]:
    """(code, exchange time) of each hq.quotes.latest record, in the order sent."""
    codec = SingleObjectCodec("quote")
    quotes = [codec.decode(v) for t, v in outbox.sent if t == "hq.quotes.latest"]
    return [(q["code"], time.strftime("%H:%M:%S", time.gmtime(q["exchange_ts"] // 1000 + 8 * 3600)))
            for q in quotes]  # fmt: skip


def test_the_latest_quotes_go_once_an_interval_and_the_acks_wait_for_them() -> None:
    """Each batch's newest quotes are not a produce request of their own: they wait
    for the interval, newer ones replacing older ones, and the batches in between
    are acked only once they are delivered (a crash before replays them)."""

    async def run() -> None:
        now = [100.0]
        outbox = FakeOutbox()
        rt = runtime(FakeSink(), outbox, latest_interval_s=1.0, clock=lambda: now[0])
        acks: list[int] = []
        await rt.submit(ticks_at("14:59:50", 0), lambda: acks.append(1))  # due: sent with it
        now[0] += 0.4
        await rt.submit(ticks_at("14:59:53", 2), lambda: acks.append(2))
        now[0] += 0.4
        await rt.submit(ticks_at("14:59:56", 4), lambda: acks.append(3))  # after 2 is durable
        assert latest_sent(outbox) == [("000001", "14:59:50"), ("000002", "14:59:50")]
        assert acks == [1]  # 2 is in Redis and on the normalized topic, its latest waits
        await rt.flush_latest()  # the timer, 0.8 s after: not yet
        assert acks == [1] and len(latest_sent(outbox)) == 2
        now[0] += 0.3
        await rt.flush_latest()  # 1.1 s after: the newest of each stock, once
        assert latest_sent(outbox)[2:] == [("000001", "14:59:56"), ("000002", "14:59:56")]
        assert acks == [1, 2, 3]

    asyncio.run(asyncio.wait_for(run(), 10))


def test_a_batch_after_the_interval_takes_the_latest_quotes_along() -> None:
    async def run() -> None:
        now = [100.0]
        outbox = FakeOutbox()
        rt = runtime(FakeSink(), outbox, latest_interval_s=1.0, clock=lambda: now[0])
        acks: list[int] = []
        await rt.submit(ticks_at("14:59:50", 0), lambda: acks.append(1))
        now[0] += 0.5
        await rt.submit(ticks_at("14:59:53", 2), lambda: acks.append(2))
        now[0] += 0.6
        third = await rt.submit(ticks_at("14:59:56", 4), lambda: acks.append(3))
        assert third is not None
        assert [o.topic for o in third.kafka].count("hq.quotes.latest") == 2
        now[0] += 0.1
        await rt.submit(ticks_at("14:59:59", 6), lambda: acks.append(4))  # after 3 is durable
        assert acks == [1, 2, 3]
        assert latest_sent(outbox) == [("000001", "14:59:50"), ("000002", "14:59:50"),
                                       ("000001", "14:59:56"), ("000002", "14:59:56")]  # fmt: skip

    asyncio.run(asyncio.wait_for(run(), 10))


def test_a_rebalance_gets_every_ack_at_once() -> None:
    """faust waits for the acks of every batch taken before it gives partitions away:
    the worker sends the latest quotes at once, and holds no ack until reassigned."""

    async def run() -> None:
        now = [100.0]
        outbox = FakeOutbox()
        rt = runtime(Rebalanced(), outbox, latest_interval_s=1.0, clock=lambda: now[0])
        acks: list[int] = []
        await rt.submit(ticks_at("14:59:50", 0), lambda: acks.append(1))
        await rt.submit(ticks_at("14:59:53", 2), lambda: acks.append(2))
        await rt.hand_over_acks()
        assert acks == [1, 2]
        await rt.submit(ticks_at("14:59:56", 4), lambda: acks.append(3))
        await rt.submit(ticks_at("14:59:59", 6), lambda: acks.append(4))  # after 3 is durable
        assert acks[:3] == [1, 2, 3]  # 3 took its own along
        rt.on_assigned({0, 1, 2}, 2)  # reassigned: batches hold their acks again
        await rt.submit(ticks_at("15:00:00", 8), lambda: acks.append(5))
        await rt.submit(ticks_at("15:00:00", 10), lambda: acks.append(6))  # after 5 is durable
        assert 5 not in acks

    asyncio.run(asyncio.wait_for(run(), 10))


class HeldRedis(Rebalanced):
    """Writes at once until ``hold`` is set; then each write waits for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.release = asyncio.Event()

    async def write(self, batch: SinkBatch) -> WriteResult:
        if self.hold:
            await self.release.wait()
        return await super().write(batch)


def test_a_rebalance_waits_for_the_batch_in_flight_that_took_the_latest_quotes_along() -> None:
    """faust commits what is acked when the hand-over returns: a batch in flight that
    took the held batches' latest quotes along must be durable (and they acked) by
    then, or the partitions' next owner replays them (published twice)."""

    async def run() -> None:
        now = [100.0]
        sink = HeldRedis()
        rt = runtime(sink, FakeOutbox(), latest_interval_s=1.0, clock=lambda: now[0])
        acks: list[int] = []
        await rt.submit(ticks_at("14:59:50", 0), lambda: acks.append(1))
        now[0] += 0.5
        await rt.submit(ticks_at("14:59:53", 2), lambda: acks.append(2))  # holds its ack
        sink.hold = True
        now[0] += 0.6
        await rt.submit(ticks_at("14:59:56", 4), lambda: acks.append(3))  # takes 2's along

        async def release_later() -> None:
            for _ in range(50):
                await asyncio.sleep(0)
            sink.release.set()

        later = asyncio.create_task(release_later())
        await rt.hand_over_acks()
        assert acks == [1, 2, 3]
        await later

    asyncio.run(asyncio.wait_for(run(), 10))
