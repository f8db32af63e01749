"""streams.alerts: limit transitions, fast moves, volume spikes, cooldown, replays."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
from collections.abc import Callable
from typing import Any

import pytest

from schemas.exchange import exchange_ts_of, shanghai_datetime
from schemas.serde import SingleObjectCodec
from streams.alerts import (
    Alert,
    AlertConfig,
    AlertConfigError,
    AlertDetector,
    Alerts,
    CompiledAlertDetector,
)
from streams.parse import parse_record
from streams.redis_lua import alert_call
from tests.feed_lines import sse_line
from tests.native import native_or_skip

DAY = dt.date(2026, 3, 2)
NEXT_DAY = dt.date(2026, 3, 3)
ALERT_CODEC = SingleObjectCodec("alert")
QUOTE_CODEC = SingleObjectCodec("quote")

MakeDetector = Callable[..., Alerts]


def compiled(config: AlertConfig | None = None) -> CompiledAlertDetector:
    return CompiledAlertDetector(native_or_skip(), config)


@pytest.fixture(params=[AlertDetector, compiled], ids=["python", "compiled"])
def detector(request: pytest.FixtureRequest) -> MakeDetector:
    """Makes the detector under test: every behaviour holds for the reference
    (:class:`AlertDetector`) and the compiled one alike."""
    make: MakeDetector = request.param
    return make


def at(hh: int, mm: int, ss: int = 0, day: dt.date = DAY) -> int:
    return exchange_ts_of(day, dt.time(hh, mm, ss))


def quote(
    ts: int,
    price: float = 10.0,
    volume: int = 1_000_000,
    *,
    code: str = "600000",
    prev_close: float = 10.0,
    traded: bool | None = None,
    suspended: bool = False,
) -> dict[str, Any]:
    """A complete Quote record with change_pct and limit flags derived as the normalizer does."""
    traded = (price > 0 and volume > 0) if traded is None else traded
    limit_up, limit_down = round(prev_close * 1.1, 2), round(prev_close * 0.9, 2)
    change = round(price - prev_close, 2) if traded else 0.0
    return {
        "symbol": f"sh{code}", "code": code, "market": "SH", "board": "MAIN",
        "name": "浦发银行", "is_st": False, "exchange_ts": ts,
        "trade_date": shanghai_datetime(ts).date().isoformat(), "open": prev_close,
        "prev_close": prev_close, "price": price, "high": price, "low": price,
        "bid": price, "ask": price, "volume": volume, "amount": volume * price,
        "bid_prices": [], "bid_volumes": [], "ask_prices": [], "ask_volumes": [],
        "change": change, "change_pct": round(change / prev_close * 100, 2) if traded else 0.0,
        "limit_up": limit_up, "limit_down": limit_down, "traded": traded,
        "suspended": suspended,
        "at_limit_up": traded and round(price * 100) >= round(limit_up * 100),
        "at_limit_down": traded and round(price * 100) <= round(limit_down * 100),
        "receive_ts": ts, "process_ts": ts, "limit_free": False,
        "not_traded_yet": not traded and not suspended, "phase": "continuous",
        "avg_price": 0.0, "amplitude": 0.0, "order_imbalance": 0.0,
    }  # fmt: skip


def kinds(alerts: list[Alert]) -> list[str]:
    return [a.kind for a in alerts]


def run(det: Alerts, ticks: list[dict[str, Any]]) -> list[Alert]:
    out: list[Alert] = []
    for q in ticks:
        out += det.update(q)
    return out


def test_quote_helper_matches_schema() -> None:
    q = quote(at(10, 0), 11.0)
    assert q["at_limit_up"] and QUOTE_CODEC.decode(QUOTE_CODEC.encode(q)) == q


# ------------------------------------------------------------------ limits


def test_limit_up_touch_and_leave_once_per_transition(detector: MakeDetector) -> None:
    det = detector(AlertConfig(fast_move_pct=50))
    assert det.update(quote(at(9, 25), 10.5)) == []
    touch = det.update(quote(at(9, 40), 11.0))
    assert kinds(touch) == ["LIMIT_UP_TOUCH"]
    a = touch[0]
    assert (a.code, a.name, a.market, a.price, a.change_pct) == (
        "600000", "浦发银行", "SH", 11.0, 10.0,
    )  # fmt: skip
    assert "600000" in a.message and "浦发银行" in a.message and "11.00" in a.message
    assert ALERT_CODEC.decode(ALERT_CODEC.encode(a.as_record())) == a.as_record()
    for s in range(3, 60, 3):  # sitting at the limit: silence
        assert det.update(quote(at(9, 40, s), 11.0)) == []
    leave = det.update(quote(at(9, 45), 10.9))
    assert kinds(leave) == ["LIMIT_UP_LEAVE"] and "left" in leave[0].message


def test_limit_down_touch_and_leave(detector: MakeDetector) -> None:
    det = detector(AlertConfig(fast_move_pct=50))
    det.update(quote(at(10, 0), 9.5))
    assert kinds(det.update(quote(at(10, 5), 9.0))) == ["LIMIT_DOWN_TOUCH"]
    assert det.update(quote(at(10, 6), 9.0)) == []
    assert kinds(det.update(quote(at(10, 8), 9.01))) == ["LIMIT_DOWN_LEAVE"]


def test_opening_at_the_limit_alerts_but_a_mid_session_first_sight_does_not(
    detector: MakeDetector,
) -> None:
    det = detector()
    det.update(quote(at(9, 15), 11.0, 0))  # indicative, not traded
    assert kinds(det.update(quote(at(9, 25), 11.0))) == ["LIMIT_UP_TOUCH"]
    late = detector()
    assert late.update(quote(at(10, 30), 11.0)) == []  # restarted worker: no stale alert
    assert kinds(late.update(quote(at(10, 31), 10.8))) == ["LIMIT_UP_LEAVE"]


def test_a_new_day_starts_off_the_limit(detector: MakeDetector) -> None:
    det = detector()
    det.update(quote(at(9, 25), 10.5))
    assert kinds(det.update(quote(at(14, 59), 11.0))) == ["LIMIT_UP_TOUCH"]
    assert kinds(det.update(quote(at(9, 25, day=NEXT_DAY), 12.1, prev_close=11.0))) == [
        "LIMIT_UP_TOUCH"
    ]


def test_cooldown_defers_a_limit_transition_until_it_is_over(detector: MakeDetector) -> None:
    det = detector(AlertConfig(cooldown_s=60, fast_move_pct=50))
    det.update(quote(at(10, 0, 0), 10.8))
    assert kinds(det.update(quote(at(10, 0, 3), 11.0))) == ["LIMIT_UP_TOUCH"]
    assert kinds(det.update(quote(at(10, 0, 6), 10.9))) == ["LIMIT_UP_LEAVE"]
    assert det.update(quote(at(10, 0, 9), 11.0)) == []  # TOUCH again within 60 s: held
    assert det.counters.cooled_down == 1
    assert det.update(quote(at(10, 1, 0), 11.0)) == []
    # cooldown over, still at the limit: the held-back touch is reported now
    late = det.update(quote(at(10, 1, 3), 11.0))
    assert kinds(late) == ["LIMIT_UP_TOUCH"] and late[0].exchange_ts == at(10, 1, 3)
    assert det.update(quote(at(10, 1, 6), 11.0)) == []


def test_cooldown_runs_in_trading_seconds_across_lunch(detector: MakeDetector) -> None:
    """A touch at 11:29:50 and a touch again at 13:00:05 are 15 trading seconds
    apart (the market is closed 11:30-13:00): within a 60 s cooldown."""
    det = detector(AlertConfig(cooldown_s=60, fast_move_pct=50))
    det.update(quote(at(11, 29, 40), 10.8))
    assert kinds(det.update(quote(at(11, 29, 50), 11.0))) == ["LIMIT_UP_TOUCH"]
    assert kinds(det.update(quote(at(11, 29, 53), 10.9))) == ["LIMIT_UP_LEAVE"]
    assert det.update(quote(at(13, 0, 5), 11.0)) == []  # 15 trading seconds: held back
    assert det.counters.cooled_down == 1
    assert det.update(quote(at(13, 0, 47), 11.0)) == []  # 57 trading seconds
    assert kinds(det.update(quote(at(13, 0, 50), 11.0))) == ["LIMIT_UP_TOUCH"]  # 60


def test_new_listing_without_limit_never_alerts_a_limit(detector: MakeDetector) -> None:
    """N中芯 opening at 82.92 on prev_close 27.46 (first day: no price limit,
    exchange rule) is at no limit: no LIMIT_UP_TOUCH from the parsed line."""
    det = detector(AlertConfig(fast_move_pct=500))
    line = sse_line(symbol="sh688981", name="N中芯", prev_close="27.46", open="82.92",
                    price="82.92", high="82.92", low="82.92", time="09:25:03")  # fmt: skip
    assert det.update(parse_record(line, receive_ts=0, process_ts=0)) == []


def test_a_held_back_transition_that_reverted_is_not_reported(detector: MakeDetector) -> None:
    det = detector(AlertConfig(cooldown_s=60, fast_move_pct=50))
    det.update(quote(at(10, 0, 0), 10.8))
    det.update(quote(at(10, 0, 3), 11.0))  # TOUCH
    det.update(quote(at(10, 0, 6), 10.9))  # LEAVE
    det.update(quote(at(10, 0, 9), 11.0))  # TOUCH held back
    det.update(quote(at(10, 0, 12), 10.9))  # left again: state equals what was reported
    assert run(det, [quote(at(10, 2, s), 10.9) for s in range(0, 30, 3)]) == []


# -------------------------------------------------------------- fast moves


def test_fast_move_up_within_the_window(detector: MakeDetector) -> None:
    det = detector(AlertConfig(fast_move_pct=5.0, fast_move_window_s=300))
    prices = [10.0, 10.1, 10.2, 10.3, 10.4]
    ticks = [quote(at(10, 0, 3 * i), p) for i, p in enumerate(prices)]
    assert run(det, ticks) == []
    [a] = det.update(quote(at(10, 2), 10.5))
    assert a.kind == "FAST_MOVE" and a.value == pytest.approx(5.0)
    assert "+5.00%" in a.message and "10.00" in a.message and "10.50" in a.message
    assert ALERT_CODEC.decode(ALERT_CODEC.encode(a.as_record())) == a.as_record()
    # the window restarted: staying up there is not a new move
    assert run(det, [quote(at(10, 3 + i), 10.5) for i in range(8)]) == []


def test_fast_move_down_is_negative(detector: MakeDetector) -> None:
    det = detector()
    det.update(quote(at(10, 0), 10.0, prev_close=9.8))
    det.update(quote(at(10, 1), 10.2, prev_close=9.8))
    [a] = det.update(quote(at(10, 3), 9.65, prev_close=9.8))
    assert a.kind == "FAST_MOVE"
    assert a.value == pytest.approx((9.65 - 10.2) / 10.2 * 100, abs=1e-4)
    assert "-5.39%" in a.message


def test_a_slow_move_is_not_fast(detector: MakeDetector) -> None:
    det = detector(AlertConfig(fast_move_window_s=300))
    ticks = [quote(at(10, i), round(10.0 + 0.01 * i, 2)) for i in range(60)]  # +6% in 1 h
    assert run(det, ticks) == []


def test_fast_move_window_runs_on_trading_time_across_lunch(detector: MakeDetector) -> None:
    det = detector(AlertConfig(fast_move_window_s=300))
    det.update(quote(at(11, 28), 10.0))
    assert kinds(det.update(quote(at(13, 2), 10.6))) == ["FAST_MOVE"]  # 4 trading minutes
    det2 = detector(AlertConfig(fast_move_window_s=300))
    det2.update(quote(at(11, 24), 10.0))
    assert det2.update(quote(at(13, 2), 10.6)) == []  # 8 trading minutes


def test_fast_move_ignores_untraded_prices(detector: MakeDetector) -> None:
    det = detector()
    det.update(quote(at(9, 30, 3), 10.0))
    det.update(quote(at(9, 30, 6), 0.0, traded=False))
    assert det.update(quote(at(9, 30, 9), 10.1)) == []


# ----------------------------------------------------------- volume spikes


def _steady(det: Alerts, start: int, n: int, rate: int, cum: int = 0) -> int:
    """n ticks every 3 s trading ``rate`` shares per tick; returns the final cumulative."""
    for i in range(n):
        cum += rate
        assert det.update(quote(start + 3000 * i, 10.0, cum)) == []
    return cum


def test_volume_spike(detector: MakeDetector) -> None:
    cfg = AlertConfig(volume_spike_ratio=5.0, volume_min_shares=10_000, volume_window_s=300)
    det = detector(cfg)
    cum = _steady(det, at(10, 0), 100, 5_000)  # 5,000 shares per 3 s
    [a] = det.update(quote(at(10, 5), 10.0, cum + 30_000))  # 6x the rate
    assert a.kind == "VOLUME_SPIKE" and a.value == pytest.approx(6.0)
    assert "30,000 shares in 3s" in a.message and "6.0x" in a.message
    assert ALERT_CODEC.decode(ALERT_CODEC.encode(a.as_record())) == a.as_record()
    # 4x is below the ratio
    det2 = detector(cfg)
    cum = _steady(det2, at(10, 0), 100, 5_000)
    assert det2.update(quote(at(10, 5), 10.0, cum + 20_000)) == []


def test_volume_spike_needs_minimum_shares_history_and_continuous_trading(
    detector: MakeDetector,
) -> None:
    small = detector(AlertConfig(volume_min_shares=100_000))
    cum = _steady(small, at(10, 0), 100, 1_000)
    assert small.update(quote(at(10, 5), 10.0, cum + 50_000)) == []  # 50x but tiny
    young = detector(AlertConfig(volume_min_shares=1, volume_min_history_s=60))
    cum = _steady(young, at(10, 0), 10, 1_000)  # 27 s of history
    assert young.update(quote(at(10, 0, 30), 10.0, cum + 50_000)) == []
    auction = detector(AlertConfig(volume_min_shares=1))
    cum = _steady(auction, at(14, 52), 99, 1_000)
    assert auction.update(quote(at(15, 0), 10.0, cum + 900_000)) == []  # closing match


def test_volume_after_lunch_is_measured_on_trading_time(detector: MakeDetector) -> None:
    det = detector(AlertConfig(volume_min_shares=1))
    cum = _steady(det, at(11, 25), 100, 1_000)  # through 11:29:57
    for i in range(1, 20):  # steady after lunch: the 90-minute gap is no spike
        cum += 1_000
        assert det.update(quote(at(13, 0) + 3000 * i, 10.0, cum)) == []


def test_counter_reset_restarts_the_volume_window(detector: MakeDetector) -> None:
    det = detector(AlertConfig(volume_min_shares=1))
    _steady(det, at(10, 0), 50, 100_000)
    cum = _steady(det, at(10, 3), 30, 1_000, cum=0)  # data fix: counter restarts lower
    # judged against the post-reset rate (1,000 per 3 s), not the old one
    assert kinds(det.update(quote(at(10, 4, 30), 10.0, cum + 6_000))) == ["VOLUME_SPIKE"]


# ------------------------------------------------------ replays, limits on memory


def test_replays_and_suspended_quotes_are_ignored(detector: MakeDetector) -> None:
    det = detector()
    det.update(quote(at(10, 0), 10.0))
    det.update(quote(at(10, 1), 10.9))
    assert det.update(quote(at(10, 1), 11.0)) == []  # same ts
    assert det.update(quote(at(10, 0, 30), 11.0)) == []  # older
    assert det.counters.replays == 2
    assert det.update(quote(at(10, 2), 0.0, 0, suspended=True)) == []
    assert det.counters.suspended == 1


def test_memory_per_stock_is_bounded() -> None:
    det = AlertDetector(AlertConfig(max_points=64))
    base = at(10, 0)
    for i in range(5000):  # a tick every 10 ms of a slowly rising price
        det.update(quote(base + 10 * i, 10.0 + i * 1e-5, 1_000_000 + i))
    st = det._stocks["600000"]
    assert len(st.mins) <= 64 and len(st.maxs) <= 64 and len(st.vol_points) <= 64
    assert len(st.cooldown) <= 6


def test_the_compiled_windows_are_bounded_too() -> None:
    det = compiled(AlertConfig(max_points=64))
    base = at(10, 0)
    for i in range(5000):  # as test_memory_per_stock_is_bounded
        det.update(quote(base + 10 * i, 10.0 + i * 1e-5, 1_000_000 + i))
    held = det.held("600000")
    assert held is not None
    mins, maxs, volumes, cooldowns = held
    assert (mins, volumes) == (64, 64) and maxs <= 64 and cooldowns <= 6
    det.forget(["600000"])
    assert det.held("600000") is None


def test_the_windows_keep_no_object_the_garbage_collector_tracks_per_tick() -> None:
    """A steady feed's ticks stay in the fast-move and volume windows for minutes; as
    tuples they were most of what a worker's young collections walked."""
    det = AlertDetector()
    base = at(10, 0)
    codes = [f"60{i:04d}" for i in range(50)]
    for i, code in enumerate(codes):  # every stock's state made, then left alone
        det.update(quote(base + i, 10.0, 1_000_000, code=code))
    gc.collect()
    gc.freeze()
    enabled = gc.isenabled()
    gc.disable()  # a collection would untrack the tuples: count what one would walk
    try:
        young = len(gc.get_objects(generation=0))
        for k in range(1, 41):  # 40 ticks of each stock, all inside the 300 s windows
            for i, code in enumerate(codes):
                det.update(quote(base + 3000 * k + i, 10.0 + 0.01 * (k % 7), 1_000_000 + 500 * k,
                                 code=code))  # fmt: skip
        kept = len(gc.get_objects(generation=0)) - young
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()
    assert all(len(det._stocks[code].vol_points) == 41 for code in codes)
    assert kept < 20, kept  # 2,000 ticks: one tuple each would be 2,000 or more


def test_config_is_frozen_and_validated() -> None:
    cfg = AlertConfig()
    assert (cfg.fast_move_pct, cfg.fast_move_window_s, cfg.volume_spike_ratio) == (5.0, 300, 5.0)
    assert (cfg.volume_window_s, cfg.cooldown_s) == (300, 60)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.cooldown_s = 1  # type: ignore[misc]
    with pytest.raises(AlertConfigError):
        AlertConfig(fast_move_pct=0)
    with pytest.raises(AlertConfigError):
        AlertConfig(cooldown_s=-1)


def test_stocks_are_independent(detector: MakeDetector) -> None:
    det = detector()
    det.update(quote(at(10, 0), 10.0, code="600000"))
    det.update(quote(at(10, 0), 10.0, code="600001"))
    assert det.update(quote(at(10, 1), 10.3, code="600000")) == []
    [a] = det.update(quote(at(10, 1), 10.6, code="600001"))
    assert a.code == "600001"


def test_alert_bytes_on_kafka_and_in_redis_are_pinned(detector: MakeDetector) -> None:
    """What the detector wrote before alerts were typed values (dicts then)."""
    det = detector(AlertConfig(fast_move_pct=50))
    det.update(quote(at(9, 25), 10.5))
    [alert] = det.update(quote(at(9, 40), 11.0))
    _, argv = alert_call([alert])
    assert argv[2:] == [
        "600000|LIMIT_UP_TOUCH|1772415600000",
        '{"code":"600000","name":"浦发银行","market":"SH","kind":"LIMIT_UP_TOUCH",'
        '"exchange_ts":1772415600000,"price":11.0,"change_pct":10.0,"value":10.0,'
        '"message":"600000 浦发银行 hit its limit-up price 11.00: 11.00 (+10.00%)"}'.encode(),
    ]
    assert ALERT_CODEC.encode(alert.as_record()).hex() == (
        "c301c846b674c7e0d6b10c36303030303018e6b5a6e58f91e993b6e8a18c0453480080969ec39567"
        "000000000000264000000000000024400000000000002440820136303030303020e6b5a6e58f91e9"
        "93b6e8a18c2068697420697473206c696d69742d75702070726963652031312e30303a2031312e30"
        "3020282b31302e30302529"
    )
