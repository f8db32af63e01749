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


@pytest.mark.parametrize(
    ("tod_hms", "zeros", "suspended"),
    [
        ((9, 29, 59), True, False),
        ((9, 30, 0), True, True),
        ((14, 59, 57), True, True),
        ((14, 59, 57), False, False),
    ],
)
def test_suspended_rule(tod_hms: tuple[int, int, int], zeros: bool, suspended: bool) -> None:
    h, m, s = tod_hms
    over: dict[str, Any] = {"time_of_day": ((h * 60 + m) * 60 + s) * 1000}
    if zeros:
        over.update(open_=0.0, price=0.0, high=0.0, low=0.0, volume=0, amount=0.0)
    rec = quote(**over)
    assert rec["suspended"] is suspended
    assert rec["traded"] is not zeros


def test_opened_but_price_zero_is_not_suspended() -> None:
    # An auction print (open set) without a last price is odd, not suspended.
    assert quote(price=0.0, volume=0, open_=11.02, time_of_day=OPENING_MS)["suspended"] is False
