"""Candle timeframes and their session-aligned buckets (pure arithmetic on epoch ms).

A bar of any timeframe is a run of 1-minute candles (labelled by their start,
09:30 ... 11:29 and 13:00 ... 14:59: see streams/trading_clock.py). A day's 240
trading minutes are numbered 0..239; an n-minute bar holds minutes
``k*n ... k*n + n-1``. Both sessions last 120 minutes, a multiple of every
intraday timeframe, so no bar spans the midday break: the 60-minute bars
start at 09:30, 10:30, 13:00 and 14:00 (terminals, labelling by the end,
show 10:30, 11:30, 14:00, 15:00). The daily bar holds the whole day. Bars
are labelled by their first minute's start, like the 1-minute candles.

Shared by the stream workers (which build the bars), the gateway and the
backfill. Never reads the clock, never does I/O.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

from schemas.exchange import SHANGHAI_TZ
from schemas.market_rules import SESSIONS

Timeframe = Literal["1m", "5m", "15m", "30m", "60m", "1d"]
TIMEFRAMES: Final[tuple[Timeframe, ...]] = ("1m", "5m", "15m", "30m", "60m", "1d")
#: the timeframes built from the closed 1-minute candles
HIGHER: Final[tuple[Timeframe, ...]] = TIMEFRAMES[1:]
MINUTES: Final[dict[Timeframe, int]] = {
    "1m": 1,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "60m": 60,
    "1d": 240,
}

MINUTE_MS: Final = 60_000
DAY_MS: Final = 86_400_000
TZ_OFFSET_MS: Final = SHANGHAI_TZ.utcoffset(None) // dt.timedelta(milliseconds=1)


def _session_ms(label: str) -> tuple[int, int]:
    for start, end, name in SESSIONS:
        if name == label:
            return tuple(  # type: ignore[return-value]
                ((t.hour * 60 + t.minute) * 60 + t.second) * 1000 for t in (start, end)
            )
    raise LookupError(f"schemas.market_rules.SESSIONS has no {label!r} session")


AM_START, AM_END = _session_ms("continuous_am")
PM_START = _session_ms("continuous_pm")[0]
PM_END = _session_ms("closing_auction")[1]
AM_MINUTES: Final = (AM_END - AM_START) // MINUTE_MS  # 120
DAY_MINUTES: Final = AM_MINUTES + (PM_END - PM_START) // MINUTE_MS  # 240


def minute_index(minute_ts: int) -> int:
    """The trading minute (0..239) of a 1-minute candle's start; ValueError outside sessions."""
    tod = (minute_ts + TZ_OFFSET_MS) % DAY_MS
    if AM_START <= tod < AM_END:
        return (tod - AM_START) // MINUTE_MS
    if PM_START <= tod < PM_END:
        return AM_MINUTES + (tod - PM_START) // MINUTE_MS
    raise ValueError(f"{minute_ts} is no trading minute")


def minute_ts_of(day_start: int, index: int) -> int:
    """The start (epoch ms) of trading minute ``index`` of the local day from ``day_start``."""
    if index < AM_MINUTES:
        return day_start + AM_START + index * MINUTE_MS
    return day_start + PM_START + (index - AM_MINUTES) * MINUTE_MS


def bucket(tf: Timeframe, minute_ts: int) -> tuple[int, int]:
    """(start, last minute) of the ``tf`` bar holding the 1-minute candle ``minute_ts``."""
    if tf == "1m":
        return minute_ts, minute_ts
    n = MINUTES[tf]
    day_start = minute_ts - (minute_ts + TZ_OFFSET_MS) % DAY_MS
    first = minute_index(minute_ts) // n * n
    return minute_ts_of(day_start, first), minute_ts_of(day_start, first + n - 1)


def parse_timeframe(text: str) -> Timeframe:
    """``text`` as a Timeframe (``1h`` and ``60`` are taken for ``60m``, ``d`` for ``1d``)."""
    aliases = {"1h": "60m", "d": "1d", "day": "1d", "1": "1m", "5": "5m", "15": "15m",
               "30": "30m", "60": "60m"}  # fmt: skip
    tf = aliases.get(text, text)
    if tf not in MINUTES:
        raise ValueError(f"unknown timeframe {text!r}: one of {', '.join(TIMEFRAMES)}")
    return tf  # type: ignore[return-value]
