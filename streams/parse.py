"""Parse one raw feed line into a normalized Quote record, or reject it.

Two line formats (shared/spec/feed-protocol.md): Shanghai/Shenzhen lines of
33 ``$``-separated fields, and Beijing JSON objects. :func:`parse_record`
validates everything the spec calls a bad record, numbers beyond bounds no
real quote reaches (``out_of_range``) and, when asked, quotes stamped ahead
of their receive time (``future_timestamp``), and raises
:class:`streams.errors.BadRecord` with a :data:`schemas.dlq.DlqReason`;
:func:`streams.normalize.build_quote` then derives the computed fields.

This is the hot path of the stream workers. The good-record path does one
``split``, converts the numbers with ``map(float/int, ...)`` in C, and checks
them in bulk (``sum`` for finiteness, ``min`` for sign); only a failing record
takes the slow path that names the offending field. Pure functions; never I/O,
never logs a record (the DLQ carries it).
"""

from __future__ import annotations

import math
import time
from operator import itemgetter
from typing import Any, Final, NoReturn

import orjson

from schemas.dlq import DlqReason
from schemas.exchange import Market, is_stock_code
from streams.errors import BadRecord
from streams.normalize import (
    board_or_none,
    build_quote,
    local_date_and_time,
    local_midnight_ms,
    time_of_day_ms,
)

FIELD_COUNT: Final = 33
_SHOWN_CHARS: Final = 40

# Bounds no real quote reaches (out_of_range beyond them). They keep absurd
# numbers out of everything downstream: Decimal limit prices (28 digits),
# rounding in normalize and market stats, Avro longs, sums over a market.
#: yuan; the dearest A-share has traded below 3,000
MAX_PRICE: Final = 1_000_000.0
#: yuan; a non-zero prev_close below this (prices tick by 0.01) is a unit
#: error, and change_pct divides by it
MIN_PREV_CLOSE: Final = 0.001
#: shares (volumes, book volumes); the largest A-share has ~3.6e11 shares
#: issued, and 5,000 stocks x this stays far below the Avro long (9.2e18)
MAX_VOLUME: Final = 10**13
#: yuan of cumulative turnover; a whole market day is ~1e12
MAX_AMOUNT: Final = 1e15

# Shanghai/Shenzhen layout: where each number sits in the 33 fields.
_FLOAT_FIELDS: Final = (
    (2, "open"),
    (3, "prev_close"),
    (4, "price"),
    (5, "high"),
    (6, "low"),
    (7, "bid"),
    (8, "ask"),
    *((11 + 2 * i + 1, f"bid{i + 1}_price") for i in range(5)),
    *((21 + 2 * i + 1, f"ask{i + 1}_price") for i in range(5)),
    (10, "amount"),  # last: the prices are everything before it
)
_INT_FIELDS: Final = (
    (9, "volume"),
    *((11 + 2 * i, f"bid{i + 1}_volume") for i in range(5)),
    *((21 + 2 * i, f"ask{i + 1}_volume") for i in range(5)),
)
_FLOAT_NAMES: Final = frozenset(name for _, name in _FLOAT_FIELDS)
_get_floats: Final = itemgetter(*(index for index, _ in _FLOAT_FIELDS))
_get_ints: Final = itemgetter(*(index for index, _ in _INT_FIELDS))
_SSE_SZSE_MARKETS: Final[dict[str, Market]] = {"sh": "SH", "sz": "SZ"}
_BSE_MARKETS: Final[dict[str, Market]] = {"bj": "BJ"}

# Beijing JSON keys.
_BSE_SCALARS: Final = ("lastPrice", "preClose", "open", "high", "low", "turnover")
_BSE_ARRAYS: Final = ("bidPrices", "bidVolumes", "askPrices", "askVolumes")
BOOK_LEVELS: Final = 5


def parse_record(
    raw: bytes, receive_ts: int, process_ts: int | None = None, *, max_ahead_ms: int | None = None
) -> dict[str, Any]:
    """One raw feed line (SH/SZ ``$`` line or BJ JSON, no trailing newline; a
    trailing ``\\r`` is tolerated) -> a normalized Quote record dict exactly
    matching schemas/avro/quote.v2.avsc (all fields).

    ``process_ts`` defaults to now (epoch ms). With ``max_ahead_ms``, a quote
    stamped more than that after ``receive_ts`` (after ``process_ts`` when
    ``receive_ts`` is unknown, <= 0) is refused as ``future_timestamp``; old
    quotes (replays) are fine. Raises ``BadRecord(reason, detail)`` for every
    bad record.
    """
    if raw[-1:] == b"\r":
        raw = raw[:-1]
    if process_ts is None:
        process_ts = time.time_ns() // 1_000_000
    if raw[:1] == b"{":
        quote = _parse_bse_json(raw, receive_ts, process_ts)
    else:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRecord(
                "invalid_utf8", f"line is not valid UTF-8 at byte {exc.start}"
            ) from None
        quote = _parse_sse_szse(line, receive_ts, process_ts)
    if max_ahead_ms is not None:
        ahead = quote["exchange_ts"] - (receive_ts if receive_ts > 0 else process_ts)
        if ahead > max_ahead_ms:
            raise BadRecord(
                "future_timestamp",
                f"exchange time {quote['trade_date']} is {ahead // 1000} s after receive time "
                f"(at most {max_ahead_ms // 1000} s allowed)",
            )
    return quote


def show(value: object) -> str:
    """A value for a detail sentence: its repr, cut to 40 characters."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "..."
    return repr(text) if isinstance(value, str) else text


def _symbol_code(symbol: str, markets: dict[str, Market]) -> tuple[Market, str]:
    market = markets.get(symbol[:2])
    code = symbol[2:]
    if market is None or not is_stock_code(code):
        allowed = "|".join(markets)
        raise BadRecord("bad_symbol", f"symbol {show(symbol)} is not {allowed} + 6 digits")
    return market, code


def _parse_sse_szse(line: str, receive_ts: int, process_ts: int) -> dict[str, Any]:
    f = line.split("$")
    if len(f) != FIELD_COUNT:
        raise BadRecord("wrong_field_count", f"expected {FIELD_COUNT} '$' fields, got {len(f)}")
    symbol = f[0]
    market, code = _symbol_code(symbol, _SSE_SZSE_MARKETS)
    board = board_or_none(market, code)
    if board is None:
        raise BadRecord("bad_symbol", f"symbol {show(symbol)} is on no {market} board")
    # float()/int() accept Unicode digits, '_' and surrounding whitespace: refuse those first.
    numbers = line[len(symbol) + len(f[1]) + 2 :]
    if not numbers.isascii() or "_" in numbers or _has_space(numbers):
        bad = _first_non_number(f)
        if bad is not None:  # else it is in the date/time, checked below
            raise bad
    try:
        floats = list(map(float, _get_floats(f)))
        ints = list(map(int, _get_ints(f)))
    except ValueError:
        raise _first_non_number(f) or BadRecord("not_a_number", "a number does not parse") from None
    if not math.isfinite(sum(floats)):
        _raise_first_non_finite(floats)
    if min(floats) < 0.0 or min(ints) < 0:
        _raise_first_negative(floats, ints)
    if "$-" in numbers:  # a minus sign: "-0.00" is no negative number, but no price either
        _raise_first_minus_sign(f)
    amount = floats.pop()  # the rest are prices
    if max(floats) > MAX_PRICE or amount >= MAX_AMOUNT or max(ints) >= MAX_VOLUME:
        _raise_first_out_of_range(f, floats, amount, ints)
    open_, prev_close, price, high, low, bid, ask = floats[:7]
    if 0.0 < prev_close < MIN_PREV_CLOSE:
        raise BadRecord("out_of_range", f"prev_close (field 3) is too small: {prev_close!r}")
    if high < low and high != 0.0:
        raise BadRecord("high_below_low", f"high {high} is below low {low}")
    date, clock = f[31], f[32]
    try:
        midnight = local_midnight_ms(date)
        time_of_day = time_of_day_ms(clock)
    except ValueError:
        raise BadRecord("bad_datetime", f"no such date/time: {show(date + ' ' + clock)}") from None
    return build_quote(
        symbol,
        code,
        market,
        board,
        f[1].strip(),
        midnight + time_of_day,
        date,
        time_of_day,
        open_,
        prev_close,
        price,
        high,
        low,
        bid,
        ask,
        ints[0],
        amount,
        floats[7:12],
        ints[1:6],
        floats[12:17],
        ints[6:11],
        receive_ts,
        process_ts,
    )


def _has_space(text: str) -> bool:
    return " " in text or "\t" in text or "\x0b" in text or "\x0c" in text or "\r" in text


def _raise_first_minus_sign(f: list[str]) -> None:
    """A numeric field written with a minus sign is negative, even "-0" (float() says
    0.0, which the check of the values would let through)."""
    for index, name in (*_FLOAT_FIELDS, *_INT_FIELDS):
        if f[index].startswith("-"):
            raise BadRecord(
                "negative_value", f"{name} (field {index}) is negative: {show(f[index])}"
            )


def _first_non_number(f: list[str]) -> BadRecord | None:
    """The error for the first numeric field that is not a plain ASCII number."""
    for index, name in (*_FLOAT_FIELDS, *_INT_FIELDS):
        text = f[index]
        ok = text.isascii() and "_" not in text and not _has_space(text)
        if ok:
            try:
                _ = float(text) if name in _FLOAT_NAMES else int(text)
            except ValueError:
                ok = False
        if not ok:
            return BadRecord(
                "not_a_number", f"{name} (field {index}) is not a number: {show(text)}"
            )
    return None


def _raise_first_non_finite(floats: list[float]) -> NoReturn:
    for (index, name), value in zip(_FLOAT_FIELDS, floats, strict=True):
        if not math.isfinite(value):
            raise BadRecord("not_a_number", f"{name} (field {index}) is not finite: {value}")
    raise BadRecord("out_of_range", "prices are too large to add up")


def _raise_first_out_of_range(
    f: list[str], prices: list[float], amount: float, ints: list[int]
) -> NoReturn:
    for (index, name), price in zip(_FLOAT_FIELDS, prices, strict=False):
        if price > MAX_PRICE:
            raise BadRecord("out_of_range", f"{name} (field {index}) is above {MAX_PRICE:.0f}: "
                            f"{show(f[index])}")  # fmt: skip
    if amount >= MAX_AMOUNT:
        raise BadRecord("out_of_range", f"amount (field 10) is not below {MAX_AMOUNT:.0e}: "
                        f"{show(f[10])}")  # fmt: skip
    for (index, name), volume in zip(_INT_FIELDS, ints, strict=True):
        if volume >= MAX_VOLUME:
            limit = f"{MAX_VOLUME:.0e}"
            raise BadRecord("out_of_range", f"{name} (field {index}) is not below {limit}: "
                            f"{show(f[index])}")  # fmt: skip
    raise AssertionError("no field was out of range")  # pragma: no cover


def _raise_first_negative(floats: list[float], ints: list[int]) -> NoReturn:
    for (index, name), value in zip((*_FLOAT_FIELDS, *_INT_FIELDS), (*floats, *ints), strict=True):
        if value < 0:
            raise BadRecord("negative_value", f"{name} (field {index}) is negative: {value}")
    raise AssertionError("no field was negative")  # pragma: no cover


def _bad_json(raw: bytes, exc: orjson.JSONDecodeError) -> BadRecord:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as utf:
        return BadRecord("invalid_utf8", f"line is not valid UTF-8 at byte {utf.start}")
    reason: DlqReason = "not_a_number" if str(exc).startswith("number is inf") else "invalid_json"
    return BadRecord(reason, f"not valid JSON: {show(str(exc))}")


def _number(obj: dict[str, Any], key: str) -> float:
    value = obj[key]
    if type(value) is float or type(value) is int:
        if value < 0:
            raise BadRecord("negative_value", f"{key} is negative: {value}")
        return float(value)
    raise BadRecord("missing_field", f"{key} is {type(value).__name__}, not a number")


def _whole(key: str, value: object) -> int:
    if type(value) is int or (type(value) is float and value.is_integer()):
        number = int(value)
        if number < 0:
            raise BadRecord("negative_value", f"{key} is negative: {value}")
        if number >= MAX_VOLUME:
            raise BadRecord("out_of_range", f"{key} is not below {MAX_VOLUME:.0e}: {show(value)}")
        return number
    raise BadRecord("missing_field", f"{key} is {show(value)}, not a whole number")


def _book(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj[key]
    if type(value) is not list or len(value) != BOOK_LEVELS:
        raise BadRecord("missing_field", f"{key} is not a list of {BOOK_LEVELS}: {show(value)}")
    if key.endswith("Volumes"):
        return [_whole(key, v) for v in value]
    out: list[Any] = []
    for v in value:
        if type(v) is not float and type(v) is not int:
            raise BadRecord("missing_field", f"{key} holds {show(v)}, not a number")
        if v < 0:
            raise BadRecord("negative_value", f"{key} holds a negative price: {v}")
        if v > MAX_PRICE:
            raise BadRecord("out_of_range", f"{key} holds a price above {MAX_PRICE:.0f}: {show(v)}")
        out.append(float(v))
    return out


def _parse_bse_json(raw: bytes, receive_ts: int, process_ts: int) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad_json(raw, exc) from None
    if type(obj) is not dict:
        raise BadRecord("invalid_json", f"not a JSON object: {show(obj)}")
    try:
        symbol = obj["symbol"]
        name = obj["name"]
        timestamp = obj["timestamp"]
        if type(symbol) is not str or type(name) is not str or type(timestamp) is not int:
            raise BadRecord("missing_field", "symbol and name must be strings, timestamp an int")
        market, code = _symbol_code(symbol, _BSE_MARKETS)
        board = board_or_none(market, code)
        if board is None:
            raise BadRecord("bad_symbol", f"symbol {show(symbol)} is on no BJ board")
        price, prev_close, open_, high, low, amount = (_number(obj, k) for k in _BSE_SCALARS)
        volume = _whole("volume", obj["volume"])
        bid_prices, bid_volumes, ask_prices, ask_volumes = (_book(obj, k) for k in _BSE_ARRAYS)
    except KeyError as exc:
        raise BadRecord("missing_field", f"JSON quote lacks key {show(exc.args[0])}") from None
    top = max(price, prev_close, open_, high, low)
    if top > MAX_PRICE:
        raise BadRecord("out_of_range", f"a price is above {MAX_PRICE:.0f}: {show(top)}")
    if amount >= MAX_AMOUNT:
        raise BadRecord("out_of_range", f"turnover is not below {MAX_AMOUNT:.0e}: {show(amount)}")
    if 0.0 < prev_close < MIN_PREV_CLOSE:
        raise BadRecord("out_of_range", f"preClose is too small: {prev_close!r}")
    if high < low and high != 0.0:
        raise BadRecord("high_below_low", f"high {high} is below low {low}")
    if timestamp <= 0:
        raise BadRecord("bad_datetime", f"timestamp is not a positive epoch ms: {timestamp}")
    try:
        trade_date, time_of_day = local_date_and_time(timestamp)
    except ValueError:
        raise BadRecord("bad_datetime", f"timestamp is out of range: {show(timestamp)}") from None
    return build_quote(
        symbol,
        code,
        market,
        board,
        name.strip(),
        timestamp,
        trade_date,
        time_of_day,
        open_,
        prev_close,
        price,
        high,
        low,
        bid_prices[0],
        ask_prices[0],
        volume,
        amount,
        bid_prices,
        bid_volumes,
        ask_prices,
        ask_volumes,
        receive_ts,
        process_ts,
    )
