"""The incremental indicators equal TA-Lib's over the same bars, to 1e-9 relative.

The reference is the ``ta-lib`` package (TA-Lib's C library, bundled in its
binary wheel; a dev extra): SMA, EMA, MACD, RSI, BBANDS and ATR over the
whole series at once. KDJ and VWAP have no TA-Lib function: their reference
is a plain batch implementation of the formulas in schemas/indicators.py
(below), written apart from the incremental code.

Series: random walks with overnight gaps, halts (flat bars without volume)
and limit-locked runs (open = high = low = close), and two simulated days
(producers.quote_lines.SnapshotSource: auctions, lunch, the 15:00:03 print, a
halted stock) turned into 1-minute candles by the stream worker's own
Processor, then into 5/15/30/60-minute and daily bars by BarSeries. Each
series is also checked for the two live properties: an open bar shows the
values it keeps when it closes (``peek`` == ``close``), and a state restored
from its stored JSON (a worker's warm-up) goes on exactly as if never stopped.

Tolerance: 1e-9 of the reference value; for the MACD lines, which are
differences of prices and cross zero, 1e-9 of the close.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest
import talib

from producers.quote_lines import SnapshotSource
from producers.universe import build_listing
from schemas.bar_series import WHOLE_EVERY_MS, BarSeries
from schemas.exchange import shanghai_datetime
from schemas.indicators import GROUPS, NAMES, IndicatorState, select
from schemas.serde import schema_json
from schemas.timeframes import HIGHER, TIMEFRAMES, Timeframe, bucket
from streams.parse import parse_record
from streams.pipeline import Processor
from streams.settings import StreamsSettings

Bar = dict[str, Any]
RTOL = 1e-9
PRICE_DIFFERENCES = {"macd", "macd_signal", "macd_hist"}


# -- the reference ---------------------------------------------------------------


def kdj_reference(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> dict[str, np.ndarray]:
    """KDJ(9, 3, 3) the terminal way, bar by bar over whole windows (no running state but K, D)."""
    k_prev = d_prev = 50.0
    out: dict[str, list[float]] = {"kdj_k": [], "kdj_d": [], "kdj_j": []}
    for i in range(len(close)):
        window = slice(max(0, i - 8), i + 1)
        hhv, llv = float(high[window].max()), float(low[window].min())
        rsv = (close[i] - llv) / (hhv - llv) * 100 if hhv > llv else k_prev
        k = (2 * k_prev + rsv) / 3
        d = (2 * d_prev + k) / 3
        out["kdj_k"].append(k)
        out["kdj_d"].append(d)
        out["kdj_j"].append(3 * k - 2 * d)
        k_prev, d_prev = k, d
    return {name: np.array(values) for name, values in out.items()}


def vwap_reference(bars: list[Bar], intraday: bool) -> np.ndarray:
    """sum(amount) / sum(volume) over the trade date's bars so far (the bar's own for daily)."""
    out: list[float] = []
    amount, volume, day = 0.0, 0, None
    for bar in bars:
        if not intraday or bar["trade_date"] != day:
            amount, volume, day = 0.0, 0, bar["trade_date"]
        amount += bar["amount"]
        volume += bar["volume"]
        out.append(amount / volume if volume else np.nan)
    return np.array(out)


def reference(bars: list[Bar], intraday: bool = True) -> dict[str, np.ndarray]:
    c = np.array([b["close"] for b in bars], dtype=float)
    h = np.array([b["high"] for b in bars], dtype=float)
    lo = np.array([b["low"] for b in bars], dtype=float)
    ref: dict[str, np.ndarray] = {}
    for n in (5, 10, 20, 60):
        ref[f"ma{n}"] = talib.SMA(c, n)
    for n in (12, 26):
        ref[f"ema{n}"] = talib.EMA(c, n)
    ref["macd"], ref["macd_signal"], ref["macd_hist"] = talib.MACD(c, 12, 26, 9)
    for n in (6, 12, 24):
        ref[f"rsi{n}"] = talib.RSI(c, n)
    ref["boll_upper"], ref["boll_mid"], ref["boll_lower"] = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    ref["atr14"] = talib.ATR(h, lo, c, 14)
    ref.update(kdj_reference(h, lo, c))
    ref["vwap"] = vwap_reference(bars, intraday)
    assert set(ref) == set(NAMES)
    return ref


# -- the incremental side ----------------------------------------------------------


def incremental(bars: list[Bar], intraday: bool = True) -> dict[str, np.ndarray]:
    """Every bar through IndicatorState, checking peek == close and a mid-series restore."""
    state = IndicatorState()
    rows: list[dict[str, float | None]] = []
    for i, bar in enumerate(bars):
        if i == len(bars) // 2:  # a worker restarts: the state comes back from Redis
            state = IndicatorState.from_json(orjson.loads(orjson.dumps(state.to_json())))
        shown = state.peek(bar, intraday)
        rows.append(state.close(bar, intraday))
        assert shown == rows[-1], f"bar {i}: the open bar showed other values than it closed with"
    return {
        name: np.array([np.nan if r[name] is None else r[name] for r in rows]) for name in NAMES
    }


def assert_equal_to_reference(bars: list[Bar], intraday: bool = True, label: str = "") -> int:
    """Compare every value; returns how many were compared (defined in the reference)."""
    ours, ref = incremental(bars, intraday), reference(bars, intraday)
    close = np.array([b["close"] for b in bars], dtype=float)
    compared = 0
    for name in NAMES:
        defined = ~np.isnan(ref[name])
        assert np.array_equal(defined, ~np.isnan(ours[name])), f"{label} {name}: null where not"
        scale = np.abs(ref[name][defined])
        if name in PRICE_DIFFERENCES:
            scale = np.maximum(scale, close[defined])
        error = np.abs(ours[name][defined] - ref[name][defined])
        worst = int(np.argmax(error - RTOL * scale)) if defined.any() else 0
        assert (error <= RTOL * scale + 1e-300).all(), (
            f"{label} {name}: {ours[name][defined][worst]!r}, TA-Lib {ref[name][defined][worst]!r}"
        )
        compared += int(defined.sum())
    return compared


# -- the series ---------------------------------------------------------------------


def random_walk(seed: int, n: int, start: float = 10.0) -> list[Bar]:
    """1-minute-like bars: 240 a day, overnight gaps, halts, limit-locked runs, noise."""
    rng = random.Random(seed)
    price, bars = start, []
    mode, left = "walk", 0
    day = dt.date(2026, 1, 5)
    for i in range(n):
        if i and i % 240 == 0:
            day += dt.timedelta(days=1)
            price = max(0.5, round(price * (1 + rng.uniform(-0.08, 0.08)), 2))  # overnight gap
        if left == 0:
            mode = rng.choices(["walk", "halt", "locked"], [0.8, 0.1, 0.1])[0]
            left = rng.randint(5, 40)
        left -= 1
        if mode == "halt":
            bar = {"open": price, "high": price, "low": price, "close": price, "volume": 0,
                   "amount": 0.0}  # fmt: skip
        elif mode == "locked":
            volume = rng.randint(1, 50) * 100
            bar = {"open": price, "high": price, "low": price, "close": price,
                   "volume": volume, "amount": round(volume * price, 2)}  # fmt: skip
        else:
            o = price
            c = max(0.01, round(o * (1 + rng.gauss(0, 0.004)), 2))
            h = round(max(o, c) * (1 + abs(rng.gauss(0, 0.002))), 2)
            lo = round(min(o, c) * (1 - abs(rng.gauss(0, 0.002))), 2)
            volume = rng.randint(0, 500) * 100
            bar = {"open": o, "high": h, "low": lo, "close": c, "volume": volume,
                   "amount": round(volume * (h + lo + c) / 3, 2)}  # fmt: skip
            price = c
        bar["trade_date"] = day.isoformat()
        bars.append(bar)
    return bars


@pytest.mark.parametrize("seed", range(6))
def test_random_walks_equal_ta_lib(seed: int) -> None:
    bars = random_walk(seed, 1500, start=[10.0, 3.17, 150.0, 1500.0, 0.85, 42.0][seed])
    assert assert_equal_to_reference(bars, label=f"seed {seed}") > 1500 * 15


def test_daily_vwap_is_the_bars_own() -> None:
    bars = random_walk(7, 300)
    assert_equal_to_reference(bars, intraday=False)


def test_flat_and_halted_series_give_defined_values() -> None:
    """A series that never moves: RSI 0 (TA-Lib's rule), bands on the mid, KDJ at 50."""
    bars = [{"open": 5.0, "high": 5.0, "low": 5.0, "close": 5.0, "volume": 0, "amount": 0.0,
             "trade_date": "2026-01-05"} for _ in range(80)]  # fmt: skip
    assert_equal_to_reference(bars)
    last = incremental(bars)
    assert last["rsi6"][-1] == 0.0 and last["boll_upper"][-1] == 5.0 and last["kdj_k"][-1] == 50.0
    assert np.isnan(last["vwap"]).all()


# -- simulated days, through the worker's own candles and bars -------------------------


def simulated_minutes(days: list[dt.date]) -> dict[str, list[Bar]]:
    """Closed 1-minute candles per stock from SnapshotSource days, via the worker's Processor."""
    stocks = list(build_listing([("SH", "600", 3), ("SZ", "300", 2), ("BJ", "920", 1)], seed=4))
    stocks = [replace(s, suspended=False) for s in stocks]
    stocks[1] = replace(stocks[1], suspended=True)  # halted: no candles at all
    processor = Processor(StreamsSettings(metrics_port=0, indicators=False),
                          publish_normalized=False)  # fmt: skip
    closed: list[Bar] = []
    for day in days:
        source = SnapshotSource(tuple(stocks), dt.datetime.combine(day, dt.time(9, 14)), 6.0,
                                seed=day.toordinal())  # fmt: skip
        while source.clock.time() < dt.time(15, 2):
            quotes = [parse_record(line, 0, 0) for line in source.next().data.splitlines()]
            closed += (c.as_record() for c in processor.derive([(q, 0) for q in quotes])[0])
        closed += (c.as_record() for c in processor.candles.close_all())
    by_code: dict[str, list[Bar]] = defaultdict(list)
    for candle in closed:
        by_code[candle["code"]].append(candle)
    assert stocks[1].code not in by_code
    return by_code


def aggregate(minutes: list[Bar], tf: Timeframe) -> list[Bar]:
    """The reference bars of ``tf``: 1-minute candles grouped by their bucket."""
    groups: dict[int, list[Bar]] = defaultdict(list)
    for m in minutes:
        groups[bucket(tf, m["minute_ts"])[0]].append(m)
    return [
        {
            "minute_ts": start,
            "trade_date": ms[0]["trade_date"],
            "open": ms[0]["open"],
            "high": max(m["high"] for m in ms),
            "low": min(m["low"] for m in ms),
            "close": ms[-1]["close"],
            "volume": sum(m["volume"] for m in ms),
            "amount": round(sum(m["amount"] for m in ms), 2),
        }
        for start, ms in sorted(groups.items())
    ]


@pytest.fixture(scope="module")
def simulated() -> dict[str, list[Bar]]:
    return simulated_minutes([dt.date(2026, 11, 23), dt.date(2026, 11, 24)])


def test_simulated_days_equal_ta_lib_on_every_timeframe(simulated: dict[str, list[Bar]]) -> None:
    compared = 0
    for code, minutes in simulated.items():
        series = {tf: BarSeries(tf) for tf in TIMEFRAMES}
        built: dict[str, list[Bar]] = {tf: [] for tf in TIMEFRAMES}
        for minute in minutes:
            for tf, s in series.items():
                built[tf] += s.add_minute(minute)
        for tf in HIGHER:  # the last bar of each closes with the day's last minute
            assert series[tf].partial is None, (code, tf)
        for tf in TIMEFRAMES:
            expected = minutes if tf == "1m" else aggregate(minutes, tf)
            ohlcv = ("minute_ts", "open", "high", "low", "close", "volume", "amount")
            got = [{k: b[k] for k in ohlcv} for b in built[tf]]
            assert got == [{k: b[k] for k in ohlcv} for b in expected], (code, tf)
            compared += assert_equal_to_reference(expected, tf != "1d", f"{code} {tf}")
            ref = reference(expected, tf != "1d")
            for i, bar in enumerate(built[tf]):  # the values the bars carry are these too
                for name in ("ma5", "rsi6", "kdj_j"):
                    value = bar["indicators"][name]
                    assert (value is None) == np.isnan(ref[name][i]), (code, tf, name, i)
    assert compared > 10_000


def test_sixty_minute_bars_end_at_1030_1130_1400_1500(simulated: dict[str, list[Bar]]) -> None:
    minutes = next(iter(simulated.values()))
    series = BarSeries("60m")
    bars = [bar for m in minutes for bar in series.add_minute(m)]
    starts = [shanghai_datetime(b["minute_ts"]).strftime("%H:%M") for b in bars[:4]]
    assert starts == ["09:30", "10:30", "13:00", "14:00"]  # labelled by start: end +60 min
    assert len(bars) == 8  # two days, none spans the midday break


def test_open_bar_view_shows_the_values_it_closes_with(simulated: dict[str, list[Bar]]) -> None:
    """What the gateway shows for an open 5m bar equals the bar when its minutes have closed."""
    minutes = next(iter(simulated.values()))[:30]
    series = BarSeries("5m")
    for i, minute in enumerate(minutes):
        stored = BarSeries.from_json(orjson.loads(orjson.dumps(series.to_json())))
        [shown] = stored.view(dict(minute, closed=False))
        closed = series.add_minute(minute)
        if closed:
            assert [dict(shown, closed=True)] == closed, i


@pytest.mark.parametrize("tf", ["1m", "5m", "1d"])
def test_a_series_dumps_what_its_json_is_as_its_state_changes(
    tf: Timeframe, simulated: dict[str, list[Bar]]
) -> None:
    """``dumps`` serializes the indicator state once per bar folded: never a stale one."""
    minutes = next(iter(simulated.values()))[:40]
    series = BarSeries(tf)
    for i, minute in enumerate(minutes):
        if i == 17:  # a restored series (a new state object, the same bar count)
            series = BarSeries.from_json(orjson.loads(series.dumps()))
        assert series.dumps() == orjson.dumps(series.to_json()), i
        series.add_minute(minute)
        assert series.dumps() == orjson.dumps(series.to_json()), i


@pytest.mark.parametrize("tf", ["1m", "5m", "60m", "1d"])
def test_stored_forms_join_into_the_series_and_an_outdated_open_part_is_left_out(
    tf: Timeframe, simulated: dict[str, list[Bar]]
) -> None:
    """What Redis holds (a field set by each ``take_stored``) joins into the series at every
    minute; an open part goes only with the whole form it was made on: not with a newer
    one (the bar closed since), nor an older one (Redis gone back to an older snapshot)."""
    minutes = next(iter(simulated.values()))[:130]
    series = BarSeries(tf)
    fields: dict[str, bytes] = {}
    wholes: list[bytes] = []
    whole_at = 0
    closes = 0
    for i, minute in enumerate(minutes):
        closes += len(series.add_minute(minute))
        taken = series.take_stored()
        assert taken is not None, i  # a minute folded in changes a form
        whole, data = taken
        fields["whole" if whole else "open"] = data
        if whole:
            wholes.append(data)
            whole_at = minute["minute_ts"]
        else:
            assert len(data) < 400 and tf != "1m", i  # only the open bar's part
        assert minute["minute_ts"] - whole_at < WHOLE_EVERY_MS, i  # never a stale whole form
        joined = BarSeries.from_stored(fields["whole"], fields.get("open"))
        assert joined.dumps() == series.dumps(), i
        assert series.take_stored() is None  # nothing changed since
        if "open" in fields and len(wholes) > 1:
            # a whole form the open part was not made on: the newer one, when this minute
            # closed a bar, else the one before
            other = wholes[-1] if whole else wholes[-2]
            assert BarSeries.from_stored(other, fields["open"]).dumps() == other, i
    if tf != "1m":
        assert "open" in fields
    # whole forms: the first one, one per bar closed (each minute for 1m), and one after
    # WHOLE_EVERY_MS of open parts (15 minutes; the lunch break is 90)
    assert closes <= len(wholes) <= closes + 1 + len(minutes) // 15 + 1
    assert len(wholes) == 130 if tf == "1m" else len(wholes) < 130 // 3
    if tf == "1d":  # no close all morning: stored whole again every 15 minutes
        assert len(wholes) >= 120 // 15
    series.add_minute(minutes[0])  # a replayed minute: nothing to store
    assert series.take_stored() is None


def test_indicator_names_follow_the_avro_record() -> None:
    candle = schema_json("candle")
    [indicators] = [f for f in candle["fields"] if f["name"] == "indicators"]
    assert [f["name"] for f in indicators["type"][1]["fields"]] == list(NAMES)
    values = dict.fromkeys(NAMES, 1.0)
    assert select(values, frozenset({"macd", "rsi"})) == {
        name: 1.0 for name in (*GROUPS["macd"], *GROUPS["rsi"])
    }
