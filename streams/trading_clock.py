"""Exchange-session arithmetic on epoch-ms timestamps (Asia/Shanghai clock).

Used by the alert detector: a clock that only runs during continuous
trading, so a five-minute window does not span the lunch break. The session
times come from ``schemas.market_rules.SESSIONS``; Asia/Shanghai has had no
DST since 1991, so local time is epoch + 8 h and every local minute starts on
a whole epoch minute.

Which 1-minute candle a tick belongs to (``candle_minute``, ``candle_end``)
is a rule of the candle format shared with the gateway: it lives in
:mod:`schemas.timeframes`. This module is pure arithmetic: it never reads the wall clock
and never does I/O.
"""

from __future__ import annotations

from typing import Final

from schemas.exchange import DAY_MS, SHANGHAI_OFFSET_MS
from schemas.timeframes import AM_END, AM_START, PM_END, PM_START, session_ms

PM_CONT_END: Final = session_ms("continuous_pm")[1]
AM_LEN: Final = AM_END - AM_START
PM_LEN: Final = PM_END - PM_START
#: Trading-clock ms in one day (continuous sessions plus the closing auction).
TRADING_DAY_MS: Final = AM_LEN + PM_LEN
#: What the compiled alert windows (``hqstream_native.AlertWindows``) compute this
#: module's clock from: the local offset, the day and the session bounds, in ms
CLOCK_SESSIONS: Final = (SHANGHAI_OFFSET_MS, DAY_MS, AM_START, AM_END, PM_START, PM_END,
                         PM_CONT_END)  # fmt: skip


def local_ms_of_day(exchange_ts: int) -> int:
    """Milliseconds since local (Asia/Shanghai) midnight."""
    return (exchange_ts + SHANGHAI_OFFSET_MS) % DAY_MS


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
