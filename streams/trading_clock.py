"""Exchange-session arithmetic on epoch-ms timestamps (Asia/Shanghai clock).

Used by the candle builder (which minute a tick belongs to, when a minute is
over) and the alert detector (a clock that only runs during continuous
trading, so a five-minute window does not span the lunch break). The session
times come from ``schemas.market_rules.SESSIONS``; Asia/Shanghai has had no
DST since 1991, so local time is epoch + 8 h and every local minute starts on
a whole epoch minute.

Candle minute rules (``candle_minute``), local time, minutes labelled by
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
trading days. This module is pure arithmetic: it never reads the wall clock
and never does I/O.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from schemas.exchange import DAY_MS, SHANGHAI_OFFSET_MS
from schemas.market_rules import SESSIONS

MINUTE_MS: Final = 60_000
#: Default grace after 11:30:00 and 15:00:00 that still folds into the last
#: minute of the session. Vendors stamp the midday and closing auction results
#: a few seconds late (11:30:02, 15:00:03); 30 s covers that with margin, and
#: the session's last candle closes that much later.
CLOSE_GRACE_MS: Final = 30_000


def _ms_of(t: dt.time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1000


def _session(name: str) -> tuple[int, int]:
    for start, end, label in SESSIONS:
        if label == name:
            return _ms_of(start), _ms_of(end)
    raise LookupError(f"schemas.market_rules.SESSIONS has no {name!r} session")


OPEN_AUCTION_START, OPEN_AUCTION_END = _session("opening_auction")
AM_START, AM_END = _session("continuous_am")
PM_START, PM_CONT_END = _session("continuous_pm")
CLOSE_AUCTION_START, PM_END = _session("closing_auction")
AM_LEN: Final = AM_END - AM_START
PM_LEN: Final = PM_END - PM_START
#: Trading-clock ms in one day (continuous sessions plus the closing auction).
TRADING_DAY_MS: Final = AM_LEN + PM_LEN


def local_ms_of_day(exchange_ts: int) -> int:
    """Milliseconds since local (Asia/Shanghai) midnight."""
    return (exchange_ts + SHANGHAI_OFFSET_MS) % DAY_MS


def local_day(exchange_ts: int) -> int:
    """Local day number (days since 1970-01-01 on the Asia/Shanghai calendar)."""
    return (exchange_ts + SHANGHAI_OFFSET_MS) // DAY_MS


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


def is_continuous(exchange_ts: int) -> bool:
    """In continuous trading: 09:30-11:30 or 13:00-14:57 (auctions excluded)."""
    tod = (exchange_ts + SHANGHAI_OFFSET_MS) % DAY_MS
    return AM_START <= tod < AM_END or PM_START <= tod < PM_CONT_END


def trading_clock_ms(exchange_ts: int) -> int:
    """A clock that runs only while the market trades; monotonic in exchange_ts.

    ``local_day * 1 day + ms of trading elapsed that day``, where trading time
    is 09:30-11:30 and 13:00-15:00: it stands still before the open (including
    the opening auction), through the lunch break and after the close. A
    window of N trading seconds therefore spans lunch the way traders expect
    (11:28 -> 13:02 is four trading minutes).
    """
    local = exchange_ts + SHANGHAI_OFFSET_MS
    tod = local % DAY_MS
    base = local - tod
    if tod < AM_START:
        return base
    if tod < AM_END:
        return base + tod - AM_START
    if tod < PM_START:
        return base + AM_LEN
    if tod < PM_END:
        return base + AM_LEN + tod - PM_START
    return base + TRADING_DAY_MS
