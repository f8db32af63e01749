"""The Redis sink against a real Redis: newer-wins, idempotent replay, batching, outages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import orjson
import pytest
import redis.asyncio as aioredis

from hqstream.local_runner import LocalRedis, create_topics
from producers.sample_feed import generate
from schemas import redis_keys as rk
from schemas.topics import topic_specs
from streams.alerts import Alert
from streams.candles import Candle
from streams.errors import BadRecord
from streams.market_stats import MarketStats, PartialStateError
from streams.outbox import ConfluentOutbox
from streams.parse import parse_record
from streams.pipeline import Processor, RawRecord
from streams.redis_sink import RedisSink, SinkBatch
from streams.runtime import StreamsRuntime
from streams.settings import StreamsSettings
from tests.conftest import ON_BOTH_REDIS, KafkaEndpoint
from tests.streams.redis_state import canonical_state
from tests.streams.test_market_stats import T0
from tests.streams.test_market_stats import quote as stats_quote


def quotes(stocks: int, snapshots: int, seed: int = 1) -> list[dict[str, Any]]:
    out = []
    for _, value, _ in generate(stocks, snapshots, seed=seed)[0]:
        with contextlib.suppress(BadRecord):
            out.append(parse_record(value, 1, 2))
    return out


def batch(qs: list[dict[str, Any]], alerts: list[Alert] | None = None) -> SinkBatch:
    return SinkBatch(quotes=[(q, 0) for q in qs], candles=[], alerts=alerts or [])


@pytest.fixture
async def sink(redis_url: str) -> AsyncIterator[RedisSink]:
    s = RedisSink.from_url(redis_url)
    yield s
    await s.close()


@ON_BOTH_REDIS
async def test_newer_wins_and_ticks_keep_exchange_order(sink: RedisSink) -> None:
    q1, q2 = quotes(1, 2)
    assert q2["exchange_ts"] > q1["exchange_ts"]
    code = q1["code"]
    r = await sink.write(batch([q2]))
    assert (r.won, r.stale) == (1, 0)
    r = await sink.write(batch([q1]))  # older, arrives late
    assert (r.won, r.stale) == (0, 1)
    stored = await sink.client.hgetall(rk.quote(code))
    assert int(stored[b"ts"]) == q2["exchange_ts"]
    assert orjson.loads(stored[b"data"])["price"] == q2["price"]
    assert float(stored[b"price"]) == q2["price"]
    client: Any = sink.client
    ids = [i.decode() for i, _ in await client.xrange(rk.ticks(code))]
    assert ids == [f"{q2['exchange_ts']}-0"]
    score = await sink.client.zscore(rk.rank(q2["market"], "volume"), code)
    assert score == q2["volume"]


@ON_BOTH_REDIS
async def test_replaying_a_batch_changes_nothing(sink: RedisSink) -> None:
    qs = quotes(50, 3)
    alert = Alert(qs[0]["code"], "x", qs[0]["market"], "FAST_MOVE", qs[0]["exchange_ts"], 1.0,
                  5.0, 5.0, "m")  # fmt: skip
    first = await sink.write(batch(qs, [alert]))
    assert first.won == len(qs) and first.alerts_new == 1
    before = await canonical_state(sink.client)
    again = await sink.write(batch(qs, [alert]))
    # the newest quote of each stock is "same", the older ones "stale": nothing written
    assert (again.won, again.same, again.stale, again.alerts_new) == (0, 50, 100, 0)
    assert await canonical_state(sink.client) == before
    assert await sink.client.xlen(rk.ALERTS) == 1
    assert sum([await sink.client.xlen(rk.ticks(q["code"])) for q in qs[:50]]) == len(qs)


@ON_BOTH_REDIS
async def test_one_batch_equals_one_write_per_quote(sink: RedisSink, redis_url: str) -> None:
    qs = quotes(200, 4, seed=9)
    await sink.write(batch(qs))
    batched = await canonical_state(sink.client)
    await sink.client.flushdb()
    for q in qs:
        await sink.write(batch([q]))
    assert await canonical_state(sink.client) == batched
    latest = {q["code"]: q for q in qs}
    for market in ("SH", "SZ", "BJ"):
        ranked = await sink.client.zrange(rk.rank(market, "change_pct"), 0, -1, withscores=True)
        assert {m.decode(): score for m, score in ranked} == {
            code: q["change_pct"] for code, q in latest.items() if q["market"] == market
        }
        assert {m.decode() for m in await sink.client.smembers(rk.codes(market))} == {
            code for code, q in latest.items() if q["market"] == market
        }
    assert not await sink.client.exists("hq:rank:ALL:change_pct")  # merged when read


@ON_BOTH_REDIS
async def test_an_open_candle_never_overwrites_the_closed_one(sink: RedisSink) -> None:
    closed = Candle("600000", "SH", "2026-11-23", 60_000, 1.0, 1.0, 1.0, 1.0, 1, 1.0, 1, True)
    opened = msgspec.structs.replace(closed, closed=False)
    await sink.write(SinkBatch(quotes=[], candles=[closed.as_record()], alerts=[]))
    await sink.write(SinkBatch(quotes=[], candles=[], alerts=[], open_candles=[opened]))
    stored = await sink.client.hget(rk.candles("600000", "2026-11-23"), "60000")
    assert stored is not None and orjson.loads(stored)["closed"] is True


@ON_BOTH_REDIS
async def test_an_open_candle_is_stored_as_orjson_writes_its_record(sink: RedisSink) -> None:
    """The open candles' JSON (msgspec's, for speed) is byte for byte what orjson writes for
    their Avro record, as the closed ones are written: the gateway reads one format."""
    opened = Candle("600000", "SH", "2026-11-23", 120_000, 999_999.99, 1_000_000.0, 0.01, 10.1,
                    10**13 - 1, 999_999_999_999_999.9, 7, False)  # parse's bounds  # fmt: skip
    await sink.write(SinkBatch(quotes=[], candles=[], alerts=[], open_candles=[opened]))
    stored = await sink.client.hget(rk.candles("600000", "2026-11-23"), "120000")
    assert stored == orjson.dumps(opened.as_record())


@ON_BOTH_REDIS
async def test_ttls_are_set_by_a_minutes_first_write_not_by_every_tick(sink: RedisSink) -> None:
    """A stock's quote HASH, ticks STREAM and candle HASH get their TTLs when a write
    starts a new exchange minute (a new candle), not again at each tick of the minute."""
    q = quotes(1, 1)[0]
    code, minute = q["code"], q["exchange_ts"] // 60_000 * 60_000
    first, same_minute, next_minute = (
        dict(q, exchange_ts=minute + offset) for offset in (3_000, 6_000, 63_000)
    )
    candle = Candle(code, q["market"], "2026-11-23", 60_000, 1.0, 1.0, 1.0, 1.0, 1, 1.0, 1, False)
    keys = (rk.quote(code), rk.ticks(code), rk.candles(code, "2026-11-23"))
    client: Any = sink.client

    async def write(quote: dict[str, Any], minute_ts: int, close: float) -> list[int]:
        bar = msgspec.structs.replace(candle, minute_ts=minute_ts, close=close)
        await sink.write(SinkBatch(quotes=[(quote, 0)], candles=[], alerts=[], open_candles=[bar]))
        return [await client.ttl(key) for key in keys]

    assert all(ttl > 100 for ttl in await write(first, 60_000, 1.0))
    for key in keys:
        await client.expire(key, 100)
    assert all(0 < ttl <= 100 for ttl in await write(same_minute, 60_000, 1.1))  # kept
    assert int(await client.hget(keys[0], "ts")) == same_minute["exchange_ts"]  # written
    assert await client.xlen(keys[1]) == 2
    assert all(ttl > 100 for ttl in await write(next_minute, 120_000, 1.2))  # refreshed
    assert await client.hlen(keys[2]) == 2


@ON_BOTH_REDIS
async def test_a_code_joins_its_code_set_with_a_minutes_first_write(sink: RedisSink) -> None:
    """The market's code SET gets a stock's code with its first write of an exchange
    minute (as the TTLs), not at every tick; its rankings follow every tick."""
    q = quotes(1, 1)[0]
    code, market, minute = q["code"], q["market"], q["exchange_ts"] // 60_000 * 60_000
    first, same_minute, next_minute = (
        dict(q, exchange_ts=minute + offset, volume=q["volume"] + offset)
        for offset in (3_000, 6_000, 63_000)
    )
    client: Any = sink.client
    await sink.write(batch([first]))
    assert await client.sismember(rk.codes(market), code)
    await client.delete(rk.codes(market))
    await sink.write(batch([same_minute]))
    assert not await client.sismember(rk.codes(market), code)  # not at every tick
    assert await client.zscore(rk.rank(market, "volume"), code) == same_minute["volume"]
    await sink.write(batch([next_minute]))
    assert await client.sismember(rk.codes(market), code)
    assert await client.ttl(rk.codes(market)) > 0


@ON_BOTH_REDIS
async def test_bar_series_are_stored_as_given_and_each_write_refreshes_their_ttl(
    sink: RedisSink,
) -> None:
    """Every changed stock's series (a field per timeframe) go in one script call per
    master: stored as given, the fields not written kept, and the TTL refreshed by each
    write (a stock that trades every day keeps its series)."""
    codes = [f"{600000 + i:06d}" for i in range(40)]  # on every master of a cluster
    series = {
        code: {"1m": b'{"tf":"1m","i":%d}' % i, "5m": b'{"tf":"5m","i":%d}' % i, "1d": b"{}"}
        for i, code in enumerate(codes)
    }
    await sink.write(SinkBatch(quotes=[], candles=[], alerts=[], bars=series))
    client: Any = sink.client
    for code in codes:
        stored = await client.hgetall(rk.bars(code))
        assert stored == {tf.encode(): value for tf, value in series[code].items()}
        assert await client.ttl(rk.bars(code)) > rk.BARS_TTL_S - 100
    await client.expire(rk.bars(codes[0]), 100)
    await sink.write(SinkBatch(quotes=[], candles=[], alerts=[], bars={codes[0]: {"1m": b"x"}}))
    assert await client.hmget(rk.bars(codes[0]), ["1m", "5m"]) == [b"x", series[codes[0]]["5m"]]
    assert await client.ttl(rk.bars(codes[0])) > rk.BARS_TTL_S - 100


@pytest.mark.integration
async def test_redis_down_then_back_loses_nothing(
    own_redis: LocalRedis, kafka: KafkaEndpoint
) -> None:
    prefix = f"{kafka.group('sink')}."
    create_topics(kafka.bootstrap, topic_specs(3), prefix=prefix)
    settings = StreamsSettings(
        redis_url=own_redis.url, kafka_bootstrap=kafka.bootstrap, topic_prefix=prefix,
        metrics_port=0, redis_retry_max_s=0.3,
    )  # fmt: skip
    sink = RedisSink.from_url(own_redis.url)
    runtime = StreamsRuntime(settings, sink, ConfluentOutbox(kafka.bootstrap), "w",
                             processor=Processor(settings))  # fmt: skip
    lines, _ = generate(100, 2, seed=5)
    records = [RawRecord(k, v, h, "raw", 0, i, 0) for i, (k, v, h) in enumerate(lines)]
    await runtime.handle(records[:100])
    own_redis.stop()
    task = asyncio.create_task(runtime.handle(records[100:]))
    await asyncio.sleep(1.5)
    assert not task.done()  # waiting for Redis, not skipping the batch
    own_redis.start()  # same port, empty (no persistence): the retry writes it all
    await asyncio.wait_for(task, 30)
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        for _, value, _ in lines[100:]:
            q = parse_record(value, 0)
            assert int(await client.hget(rk.quote(q["code"]), "ts") or 0) >= q["exchange_ts"]
    finally:
        await client.aclose()
        await sink.close()
        await runtime.outbox.close()


async def test_history_goes_before_newer_ticks_a_live_batch_wrote_first(sink: RedisSink) -> None:
    """The rebuild's HISTORY_LUA: ticks in exchange-time order whatever was written first."""
    qs = quotes(1, 6)
    code = qs[0]["code"]
    client: Any = sink.client
    await sink.write(batch(qs[4:]))  # a live batch after a FLUSHDB: the two newest ticks
    history = {code: [(q["exchange_ts"], orjson.dumps(q)) for q in qs[:5]]}  # overlaps one
    assert await sink.write_history(history) == 4
    ids = [i.decode() for i, _ in await client.xrange(rk.ticks(code))]
    assert ids == [f"{q['exchange_ts']}-0" for q in qs]
    assert int(await client.hget(rk.quote(code), "ts")) == qs[-1]["exchange_ts"]  # untouched
    assert await client.ttl(rk.ticks(code)) > 0
    # on an empty stream it appends; again, it adds nothing
    other = [q for q in quotes(2, 3, seed=5) if q["code"] != code]
    fresh = {other[0]["code"]: [(q["exchange_ts"], orjson.dumps(q)) for q in other]}
    assert await sink.write_history(fresh) == 3
    assert await client.xlen(rk.ticks(other[0]["code"])) == 3


#: a stored partial as it was written before partials were typed values (dicts then)
GOLDEN_PARTIAL = (
    b'{"ts":1772415000006,"state":{"v":1,"ts":1772415000005,"top_n":2,"markets":{"'
    b'SH":{"stocks":2,"advancers":1,"decliners":1,"limit_up":0,"limit_down":0,"sus'
    b'pended":0,"traded":2,"volume":2000,"amount_cents":12346678912,"change_sum":3'
    b'5000,"top_gainers":[{"code":"600001","name":"A600001","price":10.0,"change_p'
    b'ct":5.0,"amount":123456789.12},{"code":"600002","name":"A600002","price":9.8'
    b'5,"change_pct":-1.5,"amount":10000.0}],"top_losers":[{"code":"600002","name"'
    b':"A600002","price":9.85,"change_pct":-1.5,"amount":10000.0},{"code":"600001"'
    b',"name":"A600001","price":10.0,"change_pct":5.0,"amount":123456789.12}],"top'
    b'_turnover":[{"code":"600001","name":"A600001","price":10.0,"change_pct":5.0,'
    b'"amount":123456789.12},{"code":"600002","name":"A600002","price":9.85,"chang'
    b'e_pct":-1.5,"amount":10000.0}],"boards":{"MAIN":{"stocks":2,"advancers":1,"d'
    b'ecliners":1,"unchanged":0,"suspended":0,"not_traded_yet":0,"limit_up":0,"lim'
    b'it_down":0}}},"SZ":{"stocks":1,"advancers":0,"decliners":0,"limit_up":0,"lim'
    b'it_down":0,"suspended":1,"traded":0,"volume":1000,"amount_cents":1000000,"ch'
    b'ange_sum":0,"top_gainers":[],"top_losers":[],"top_turnover":[],"boards":{"MA'
    b'IN":{"stocks":1,"advancers":0,"decliners":0,"unchanged":0,"suspended":1,"not'
    b'_traded_yet":0,"limit_up":0,"limit_down":0}}},"BJ":{"stocks":0,"advancers":0'
    b',"decliners":0,"limit_up":0,"limit_down":0,"suspended":0,"traded":0,"volume"'
    b':0,"amount_cents":0,"change_sum":0,"top_gainers":[],"top_losers":[],"top_tur'
    b'nover":[],"boards":{}}}}}'
)


@ON_BOTH_REDIS
async def test_a_stats_partial_is_stored_as_before_and_read_back_typed(sink: RedisSink) -> None:
    stats = MarketStats()
    stats.update(stats_quote("600001", T0, 5.0, amount=123_456_789.12))
    stats.update(stats_quote("600002", T0, -1.5, price=9.85))
    stats.update(stats_quote("000001", T0, 2.0, market="SZ", suspended=True))
    partial = stats.partial_state(2, now_ms=T0 + 5)
    await sink.write_partial("w1", partial, T0 + 6)
    assert await sink.client.hget(rk.STATS_PARTIALS, "w1") == GOLDEN_PARTIAL
    assert await sink.read_partials() == {"w1": (T0 + 6, partial)}
    await sink.client.hset(rk.STATS_PARTIALS, "w2", b'{"ts": 1, "state": {"v": 1}}')
    with pytest.raises(PartialStateError, match="w2"):  # not a partial: merged nowhere
        await sink.read_partials()
