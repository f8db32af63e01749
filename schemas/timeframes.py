"""Candles: which minute a tick belongs to, timeframes and their session-aligned buckets.

Pure arithmetic on epoch ms (Asia/Shanghai: epoch + 8 h, no DST since 1991,
so every local minute starts on a whole epoch minute).

Candle minute rules (:func:`candle_minute`), local time, minutes labelled by
their start:

* before 09:15:00 -> no candle (``None``);
* 09:15:00 - 09:29:59.999 (opening call auction and the pause after it)
  -> the 09:30 candle;
* 09:30:00 - 11:29:59.999 -> its own minute;
* 11:30:00 and the ``close_grace_ms`` after it (default 30 s) -> the 11:29
  candle: vendors stamp the session's last ticks a few seconds late
  (``11:30:02``), and they carry the morning's last trades;
* lunch break, up to 12:59:59.999 -> ``None``;
* 13:00:00 - 14:59:59.999 (including the 14:57-15:00 closing call auction)
  -> its own minute;
* 15:00:00 and the ``close_grace_ms`` after it -> the 14:59 candle (the
  closing call auction's result, stamped ``15:00:03`` by vendors);
* later -> ``None``.

So a full day has 240 candles: 09:30 ... 11:29 and 13:00 ... 14:59, each
labelled by the minute's start (terminals that label by the minute's end
call the 09:30 candle 09:31 and the 14:59 one 15:00: add one minute). The
exchange calendar (weekends, holidays) is not known here: ticks only arrive on
trading days.

A bar of any timeframe is a run of 1-minute candles. A day's 240
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

import functools
from typing import Final, Literal

from schemas.exchange import DAY_MS, SHANGHAI_OFFSET_MS
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


def session_ms(label: str) -> tuple[int, int]:
    """(start, end) of a session of ``schemas.market_rules.SESSIONS``, ms after local midnight."""
    for start, end, name in SESSIONS:
        if name == label:
            return tuple(  # type: ignore[return-value]
                ((t.hour * 60 + t.minute) * 60 + t.second) * 1000 for t in (start, end)
            )
    raise LookupError(f"schemas.market_rules.SESSIONS has no {label!r} session")


OPEN_AUCTION_START = session_ms("opening_auction")[0]
AM_START, AM_END = session_ms("continuous_am")
PM_START = session_ms("continuous_pm")[0]
PM_END = session_ms("closing_auction")[1]
AM_MINUTES: Final = (AM_END - AM_START) // MINUTE_MS  # 120
#: Default grace after 11:30:00 and 15:00:00 that still folds into the last
#: minute of the session. Vendors stamp the midday and closing auction results
#: a few seconds late (11:30:02, 15:00:03); 30 s covers that with margin, and
#: the session's last candle closes that much later.
CLOSE_GRACE_MS: Final = 30_000


def candle_minute(exchange_ts: int, close_grace_ms: int = CLOSE_GRACE_MS) -> int | None:
    """Start (epoch ms) of the 1-minute candle a tick belongs to, or None.

    See the module docstring for the rules. ``close_grace_ms`` is how long
    after 11:30:00 and 15:00:00 a tick still folds into the session's last
    minute (half-open: ``[11:30:00, 11:30:00 + grace)``).
    """
    tod = (exchange_ts + SHANGHAI_OFFSET_MS) % DAY_MS
    if tod < OPEN_AUCTION_START:
        return None
    if tod < AM_START:
        return exchange_ts - tod + AM_START
    if tod < AM_END:
        return exchange_ts - tod % MINUTE_MS
    if tod < AM_END + close_grace_ms:
        return exchange_ts - tod + AM_END - MINUTE_MS
    if tod < PM_START:
        return None
    if tod < PM_END:
        return exchange_ts - tod % MINUTE_MS
    if tod < PM_END + close_grace_ms:
        return exchange_ts - tod + PM_END - MINUTE_MS
    return None


def candle_end(minute_ts: int, close_grace_ms: int = CLOSE_GRACE_MS) -> int:
    """The first exchange_ts that no longer folds into the candle ``minute_ts``.

    ``minute_ts + 1 min``, plus the grace for the last minute of a session.
    """
    end = minute_ts + MINUTE_MS
    tod_end = (end + SHANGHAI_OFFSET_MS) % DAY_MS
    if tod_end in (AM_END, PM_END):
        end += close_grace_ms
    return end


def is_opening_minute(minute_ts: int) -> bool:
    """Whether ``minute_ts`` is the day's first candle (09:30)."""
    return (minute_ts + SHANGHAI_OFFSET_MS) % DAY_MS == AM_START


def minute_index(minute_ts: int) -> int:
    """The trading minute (0..239) of a 1-minute candle's start; ValueError outside sessions."""
    tod = (minute_ts + SHANGHAI_OFFSET_MS) % DAY_MS
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


@functools.lru_cache(maxsize=1024)
def bucket(tf: Timeframe, minute_ts: int) -> tuple[int, int]:
    """(start, last minute) of the ``tf`` bar holding the 1-minute candle ``minute_ts``.

    Cached: at a minute's end every stock asks it of the same minute, twice per
    timeframe (``BarSeries.add_minute`` and the worker's index of open bars).
    """
    if tf == "1m":
        return minute_ts, minute_ts
    n = MINUTES[tf]
    day_start = minute_ts - (minute_ts + SHANGHAI_OFFSET_MS) % DAY_MS
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
