"""streams.normalize: exchange time arithmetic, derived fields and the suspended rule."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.serde import SingleObjectCodec
from streams.normalize import (
    OPENING_MS,
    board_or_none,
    build_quote,
    limits,
    local_date_and_time,
    local_midnight_ms,
    name_is_st,
    phase_of,
    time_of_day_ms,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize("date", ["1991-04-14", "2000-02-29", "2026-01-01", "2026-11-23"])
def test_local_midnight_matches_zoneinfo(date: str) -> None:
    midnight = dt.datetime.fromisoformat(date).replace(tzinfo=SHANGHAI)
    assert local_midnight_ms(date) == int(midnight.timestamp()) * 1000


@pytest.mark.parametrize(
    "date",
    ["2026-02-30", "2025-02-29", "2026-13-01", "2026-00-10", "2026-1-23", "2026/11/23",
     "20261123", "", "2026-11-2x", "２０２６-11-23", "2026-11-23 "],
)  # fmt: skip
def test_local_midnight_rejects(date: str) -> None:
    with pytest.raises(ValueError):
        local_midnight_ms(date)


@pytest.mark.parametrize(
    ("time", "ms"),
    [("00:00:00", 0), ("09:30:00", OPENING_MS), ("14:59:57", (14 * 3600 + 59 * 60 + 57) * 1000),
     ("23:59:59", 86_399_000)],
)  # fmt: skip
def test_time_of_day(time: str, ms: int) -> None:
    assert time_of_day_ms(time) == ms


@pytest.mark.parametrize(
    "time", ["24:00:00", "25:61:00", "12:60:00", "12:00:60", "9:30:00", "09:30", "09-30-00",
             "0a:30:00", "+9:30:00", "１２:00:00"],
)  # fmt: skip
def test_time_of_day_rejects(time: str) -> None:
    with pytest.raises(ValueError):
        time_of_day_ms(time)


@pytest.mark.parametrize(
    "local",
    [
        "2025-11-23T14:59:57",
        "2025-11-24T00:00:00",
        "2025-11-23T23:59:59.999",
        "1999-12-31T08:00:00",
    ],
)
def test_local_date_and_time_matches_zoneinfo(local: str) -> None:
    moment = dt.datetime.fromisoformat(local).replace(tzinfo=SHANGHAI)
    ts = round(moment.timestamp() * 1000)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    expected_tod = round((moment - midnight).total_seconds() * 1000)
    assert local_date_and_time(ts) == (moment.date().isoformat(), expected_tod)


def test_local_date_and_time_out_of_range() -> None:
    with pytest.raises(ValueError):
        local_date_and_time(10**17)
    with pytest.raises(ValueError):
        local_date_and_time(10**30)


def test_lookup_helpers() -> None:
    assert board_or_none("SH", "688001") == "STAR"
    assert board_or_none("SZ", "301001") == "CHINEXT"
    assert board_or_none("BJ", "830799") == "BJ"
    assert board_or_none("SH", "900901") is None
    assert board_or_none("SZ", "600000") is None
    assert name_is_st("*ST海投") and name_is_st("ST康美") and not name_is_st("中国平安")


def test_limits_are_cached_and_in_cents() -> None:
    limits.cache_clear()
    assert limits(11.0, "MAIN", False, "2026-11-23") == (12.1, 9.9, 1210, 990)
    assert limits(11.0, "MAIN", False, "2026-11-23") == (12.1, 9.9, 1210, 990)
    assert limits.cache_info().hits == 1
    assert limits(0.0, "MAIN", False, "2026-11-23") == (0.0, 0.0, 0, 0)


def quote(**over: Any) -> dict[str, Any]:
    """build_quote with a traded sz000001 at 14:59:57; keyword overrides."""
    args: dict[str, Any] = {
        "symbol": "sz000001",
        "code": "000001",
        "market": "SZ",
        "board": "MAIN",
        "name": "平安银行",
        "exchange_ts": 1795417197000,
        "trade_date": "2026-11-23",
        "time_of_day": (14 * 3600 + 59 * 60 + 57) * 1000,
        "open_": 11.02,
        "prev_close": 11.0,
        "price": 11.05,
        "high": 11.1,
        "low": 10.98,
        "bid": 11.04,
        "ask": 11.05,
        "volume": 58342100,
        "amount": 643981234.5,
        "bid_prices": [11.04, 11.03, 11.02, 11.01, 11.0],
        "bid_volumes": [1200, 3400, 500, 7800, 9900],
        "ask_prices": [11.05, 11.06, 11.07, 11.08, 11.09],
        "ask_volumes": [1500, 2000, 300, 4100, 600],
        "receive_ts": 1,
        "process_ts": 2,
    }
    args.update(over)
    record = build_quote(**args)
    codec = SingleObjectCodec("quote")
    assert codec.decode(codec.encode(record)) == record
    return record


def test_change_rounds_away_float_noise() -> None:
    rec = quote(price=11.05, prev_close=11.0)  # 11.05 - 11.0 == 0.05000000000000071
    assert rec["change"] == 0.05
    assert rec["change_pct"] == 0.45


def test_change_zero_without_trade_or_prev_close() -> None:
    not_traded = quote(price=11.05, volume=0)
    assert not_traded["traded"] is False
    assert (not_traded["change"], not_traded["change_pct"]) == (0.0, 0.0)
    no_prev = quote(prev_close=0.0)
    assert no_prev["traded"] is True
    assert (no_prev["change"], no_prev["change_pct"]) == (0.0, 0.0)
    assert (no_prev["limit_up"], no_prev["limit_down"]) == (0.0, 0.0)
    assert no_prev["at_limit_up"] is False and no_prev["at_limit_down"] is False


def test_at_limit_compares_cents_not_floats() -> None:
    # 1.1 * 11.0 = 12.100000000000001 in floats; the feed's 12.1 is the limit.
    assert quote(price=12.1)["at_limit_up"] is True
    assert quote(price=12.09)["at_limit_up"] is False
    assert quote(price=9.9)["at_limit_down"] is True
    assert quote(price=9.91)["at_limit_down"] is False
    # Not traded: no limit flags even when the price field sits at the limit.
    assert quote(price=12.1, volume=0)["at_limit_up"] is False


EMPTY_BOOK: dict[str, Any] = {
    "bid_prices": [0.0] * 5, "bid_volumes": [0] * 5,
    "ask_prices": [0.0] * 5, "ask_volumes": [0] * 5,
}  # fmt: skip
NO_TRADE: dict[str, Any] = {
    "open_": 0.0, "price": 0.0, "high": 0.0, "low": 0.0, "volume": 0, "amount": 0.0,
}  # fmt: skip


def hms(h: int, m: int, s: int) -> int:
    return ((h * 60 + m) * 60 + s) * 1000


@pytest.mark.parametrize(
    ("tod_hms", "no_trade", "empty_book", "status"),
    [
        ((9, 20, 0), True, True, "not_traded_yet"),  # pre-open: a halt cannot be told yet
        ((9, 30, 0), True, True, "suspended"),  # halted: no order book in the session
        ((9, 30, 3), True, False, "not_traded_yet"),  # orders, no match yet: not suspended
        ((14, 59, 57), True, False, "not_traded_yet"),  # a thin name, still quoting
        ((15, 0, 3), True, False, "suspended"),  # no trade all day
        ((14, 59, 57), False, False, "traded"),
        ((14, 59, 57), False, True, "traded"),  # traded, book emptied at a limit
    ],
)
def test_suspended_is_a_halt_or_no_trade_all_day_not_a_late_first_trade(
    tod_hms: tuple[int, int, int], no_trade: bool, empty_book: bool, status: str
) -> None:
    """A stock with no trade yet at 09:30:03 but orders in its book is waiting
    for its first match, not suspended (thin BJ names): only a halt (no book
    at all in the session) or a day without any trade is suspended."""
    over: dict[str, Any] = {"time_of_day": hms(*tod_hms)}
    if no_trade:
        over.update(NO_TRADE)
    if empty_book:
        over.update(EMPTY_BOOK)
    rec = quote(**over)
    flags = {k for k in ("traded", "suspended", "not_traded_yet") if rec[k]}
    assert flags == {status}


def test_opened_but_price_zero_is_not_suspended() -> None:
    # An auction print (open set) without a last price is odd, not suspended.
    assert quote(price=0.0, volume=0, open_=11.02, time_of_day=OPENING_MS)["suspended"] is False


def test_change_pct_rounds_half_up_on_decimals() -> None:
    """Terminals show 8.00 -> 8.01 as +0.13% (0.125 rounded half up); float
    round() gave 0.12 (0.01 / 8 * 100 == 0.12499999999999734)."""
    assert quote(prev_close=8.0, price=8.01, high=8.01, low=8.0)["change_pct"] == 0.13
    assert quote(prev_close=8.0, price=7.99, high=8.0, low=7.99)["change_pct"] == -0.13
    assert quote(prev_close=1500.0, price=1500.05, high=1500.05, low=1500.0)["change_pct"] == 0.0
    assert quote(prev_close=11.0, price=11.0)["change_pct"] == 0.0


def test_new_listing_has_no_limit_prices_or_flags() -> None:
    """Exchange rule: an N-prefixed name trades its first day without a price
    limit (N中芯 at 82.92 against prev_close 27.46 is +202%, not at limit-up)."""
    rec = quote(
        symbol="sh688981", code="688981", market="SH", board="STAR", name="N中芯",
        prev_close=27.46, open_=82.92, price=82.92, high=82.92, low=82.92,
    )  # fmt: skip
    assert rec["limit_free"] is True
    assert (rec["limit_up"], rec["limit_down"]) == (0.0, 0.0)
    assert rec["at_limit_up"] is False and rec["at_limit_down"] is False
    assert rec["change_pct"] == 201.97
    assert quote(name="C华电")["limit_free"] is True  # main board, days 2-5
    assert quote(name="平安银行")["limit_free"] is False


def test_bj_c_name_has_a_limit_again() -> None:
    """BJ new listings are limit-free on the first day only."""
    rec = quote(
        symbol="bj920819", code="920819", market="BJ", board="BJ", name="C颖泰",
        prev_close=4.8, price=6.24, high=6.24, low=6.0,
    )  # fmt: skip
    assert rec["limit_free"] is False and rec["at_limit_up"] is True


@pytest.mark.parametrize(
    ("tod_hms", "phase"),
    [
        ((9, 0, 0), "pre_open"),
        ((9, 15, 0), "opening_auction"),
        ((9, 25, 3), "opening_auction"),
        ((9, 30, 0), "continuous"),
        ((11, 29, 59), "continuous"),
        ((11, 30, 2), "midday_break"),
        ((13, 0, 0), "continuous"),
        ((14, 57, 0), "closing_auction"),
        ((15, 0, 3), "closed"),
    ],
)
def test_phase_follows_the_exchange_sessions(tod_hms: tuple[int, int, int], phase: str) -> None:
    """SSE/SZSE/BSE sessions: call auction 09:15-09:25, continuous 09:30-11:30 and
    13:00-14:57, closing call auction 14:57-15:00."""
    assert phase_of(hms(*tod_hms)) == phase
    assert quote(time_of_day=hms(*tod_hms))["phase"] == phase


def test_avg_price_amplitude_and_order_imbalance() -> None:
    rec = quote()
    assert rec["avg_price"] == 11.038  # 643,981,234.50 / 58,342,100
    assert rec["amplitude"] == 1.09  # (11.10 - 10.98) / 11.00
    assert rec["order_imbalance"] == 45.69  # (22,800 - 8,500) / 31,300 bid/ask shares
    empty = quote(**NO_TRADE, **EMPTY_BOOK)
    assert (empty["avg_price"], empty["amplitude"], empty["order_imbalance"]) == (0.0, 0.0, 0.0)
