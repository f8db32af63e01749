"""The exchanges' shared vocabulary: markets, stock codes and the Asia/Shanghai clock.

Every service names a market, checks a 6-digit code and turns an epoch-ms
exchange timestamp into a local date or time through this module, never
through a copy of its own. Asia/Shanghai has had no daylight saving time
since 1991: local time is always UTC+8, so a fixed offset is exact.
Pure values and functions; no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final, Literal

Market = Literal["SH", "SZ", "BJ"]
#: A market or ``ALL``, the whole of them (rankings and summaries only).
MarketOrAll = Literal["SH", "SZ", "BJ", "ALL"]

MARKETS: Final[tuple[Market, ...]] = ("SH", "SZ", "BJ")
MARKETS_AND_ALL: Final[tuple[MarketOrAll, ...]] = ("SH", "SZ", "BJ", "ALL")

_CODE: Final = re.compile(r"[0-9]{6}")


def is_stock_code(text: str) -> bool:
    """Exactly six ASCII digits (no Unicode digits, no trailing newline)."""
    return _CODE.fullmatch(text) is not None


SHANGHAI_TZ: Final = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")
SHANGHAI_OFFSET_MS: Final = 8 * 3_600_000
DAY_MS: Final = 86_400_000


def shanghai_datetime(exchange_ts: int) -> dt.datetime:
    """The exchange-local (aware) datetime of an epoch-ms timestamp."""
    return dt.datetime.fromtimestamp(exchange_ts / 1000, SHANGHAI_TZ)


def exchange_ts_of(day: dt.date, time: dt.time) -> int:
    """Epoch ms of a local (Asia/Shanghai) date and time."""
    since_epoch = dt.datetime.combine(day, time, SHANGHAI_TZ) - _EPOCH
    return since_epoch // dt.timedelta(milliseconds=1)


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def trade_date_of(exchange_ts: int) -> str:
    """The local date (``YYYY-MM-DD``) of an epoch-ms timestamp."""
    return shanghai_datetime(exchange_ts).date().isoformat()


def today_in_shanghai(now: dt.datetime | None = None) -> str:
    """Today's local date (``YYYY-MM-DD``); ``now`` (aware, default: the clock) for tests."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(SHANGHAI_TZ).date().isoformat()


def describe_ms(exchange_ts: int) -> str:
    """An epoch-ms timestamp as local ``YYYY-MM-DD HH:MM:SS``, for messages."""
    return shanghai_datetime(exchange_ts).strftime("%Y-%m-%d %H:%M:%S")
