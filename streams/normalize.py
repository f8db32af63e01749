"""From validated feed values to a normalized Quote record (quote.v2.avsc).

Turns exchange local date/time into epoch ms, looks up board and ST status in
the shared market rules, computes the daily limit prices, change, change_pct
and the traded/suspended/at-limit flags. :mod:`streams.parse` validates a raw
line and calls :func:`build_quote`; nothing here checks raw text.

This is the hot path: no Decimal, no ``strptime`` and no regex per record.
Everything that depends only on a date, a time string, a code, a name or a
``(prev_close, board, st, date)`` tuple is cached. Pure functions; never I/O.

Rules worth knowing (the Avro docs repeat the field meanings):

* ``traded``: price > 0 and volume > 0.
* ``suspended``: not traded, and either halted (from 09:30 on, an empty order
  book: no bid and no ask at any level) or the session is over (15:00 on)
  without a trade all day. ``not_traded_yet``: not traded and not suspended
  (before the open, or a thin stock whose book has orders but no match yet).
  The feed carries no status field, so these are derived; exactly one of
  ``traded``, ``suspended``, ``not_traded_yet`` holds.
* ``limit_free``: a new listing in its no-limit days (``N``/``C`` names,
  ``schemas.market_rules.is_limit_free``): limit_up/limit_down are 0 and it
  is never at a limit.
* ``change``: price - prev_close in whole cents when traded and prev_close > 0,
  else 0. ``change_pct``: percent, rounded half up (away from zero) to 2
  decimals on the exact cent values (8.00 -> 8.01 is 0.125% -> 0.13), same
  conditions.
* A trade date before the board has any price-limit rule (a broken clock:
  BJ in 1970) raises ``BadRecord("bad_datetime")``.
* ``at_limit_up`` / ``at_limit_down``: traded and price >= limit_up /
  <= limit_down, compared in integer cents; never set without a prev_close.
* ``phase``: the exchange session at the quote's local time
  (:func:`phase_of`). ``avg_price`` (amount / volume), ``amplitude``
  ((high - low) / prev_close, percent) and ``order_imbalance`` (委比:
  (bid - ask volume) / (bid + ask volume) over the 5 levels, percent) are 0
  when undefined.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from functools import lru_cache
from typing import Any, Final, Literal

from schemas.exchange import DAY_MS, SHANGHAI_OFFSET_MS
from schemas.market_rules import (
    Board,
    Market,
    UnknownCode,
    board_of,
    is_limit_free,
    is_st,
    limit_prices,
)
from streams.errors import BadRecord

OPENING_MS: Final = (9 * 3600 + 30 * 60) * 1000  # 09:30, start of continuous trading
CLOSING_MS: Final = 15 * 3_600_000  # 15:00, end of the closing call auction
Phase = Literal[
    "pre_open", "opening_auction", "continuous", "midday_break", "closing_auction", "closed"
]
#: (start ms of local day, phase), in order; each phase runs to the next start.
PHASES: Final[tuple[tuple[int, Phase], ...]] = (
    (0, "pre_open"),
    ((9 * 60 + 15) * 60_000, "opening_auction"),  # 09:15 call auction (+ 09:25-09:30 pause)
    (OPENING_MS, "continuous"),
    ((11 * 60 + 30) * 60_000, "midday_break"),
    (13 * 3_600_000, "continuous"),
    ((14 * 60 + 57) * 60_000, "closing_auction"),
    (CLOSING_MS, "closed"),
)
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


_PHASE_STARTS: Final = tuple(start for start, _ in PHASES)


def phase_of(time_of_day: int) -> Phase:
    """The session phase at ``time_of_day`` (ms since local midnight)."""
    return PHASES[bisect_right(_PHASE_STARTS, time_of_day) - 1][1]


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


@lru_cache(maxsize=16384)
def name_is_limit_free(name: str, board: Board, trade_date: str) -> bool:
    """Cached :func:`schemas.market_rules.is_limit_free`."""
    return is_limit_free(name, board, dt.date.fromisoformat(trade_date))


@lru_cache(maxsize=65536)
def limits(
    prev_close: float, board: Board, st: bool, trade_date: str
) -> tuple[float, float, int, int]:
    """``(limit_up, limit_down, limit_up_cents, limit_down_cents)`` on ``trade_date``."""
    up, down = limit_prices(prev_close, board, st, dt.date.fromisoformat(trade_date))
    return up, down, round(up * 100), round(down * 100)


def pct_half_up(delta_cents: int, base_cents: int) -> float:
    """``delta / base`` in percent, rounded half up (away from zero) to 2 decimals,
    exactly on integer cents (floats would turn 0.125 into 0.12499...)."""
    num = abs(delta_cents) * 10_000  # hundredths of a percent, times base
    hundredths = (2 * num + base_cents) // (2 * base_cents)
    return (hundredths if delta_cents >= 0 else -hundredths) / 100


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
    """The Quote record dict (every field of quote.v2.avsc) from validated values.

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
    limit_free = name_is_limit_free(name, board, trade_date)
    if limit_free:
        limit_up = limit_down = 0.0
        up_cents = 0
    traded = price > 0.0 and volume > 0
    prev_cents = round(prev_close * 100.0)
    if traded and prev_cents > 0:
        cents = round(price * 100.0)
        change = (cents - prev_cents) / 100
        change_pct = pct_half_up(cents - prev_cents, prev_cents)
        amplitude = pct_half_up(round(high * 100.0) - round(low * 100.0), prev_cents)
    else:
        change = change_pct = amplitude = 0.0
    if traded:
        suspended = not_traded_yet = False
    elif time_of_day >= CLOSING_MS or (
        time_of_day >= OPENING_MS and not any(bid_volumes) and not any(ask_volumes)
    ):
        suspended, not_traded_yet = True, False
    else:
        suspended, not_traded_yet = False, True
    bid_depth = sum(bid_volumes)
    depth = bid_depth + sum(ask_volumes)
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
        "suspended": suspended,
        "at_limit_up": at_limit_up,
        "at_limit_down": at_limit_down,
        "receive_ts": receive_ts,
        "process_ts": process_ts,
        "limit_free": limit_free,
        "not_traded_yet": not_traded_yet,
        "phase": phase_of(time_of_day),
        "avg_price": round(amount / volume, 3) if volume > 0 else 0.0,
        "amplitude": amplitude,
        "order_imbalance": round((2 * bid_depth - depth) * 100 / depth, 2) if depth else 0.0,
    }
