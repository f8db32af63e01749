"""From validated feed values to a normalized Quote record (quote.v1.avsc).

Turns exchange local date/time into epoch ms, looks up board and ST status in
the shared market rules, computes the daily limit prices, change, change_pct
and the traded/suspended/at-limit flags. :mod:`streams.parse` validates a raw
line and calls :func:`build_quote`; nothing here checks raw text.

This is the hot path: no Decimal, no ``strptime`` and no regex per record.
Everything that depends only on a date, a time string, a code, a name or a
``(prev_close, board, st, date)`` tuple is cached. Pure functions; never I/O.

Rules worth knowing (the Avro docs repeat the field meanings):

* ``traded``: price > 0 and volume > 0.
* ``suspended``: price, volume and open all zero while the exchange time is
  09:30 or later (Asia/Shanghai). Before the continuous session a zero quote
  is simply pre-open. A stock that is not formally suspended but has had no
  trade by 09:30 is flagged too: the feed carries no status field, and the
  old system's status column is not part of our layout.
* ``change``: price - prev_close rounded to 0.01 when traded and prev_close > 0,
  else 0. ``change_pct``: percent, rounded to 2 decimals, same conditions.
* A trade date before the board has any price-limit rule (a broken clock:
  BJ in 1970) raises ``BadRecord("bad_datetime")``.
* ``at_limit_up`` / ``at_limit_down``: traded and price >= limit_up /
  <= limit_down, compared in integer cents; never set without a prev_close.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import lru_cache
from typing import Any, Final

from schemas.market_rules import Board, Market, UnknownCode, board_of, is_st, limit_prices
from streams.errors import BadRecord

logger = logging.getLogger(__name__)

DAY_MS: Final = 86_400_000
SHANGHAI_OFFSET_MS: Final = 8 * 3_600_000  # Asia/Shanghai is UTC+8, no DST since 1991
OPENING_MS: Final = (9 * 3600 + 30 * 60) * 1000  # 09:30, start of continuous trading
_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()


@lru_cache(maxsize=4096)
def local_midnight_ms(date: str) -> int:
    """Epoch ms of 00:00 Asia/Shanghai on ``YYYY-MM-DD``.

    Raises ValueError for anything but that exact form of a real date
    (``2026-02-30``, ``2026-2-3``, ``２０２６-…``).
    """
    if len(date) != 10 or date[4] != "-" or date[7] != "-" or not date.isascii():
        raise ValueError(f"not a YYYY-MM-DD date: {date!r}")
    y, m, d = date[:4], date[5:7], date[8:]
    if not (y.isdigit() and m.isdigit() and d.isdigit()):
        raise ValueError(f"not a YYYY-MM-DD date: {date!r}")
    day = dt.date(int(y), int(m), int(d))  # ValueError for 2026-02-30
    return (day.toordinal() - _EPOCH_ORDINAL) * DAY_MS - SHANGHAI_OFFSET_MS


@lru_cache(maxsize=16384)
def time_of_day_ms(time: str) -> int:
    """Milliseconds since local midnight of ``HH:MM:SS``; ValueError otherwise."""
    if len(time) != 8 or time[2] != ":" or time[5] != ":" or not time.isascii():
        raise ValueError(f"not a HH:MM:SS time: {time!r}")
    h, m, s = time[:2], time[3:5], time[6:]
    if not (h.isdigit() and m.isdigit() and s.isdigit()):
        raise ValueError(f"not a HH:MM:SS time: {time!r}")
    hours, minutes, seconds = int(h), int(m), int(s)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"no such time of day: {time!r}")
    return ((hours * 60 + minutes) * 60 + seconds) * 1000


@lru_cache(maxsize=1024)
def _date_of_day(day: int) -> str:
    return dt.date.fromordinal(_EPOCH_ORDINAL + day).isoformat()


def local_date_and_time(epoch_ms: int) -> tuple[str, int]:
    """``(YYYY-MM-DD, ms since local midnight)`` of an epoch-ms instant in Asia/Shanghai.

    Raises ValueError when the date is outside 0001..9999.
    """
    day, tod = divmod(epoch_ms + SHANGHAI_OFFSET_MS, DAY_MS)
    try:
        return _date_of_day(day), tod
    except OverflowError as exc:
        raise ValueError(f"timestamp {epoch_ms} is out of range") from exc


@lru_cache(maxsize=16384)
def board_or_none(market: Market, code: str) -> Board | None:
    """The board of a code, or None when its prefix is on no board of ``market``."""
    try:
        return board_of(market, code)
    except UnknownCode:
        return None


@lru_cache(maxsize=16384)
def name_is_st(name: str) -> bool:
    """Cached :func:`schemas.market_rules.is_st`."""
    return is_st(name)


@lru_cache(maxsize=65536)
def limits(
    prev_close: float, board: Board, st: bool, trade_date: str
) -> tuple[float, float, int, int]:
    """``(limit_up, limit_down, limit_up_cents, limit_down_cents)`` on ``trade_date``."""
    up, down = limit_prices(prev_close, board, st, dt.date.fromisoformat(trade_date))
    return up, down, round(up * 100), round(down * 100)


def build_quote(
    symbol: str,
    code: str,
    market: Market,
    board: Board,
    name: str,
    exchange_ts: int,
    trade_date: str,
    time_of_day: int,
    open_: float,
    prev_close: float,
    price: float,
    high: float,
    low: float,
    bid: float,
    ask: float,
    volume: int,
    amount: float,
    bid_prices: list[float],
    bid_volumes: list[int],
    ask_prices: list[float],
    ask_volumes: list[int],
    receive_ts: int,
    process_ts: int,
) -> dict[str, Any]:
    """The Quote record dict (every field of quote.v1.avsc) from validated values.

    ``time_of_day`` is ms since local midnight of ``exchange_ts``; the other
    arguments must already be checked (non-negative, finite, real date).
    Raises BadRecord only for a date that predates the board's limit rules.
    """
    st = name_is_st(name)
    try:
        limit_up, limit_down, up_cents, down_cents = limits(prev_close, board, st, trade_date)
    except LookupError:
        raise BadRecord(
            "bad_datetime", f"trade date {trade_date} is before any {board} price-limit rule"
        ) from None
    traded = price > 0.0 and volume > 0
    if traded and prev_close > 0.0:
        diff = price - prev_close
        change = round(diff, 2)
        change_pct = round(diff / prev_close * 100.0, 2)
    else:
        change = 0.0
        change_pct = 0.0
    if traded and up_cents:
        cents = round(price * 100.0)
        at_limit_up = cents >= up_cents
        at_limit_down = cents <= down_cents
    else:
        at_limit_up = at_limit_down = False
    return {
        "symbol": symbol,
        "code": code,
        "market": market,
        "board": board,
        "name": name,
        "is_st": st,
        "exchange_ts": exchange_ts,
        "trade_date": trade_date,
        "open": open_,
        "prev_close": prev_close,
        "price": price,
        "high": high,
        "low": low,
        "bid": bid,
        "ask": ask,
        "volume": volume,
        "amount": amount,
        "bid_prices": bid_prices,
        "bid_volumes": bid_volumes,
        "ask_prices": ask_prices,
        "ask_volumes": ask_volumes,
        "change": change,
        "change_pct": change_pct,
        "limit_up": limit_up,
        "limit_down": limit_down,
        "traded": traded,
        "suspended": (price == 0.0 and volume == 0 and open_ == 0.0 and time_of_day >= OPENING_MS),
        "at_limit_up": at_limit_up,
        "at_limit_down": at_limit_down,
        "receive_ts": receive_ts,
        "process_ts": process_ts,
    }
