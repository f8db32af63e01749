"""Minute alignment (schemas.timeframes), the trading clock (streams.trading_clock), candles."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from schemas.exchange import exchange_ts_of, shanghai_datetime
from schemas.serde import SingleObjectCodec, schema_json
from schemas.timeframes import CLOSE_GRACE_MS, candle_end, candle_minute, is_opening_minute
from streams.alerts import Alert
from streams.candles import CANDLE_JSON, Candle, CandleBuilder, Candles, CompiledCandleBuilder
from streams.market_stats import BoardCounts, RankEntry
from streams.redis_lua import candle_call
from streams.trading_clock import is_continuous, trading_clock_ms
from tests.native import native_or_skip

DAY = dt.date(2026, 3, 2)  # a Monday
NEXT_DAY = dt.date(2026, 3, 3)
CANDLE_CODEC = SingleObjectCodec("candle")
QUOTE_CODEC = SingleObjectCodec("quote")

MakeBuilder = Callable[[], Candles]


def compiled(close_grace_ms: int = CLOSE_GRACE_MS) -> CompiledCandleBuilder:
    return CompiledCandleBuilder(native_or_skip(), close_grace_ms)


@pytest.fixture(params=[CandleBuilder, compiled], ids=["python", "compiled"])
def builder(request: pytest.FixtureRequest) -> MakeBuilder:
    """Makes the builder under test: every rule holds for the reference
    (:class:`CandleBuilder`) and the compiled one alike."""
    make: MakeBuilder = request.param
    return make


def at(hh: int, mm: int, ss: int = 0, ms: int = 0, day: dt.date = DAY) -> int:
    return exchange_ts_of(day, dt.time(hh, mm, ss, ms * 1000))


def quote(
    ts: int,
    price: float = 10.0,
    volume: int = 0,
    amount: float | None = None,
    *,
    code: str = "600000",
    prev_close: float = 10.0,
    traded: bool | None = None,
    suspended: bool = False,
    day: dt.date | None = None,
) -> dict[str, Any]:
    """A complete Quote record (quote.v2.avsc) with consistent derived fields."""
    traded = (price > 0 and volume > 0) if traded is None else traded
    amount = round(volume * price, 2) if amount is None else amount
    day = day or shanghai_datetime(ts).date()
    change = round(price - prev_close, 2) if traded else 0.0
    return {
        "symbol": f"sh{code}", "code": code, "market": "SH", "board": "MAIN",
        "name": "浦发银行", "is_st": False, "exchange_ts": ts,
        "trade_date": day.isoformat(), "open": price, "prev_close": prev_close,
        "price": price, "high": price, "low": price, "bid": price, "ask": price,
        "volume": volume, "amount": amount, "bid_prices": [price] * 5,
        "bid_volumes": [100] * 5, "ask_prices": [price] * 5, "ask_volumes": [100] * 5,
        "change": change, "change_pct": round(change / prev_close * 100, 2) if traded else 0.0,
        "limit_up": round(prev_close * 1.1, 2), "limit_down": round(prev_close * 0.9, 2),
        "traded": traded, "suspended": suspended, "at_limit_up": False,
        "at_limit_down": False, "receive_ts": ts + 5, "process_ts": ts + 9,
        "limit_free": False, "not_traded_yet": not traded and not suspended,
        "phase": "continuous", "avg_price": 0.0, "amplitude": 0.0, "order_imbalance": 0.0,
    }  # fmt: skip


def test_quote_helper_matches_schema() -> None:
    q = quote(at(9, 31), 10.5, 1000)
    assert QUOTE_CODEC.decode(QUOTE_CODEC.encode(q)) == q


# ---------------------------------------------------------------- sessions


@pytest.mark.parametrize(
    ("tick", "minute"),
    [
        ((0, 0, 0), None),
        ((9, 14, 59), None),
        ((9, 15, 0), (9, 30)),
        ((9, 25, 0), (9, 30)),
        ((9, 29, 59), (9, 30)),
        ((9, 30, 0), (9, 30)),
        ((9, 30, 59), (9, 30)),
        ((9, 31, 0), (9, 31)),
        ((10, 0, 30), (10, 0)),
        ((11, 29, 59), (11, 29)),
        ((11, 30, 0), (11, 29)),
        ((11, 30, 2), (11, 29)),  # the midday result, stamped late
        ((11, 30, 29), (11, 29)),
        ((11, 30, 30), None),
        ((12, 0, 0), None),
        ((12, 59, 59), None),
        ((13, 0, 0), (13, 0)),
        ((14, 56, 59), (14, 56)),
        ((14, 57, 0), (14, 57)),
        ((14, 58, 30), (14, 58)),
        ((14, 59, 59), (14, 59)),
        ((15, 0, 0), (14, 59)),
        ((15, 0, 3), (14, 59)),  # the closing auction's result, stamped late
        ((15, 0, 30), None),
        ((23, 59, 59), None),
    ],
)
def test_candle_minute(tick: tuple[int, int, int], minute: tuple[int, int] | None) -> None:
    got = candle_minute(at(*tick))
    assert got == (None if minute is None else at(*minute))


def test_candle_minute_close_grace() -> None:
    assert candle_minute(at(11, 30, 0, 999)) == at(11, 29)
    assert candle_minute(at(15, 0, 4)) == at(14, 59)
    assert candle_minute(at(15, 0, 4), close_grace_ms=1000) is None
    assert candle_minute(at(15, 0, 4), close_grace_ms=5000) == at(14, 59)
    assert candle_minute(at(15, 0, 5), close_grace_ms=5000) is None
    assert candle_minute(at(15, 0, 0), close_grace_ms=0) is None


def test_a_day_has_240_minutes_on_whole_minutes() -> None:
    minutes = {candle_minute(t) for t in range(at(0, 0), at(0, 0, day=NEXT_DAY), 1000)}
    minutes.discard(None)
    assert len(minutes) == 240
    for m in minutes:
        assert m is not None
        assert m % 60_000 == 0
        local = shanghai_datetime(m).time()
        assert dt.time(9, 30) <= local < dt.time(11, 30) or dt.time(13) <= local < dt.time(15)


def test_candle_end() -> None:
    assert candle_end(at(9, 30)) == at(9, 31)
    assert candle_end(at(11, 29)) == at(11, 30, 30)
    assert candle_end(at(14, 59)) == at(15, 0, 30)
    assert candle_end(at(14, 59), close_grace_ms=0) == at(15, 0)
    assert candle_end(at(13, 0)) == at(13, 1)
    assert is_opening_minute(at(9, 30)) and not is_opening_minute(at(9, 31))


def test_trading_clock() -> None:
    assert trading_clock_ms(at(9, 15)) == trading_clock_ms(at(9, 30))
    assert trading_clock_ms(at(11, 28)) + 4 * 60_000 == trading_clock_ms(at(13, 2))
    assert trading_clock_ms(at(11, 30)) == trading_clock_ms(at(12, 30))
    assert trading_clock_ms(at(15, 0)) - trading_clock_ms(at(9, 30)) == 4 * 3600_000
    assert trading_clock_ms(at(15, 0)) == trading_clock_ms(at(23, 0))
    assert trading_clock_ms(at(23, 0)) < trading_clock_ms(at(9, 0, day=NEXT_DAY))
    clocks = [trading_clock_ms(t) for t in range(at(0, 0), at(0, 0, day=NEXT_DAY), 7_000)]
    assert clocks == sorted(clocks)


def test_is_continuous() -> None:
    assert not is_continuous(at(9, 25))
    assert is_continuous(at(9, 30))
    assert not is_continuous(at(11, 30))
    assert is_continuous(at(14, 56, 59))
    assert not is_continuous(at(14, 57))


# ----------------------------------------------------------------- candles


def test_ohlc_and_close_on_next_minute(builder: MakeBuilder) -> None:
    b = builder()
    assert b.update(quote(at(9, 31, 0), 10.0, 1000)) == []
    assert b.update(quote(at(9, 31, 20), 10.4, 1500)) == []
    assert b.update(quote(at(9, 31, 40), 9.8, 1700)) == []
    assert b.update(quote(at(9, 31, 57), 10.1, 2000)) == []
    cur = b.current("600000")
    assert cur is not None and cur.closed is False and cur.ticks == 4
    [closed] = b.update(quote(at(9, 32, 3), 10.2, 2600))
    assert closed.minute_ts == at(9, 31)
    assert (closed.open, closed.high, closed.low, closed.close) == (
        10.0, 10.4, 9.8, 10.1,
    )  # fmt: skip
    assert closed.closed is True and closed.ticks == 4
    assert closed.trade_date == DAY.isoformat() and closed.market == "SH"
    # first tick seen after 09:30 (joined mid-session): the base is its own cumulative
    assert closed.volume == 2000 - 1000
    assert closed.amount == pytest.approx(2000 * 10.1 - 1000 * 10.0)
    nxt = b.current("600000")
    assert nxt is not None and nxt.volume == 600 and nxt.open == 10.2
    assert CANDLE_CODEC.decode(CANDLE_CODEC.encode(closed.as_record())) == closed.as_record()
    assert CANDLE_CODEC.decode(CANDLE_CODEC.encode(nxt.as_record())) == nxt.as_record()
    assert b.counters.joined_midday == 1


def test_auction_folds_into_0930_and_first_candle_counts_from_zero(builder: MakeBuilder) -> None:
    b = builder()
    b.update(quote(at(9, 15), 10.3, 0, traded=False))  # indicative price, no trade
    b.update(quote(at(9, 25), 10.2, 5000, 51_000.0))  # the opening match
    b.update(quote(at(9, 30, 3), 10.25, 6000, 61_250.0))
    [c] = b.update(quote(at(9, 31, 0), 10.3, 7000, 71_550.0))
    assert c.minute_ts == at(9, 30)
    assert (c.open, c.high, c.low, c.close) == (10.2, 10.25, 10.2, 10.25)
    assert c.volume == 6000 and c.amount == 61_250.0
    assert c.ticks == 2 and b.counters.no_trade == 1  # the indicative tick draws nothing
    assert b.counters.joined_midday == 0


def test_untraded_ticks_leave_ohlc_alone_and_flat_candle_uses_last_price(
    builder: MakeBuilder,
) -> None:
    b = builder()
    b.update(quote(at(9, 25), 10.2, 5000))
    b.update(quote(at(9, 30, 30), 0.0, 5000, 51_000.0, traded=False))  # no price
    [c930] = b.update(quote(at(9, 31, 0), 10.5, 5000, 51_000.0))
    assert (c930.open, c930.high, c930.low, c930.close) == (10.2,) * 4
    # a minute with ticks but no new trade is flat at the last traded price
    [flat] = b.update(quote(at(9, 32, 0), 10.5, 5000, 51_000.0))
    assert (flat.open, flat.close, flat.volume) == (10.5, 10.5, 0)


def test_no_candle_without_a_trade(builder: MakeBuilder) -> None:
    """A stock that has not traded today (pre-open ticks, a suspended or late
    opening stock) has no candle: exchanges draw none for a minute without trades."""
    b = builder()
    b.update(quote(at(9, 20), 0.0, 0, 0.0, traded=False, prev_close=9.9))
    assert b.current("600000") is None
    assert b.update(quote(at(9, 31), 0.0, 0, 0.0, traded=False, prev_close=9.9)) == []
    assert b.update(quote(at(9, 32), 0.0, 0, 0.0, traded=False, prev_close=9.9)) == []
    assert b.close_all() == [] and b.counters.no_trade == 3
    # its first trade at 10:05 opens the day's first candle with the whole volume
    b.update(quote(at(10, 5, 3), 10.0, 3000))
    c = b.current("600000")
    assert c is not None and c.minute_ts == at(10, 5) and c.volume == 3000


def test_lunch_break(builder: MakeBuilder) -> None:
    b = builder()
    b.update(quote(at(9, 25), 10.0, 1000))
    b.update(quote(at(11, 29, 57), 10.0, 5000, 50_000.0))
    assert b.update(quote(at(11, 30, 0), 10.1, 6000, 60_100.0)) == []  # folds into 11:29
    cur = b.current("600000")
    assert cur is not None and cur.minute_ts == at(11, 29) and cur.close == 10.1
    # a snapshot during lunch, past the grace, closes the 11:29 candle but opens nothing
    [c1129] = b.update(quote(at(11, 31, 0), 10.1, 6000, 60_100.0))
    assert c1129.minute_ts == at(11, 29) and c1129.volume == (5000 - 1000) + (6000 - 5000)
    assert b.current("600000") is None and b.counters.out_of_session == 1
    assert b.update(quote(at(12, 15), 10.1, 6000, 60_100.0)) == []
    assert b.update(quote(at(13, 0, 0), 10.2, 7000, 70_250.0)) == []
    c = b.current("600000")
    assert c is not None and c.minute_ts == at(13, 0)
    assert c.volume == 7000 - 6000 and c.amount == pytest.approx(70_250.0 - 60_100.0)


def test_late_stamped_midday_tick_belongs_to_the_morning(builder: MakeBuilder) -> None:
    """Vendors stamp the morning's last trades a few seconds after 11:30
    (11:30:02): they are the 11:29 candle's, not the 13:00 candle's."""
    b = builder()
    b.update(quote(at(9, 25), 10.0, 1000))
    b.update(quote(at(11, 29, 57), 10.0, 5000, 50_000.0))
    assert b.update(quote(at(11, 30, 2), 10.1, 6500, 65_150.0)) == []
    [c1129] = b.update(quote(at(11, 35), 10.1, 6500, 65_150.0))
    assert c1129.minute_ts == at(11, 29) and c1129.volume == 6500 - 1000
    b.update(quote(at(13, 0, 3), 10.2, 7000, 70_250.0))
    c = b.current("600000")
    assert c is not None and c.volume == 500


def test_late_stamped_closing_auction_tick_belongs_to_1459(builder: MakeBuilder) -> None:
    """The closing call auction's result comes stamped 15:00:03: ticks to
    15:00:00 have 95,000 shares, the 15:00:03 print at 11.08 has 120,000; the
    14:59 candle closes at 11.08 with all 25,000 of the auction's shares."""
    b = builder()
    b.update(quote(at(14, 58, 57), 11.05, 80_000, prev_close=11.0))
    b.update(quote(at(14, 59, 30), 11.06, 95_000, prev_close=11.0))
    b.update(quote(at(15, 0, 0), 11.06, 95_000, prev_close=11.0))
    assert b.update(quote(at(15, 0, 3), 11.08, 120_000, prev_close=11.0)) == []
    assert b.flush(at(15, 0, 6)) == []
    [c1459] = b.flush(at(15, 0, 30))
    assert c1459.minute_ts == at(14, 59)
    assert (c1459.close, c1459.high, c1459.volume) == (11.08, 11.08, 120_000 - 80_000)


def test_closing_auction_and_flush_at_session_end(builder: MakeBuilder) -> None:
    b = builder()
    b.update(quote(at(9, 25), 10.0, 1000))
    b.update(quote(at(14, 57, 30), 10.0, 2000, 20_000.0))
    [c1457] = b.update(quote(at(14, 58, 0), 10.0, 2000, 20_000.0))
    assert c1457.minute_ts == at(14, 57)
    b.update(quote(at(14, 59, 30), 10.0, 2000, 20_000.0))
    assert b.update(quote(at(15, 0, 0), 10.3, 9000, 92_100.0)) == []  # closing match
    assert b.flush(at(15, 0, 29, 999)) == []
    [c1459] = b.flush(at(15, 0, 30))
    assert c1459.minute_ts == at(14, 59) and c1459.close == 10.3
    assert c1459.volume == 7000 and b.open_count() == 0
    assert b.flush(at(16, 0)) == [] and b.close_all() == []


def test_flush_closes_only_finished_minutes(builder: MakeBuilder) -> None:
    b = builder()
    b.update(quote(at(10, 0, 10), 10.0, 100, code="600000"))
    b.update(quote(at(10, 1, 10), 10.0, 100, code="600001"))
    closed = b.flush(at(10, 1, 30))
    assert [c.code for c in closed] == ["600000"]
    assert b.current("600000") is None and b.current("600001") is not None
    # a tick for a minute already closed by flush is late: ignored and counted
    assert b.update(quote(at(10, 0, 50), 10.0, 100, code="600000")) == []
    assert b.current("600000") is None and b.counters.late == 1
    assert b.counters.after_close == 1  # in no candle: what the metric exports
    [last] = b.close_all()
    assert last.code == "600001" and last.closed is True
    assert b.open_count() == 0


def test_replays_are_ignored_and_counted(builder: MakeBuilder) -> None:
    b = builder()
    b.update(quote(at(10, 0, 0), 10.0, 100))
    b.update(quote(at(10, 0, 30), 11.0, 200))
    assert b.update(quote(at(10, 0, 30), 12.0, 300)) == []  # same exchange_ts: a replay
    assert b.update(quote(at(10, 0, 10), 9.0, 150)) == []  # older, same minute
    [c] = b.update(quote(at(10, 1, 0), 11.0, 200))
    assert (c.high, c.low, c.ticks, c.volume) == (11.0, 10.0, 2, 100)
    assert b.update(quote(at(10, 0, 59), 9.0, 250)) == []  # closed minute
    assert b.counters.late == 3 and b.counters.after_close == 0  # older than the last seen


def test_cumulative_counter_going_backwards_never_makes_negative_volume(
    builder: MakeBuilder,
) -> None:
    b = builder()
    b.update(quote(at(9, 25), 10.0, 1000))
    b.update(quote(at(9, 30, 10), 10.0, 5000))
    b.update(quote(at(9, 30, 20), 10.0, 4000))  # glitch: back to 4000
    b.update(quote(at(9, 30, 30), 10.0, 4500))
    [c] = b.update(quote(at(9, 31, 0), 10.0, 5200))
    assert c.volume == 5000 and c.amount == 50_000.0
    nxt = b.current("600000")
    assert nxt is not None and nxt.volume == 200  # counted from the highest, 5000
    assert b.counters.counter_resets == 2


def test_volume_glitch_keeps_the_highest_cumulative_as_base(builder: MakeBuilder) -> None:
    """Cumulative volume 1000, 2000, 500, 2100 in one minute is 1,100 shares
    traded (the 500 is a glitch), not 2,600 (counting 500 -> 2100 again)."""
    b = builder()
    for s, volume in ((3, 1000), (15, 2000), (30, 500), (45, 2100)):
        b.update(quote(at(10, 0, s), 10.0, volume))  # joined mid-session: base 1000
    c = b.current("600000")
    assert c is not None and c.volume == 1100


def test_new_day_resets_the_base(builder: MakeBuilder) -> None:
    b = builder()
    b.update(quote(at(14, 59, 50), 10.0, 900_000))
    b.update(quote(at(9, 16, day=NEXT_DAY), 0.0, 0, traded=False))
    assert b.counters.closed == 1  # yesterday's 14:59 closed by today's first tick
    b.update(quote(at(9, 25, day=NEXT_DAY), 10.5, 3000))
    [c] = b.update(quote(at(9, 31, day=NEXT_DAY), 10.5, 3000))
    assert c.trade_date == NEXT_DAY.isoformat() and c.volume == 3000
    assert c.open == 10.5


def test_new_day_without_a_tick_in_the_opening_minute_is_joined_midday(
    builder: MakeBuilder,
) -> None:
    b = builder()
    b.update(quote(at(14, 59, 50), 10.0, 900_000))
    b.update(quote(at(10, 0, day=NEXT_DAY), 10.5, 40_000))
    [c] = b.update(quote(at(10, 1, day=NEXT_DAY), 10.5, 41_000))
    assert c.volume == 0 and b.counters.joined_midday == 2


def test_suspended_ticks_open_no_candle_but_set_the_day(builder: MakeBuilder) -> None:
    b = builder()
    b.update(quote(at(9, 20), 0.0, 0, suspended=True))
    assert b.current("600000") is None and b.counters.suspended == 1
    b.update(quote(at(10, 30, 3), 10.0, 20_000))  # resumes: the day's volume counts
    c = b.current("600000")
    assert c is not None and c.volume == 20_000


def test_candle_volumes_add_up_to_the_day_total(builder: MakeBuilder) -> None:
    """Random full days, many stocks: the candles' volumes sum to the final volume."""
    rnd = random.Random(20260302)
    b = builder()
    codes = [f"60{i:04d}" for i in range(20)]
    state: dict[str, tuple[float, int, float]] = {c: (10.0, 0, 0.0) for c in codes}
    closed: list[dict[str, Any]] = []
    t = at(9, 15)
    end = at(15, 0, 0)
    while t <= end:
        for code in rnd.sample(codes, 12):
            px, vol, amt = state[code]
            if rnd.random() < 0.02:  # replay an old tick
                closed += b.update(quote(t - rnd.randint(1, 90_000), px, vol, amt, code=code))
            if t >= at(9, 25):
                px = round(max(0.01, px + rnd.choice((-0.01, 0, 0.01))), 2)
                dv = rnd.randint(0, 5000) if (t < at(11, 30) or t >= at(13, 0)) else 0
                vol, amt = vol + dv, round(amt + dv * px, 2)
            state[code] = (px, vol, amt)
            closed += b.update(quote(t, px, vol, amt, code=code, traded=vol > 0))
        t += 3000 if t < at(11, 30) or t >= at(13, 0) else 600_000
    closed += b.close_all()
    for code in codes:
        mine = [c for c in closed if c.code == code]
        assert sum(c.volume for c in mine) == state[code][1]
        assert sum(c.amount for c in mine) == pytest.approx(state[code][2])
        minutes = [c.minute_ts for c in mine]
        assert minutes == sorted(set(minutes))
        assert all(candle_minute(m) == m for m in minutes)
        assert all(c.low <= min(c.open, c.close) for c in mine)
        assert all(c.high >= max(c.open, c.close) for c in mine)
    assert b.counters.late > 0
    for c in closed[:50]:
        assert CANDLE_CODEC.decode(CANDLE_CODEC.encode(c.as_record())) == c.as_record()


# ------------------------------------------------ the bytes on Kafka and in Redis

#: what the builder wrote before candles were typed values (dicts then): the 09:30
#: candle of test_auction_folds_into_0930..., open then closed
GOLDEN_JSON = (
    b'{"code":"600000","market":"SH","trade_date":"2026-03-02","minute_ts":1772415000000,'
    b'"open":10.2,"high":10.25,"low":10.2,"close":10.25,"volume":6000,"amount":61250.0,'
    b'"ticks":2,"closed":%s,"tf":"1m","indicators":null}'
)
GOLDEN_AVRO = (
    "c301df449a49056123130c36303030303004534814323032362d30332d303280f7d4c295676666666666"
    "662440000000000080244066666666666624400000000000802440e05d0000000040e8ed4004%s04316d00"
)


def test_candle_bytes_on_kafka_and_in_redis_are_pinned(builder: MakeBuilder) -> None:
    b = builder()
    b.update(quote(at(9, 25), 10.2, 5000))
    b.update(quote(at(9, 30, 3), 10.25, 6000, 61_250.0))
    opened = b.current("600000")
    assert opened is not None
    [closed] = b.update(quote(at(9, 31, 0), 10.3, 7000, 71_550.0))
    for candle, flag, avro_flag in ((opened, b"false", "00"), (closed, b"true", "01")):
        _, argv = candle_call([], [candle])  # what Redis is sent for an open candle
        assert argv[1] == CANDLE_JSON.encode(candle) == GOLDEN_JSON % flag
        assert orjson.dumps(candle.as_record()) == GOLDEN_JSON % flag  # a closed one's way
        assert CANDLE_CODEC.encode(candle.as_record()).hex() == GOLDEN_AVRO % avro_flag


def test_candle_json_is_orjsons_within_parses_bounds() -> None:
    """msgspec and orjson write every float below 1e16 alike; parse keeps prices <= 1e6
    and amounts < 1e15, so the open candles' JSON is what orjson writes for the record."""
    rng = random.Random(7)
    for _ in range(20_000):
        rounded, tiny = round(rng.uniform(0, 1e6), rng.randint(0, 4)), 10 ** rng.uniform(-9, 6)
        price = rng.choice([rounded, tiny])
        amount = rng.choice([round(rng.uniform(0, 1e15), 2), 10 ** rng.uniform(-9, 15)])
        c = Candle("600000", "SH", "2026-03-02", 1, price, price, price, price,
                   rng.randrange(10**13), amount, 1, rng.random() < 0.5)  # fmt: skip
        assert CANDLE_JSON.encode(c) == orjson.dumps(c.as_record()), (price, amount)


def test_the_typed_values_have_their_avro_records_fields_in_order() -> None:
    """Candle, Alert and RankEntry mirror their .avsc (as api/models.py does for the gateway)."""

    def fields(schema: dict[str, Any]) -> tuple[str, ...]:
        return tuple(f["name"] for f in schema["fields"])

    stats = {f["name"]: f["type"] for f in schema_json("market_stats")["fields"]}
    assert Candle.__struct_fields__ == fields(schema_json("candle"))
    assert Alert.__struct_fields__ == fields(schema_json("alert"))
    assert RankEntry.__struct_fields__ == fields(stats["top_gainers"]["items"])
    board = fields(stats["boards"]["items"])
    assert ("board", *BoardCounts.__struct_fields__) == board
