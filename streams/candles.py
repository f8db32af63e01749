"""1-minute OHLCV candles built incrementally from normalized quotes.

``CandleBuilder.update(quote)`` folds one Quote (schemas/avro/quote.v2.avsc)
into its stock's open candle and returns the candles that closed because of
it; ``flush(now_ms)`` closes candles whose minute is over when a stock stops
ticking (lunch, the close). The candles are :class:`Candle` values, the fields
of schemas/avro/candle.v2.avsc in its order (``indicators`` are added by
streams/bars.py when a candle closes, to its Avro record).

Rules:

* The minute of a tick is ``schemas.timeframes.candle_minute`` (auction ticks
  fold into 09:30; 11:30:00 and the late-stamped midday ticks after it
  (11:30:02) into 11:29, 15:00:00 and the closing auction's late-stamped
  ticks (15:00:03) into 14:59; nothing in the lunch break or outside
  sessions). A minute gets a candle only if at least one in-session tick of
  the stock fell into it: gaps are not filled.
* No candle without a trade: a quote of a stock that has not traded today
  (pre-open, a late opener, a suspended stock) opens no candle and is
  counted in ``counters.no_trade``. Once the stock has traded, a minute
  with ticks but no new trade is flat at the last traded price.
* volume / amount are deltas of the cumulative counters against the highest
  cumulative seen that day (so the first candle of the day holds the opening
  auction's volume). A counter that goes backwards (a glitch: 1000, 2000,
  500, 2100) contributes 0 and does not lower the base, so the glitch's
  recovery is not counted twice (the minute gets 1100, not 2600): candle
  volumes are never negative and add up to the day's final total. A new
  trade_date resets the base to 0 if the stock's first tick of the day falls
  in the 09:30 candle; otherwise (the worker joined mid-session) the base is
  the first tick's own cumulative value, so the day's earlier volume is not
  dumped into one candle.
* Newer wins: a tick with exchange_ts <= the last one seen for the stock, or
  one for a minute already closed, is ignored and counted in ``counters``.
  Out-of-session and suspended ticks are ignored (counted) but still close
  an open candle whose minute they are past.

Everything is in memory, O(1) per tick; this module never does I/O, never
reads the wall clock and never raises on a well-formed Quote.

:class:`CandleBuilder` is the reference; :class:`CompiledCandleBuilder` is the
same builder compiled (``hqstream_native.CandleBook``, native/src/candles.rs)
and :func:`candle_builder` gives it when the extension is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, Literal, TypeAlias

import msgspec

from schemas.exchange import DAY_MS, SHANGHAI_OFFSET_MS, Market
from schemas.native import native_module
from schemas.records import Quote
from schemas.timeframes import (
    AM_END,
    AM_START,
    CLOSE_GRACE_MS,
    MINUTE_MS,
    OPEN_AUCTION_START,
    PM_END,
    PM_START,
    candle_end,
    candle_minute,
    is_opening_minute,
)

logger = logging.getLogger(__name__)


class Candle(msgspec.Struct, frozen=True, gc=False):
    """A 1-minute candle, open or closed: the fields of the Avro ``Candle`` v2, in its order.

    One is made per stock and batch for the open candle, so it is a msgspec
    struct: made and turned into the JSON Redis stores (:data:`CANDLE_JSON`)
    in less CPU than the dict it replaces and orjson took; a dataclass took
    more, orjson being slow on dataclasses (docs/benchmarks.md, "Typed
    candles"). ``gc=False``: scalars only, no cycle to collect. Avro and the
    bar series (schemas/bar_series.py) take dicts: :meth:`as_record`, once a
    minute.
    """

    code: str
    market: Market
    trade_date: str
    minute_ts: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    amount: float
    ticks: int
    closed: bool
    tf: Literal["1m"] = "1m"
    indicators: None = None  # set on the closed candle's Avro record (streams/bars.py)

    def as_record(self) -> dict[str, Any]:
        """The Avro ``Candle`` record (a dict, fields in the schema's order)."""
        return msgspec.structs.asdict(self)


#: JSON of a :class:`Candle`, as Redis stores it: the bytes orjson writes for
#: :meth:`Candle.as_record`. The two format every float below 1e16 alike
#: (tests/streams/test_candles.py pins it), and parse bounds what a candle
#: holds below that (prices <= 1e6, amounts < 1e15).
CANDLE_JSON: Final = msgspec.json.Encoder()


@dataclass(slots=True)
class CandleCounters:
    """What the builder did with the ticks it was given."""

    closed: int = 0
    late: int = 0  # exchange_ts <= last seen, or for a minute already closed
    after_close: int = 0  # of those, for a minute already closed: folded into no candle
    out_of_session: int = 0
    suspended: int = 0
    counter_resets: int = 0  # cumulative volume/amount went backwards within a day
    joined_midday: int = 0  # first tick of a day after the 09:30 candle
    no_trade: int = 0  # quotes of a stock without a trade yet today: no candle


class _Stock:
    """Per-stock state: the cumulative base, and the open candle if any."""

    __slots__ = (
        "amount",
        "base_amount",
        "base_volume",
        "close",
        "closed_through",
        "code",
        "end",
        "has_trade",
        "high",
        "last_price",
        "last_ts",
        "low",
        "market",
        "minute",
        "open",
        "ref_price",
        "ticks",
        "trade_date",
        "volume",
    )

    def __init__(self, code: str, market: Market) -> None:
        self.code = code
        self.market = market
        self.trade_date = ""
        self.last_ts = -1
        self.base_volume = 0  # highest cumulative volume folded today
        self.base_amount = 0.0  # highest cumulative amount folded today
        self.last_price = 0.0  # last traded price seen (flat candles)
        self.closed_through = -1  # minute_ts of the last closed candle
        self.minute = -1  # minute_ts of the open candle, -1 when none
        self.end = 0
        self.open = self.high = self.low = self.close = 0.0
        self.ref_price = 0.0
        self.volume = 0
        self.amount = 0.0
        self.ticks = 0
        self.has_trade = False

    def record(self, closed: bool) -> Candle:
        if self.has_trade:
            o, h, lo, c = self.open, self.high, self.low, self.close
        else:
            o = h = lo = c = self.ref_price
        return Candle(self.code, self.market, self.trade_date, self.minute, o, h, lo, c,
                      self.volume, round(self.amount, 2), self.ticks, closed)  # fmt: skip


class CandleBuilder:
    """1-minute candles for every stock a worker sees; see the module docstring.

    ``close_grace_ms``: how long after 11:30:00 / 15:00:00 a tick still folds
    into the session's last minute (default: the whole 11:30:00 second).
    """

    def __init__(self, close_grace_ms: int = CLOSE_GRACE_MS) -> None:
        self.close_grace_ms = close_grace_ms
        self.counters = CandleCounters()
        self._stocks: dict[str, _Stock] = {}
        self._open_by_end: dict[int, set[str]] = {}  # candle end ts -> codes open

    def update(self, quote: Quote) -> list[Candle]:
        """Fold one quote; return the candles closed by it (``closed=True``)."""
        code: str = quote["code"]
        ts: int = quote["exchange_ts"]
        st = self._stocks.get(code)
        if st is None:
            st = self._stocks[code] = _Stock(code, quote["market"])
        elif ts <= st.last_ts:
            self.counters.late += 1
            return []
        st.last_ts = ts
        closed: list[Candle] = []
        if st.minute >= 0 and ts >= st.end:
            closed.append(self._close(st))

        minute = candle_minute(ts, self.close_grace_ms)
        if minute is None:
            self.counters.out_of_session += 1
            return closed
        if minute <= st.closed_through:
            self.counters.late += 1
            self.counters.after_close += 1
            return closed

        volume: int = quote["volume"]
        amount: float = quote["amount"]
        if quote["trade_date"] != st.trade_date:
            st.trade_date = quote["trade_date"]
            if is_opening_minute(minute):
                st.base_volume, st.base_amount = 0, 0.0
            else:
                st.base_volume, st.base_amount = volume, amount
                self.counters.joined_midday += 1
            st.last_price = 0.0
        if quote["suspended"]:  # the day's base is set, but no candle opens
            self.counters.suspended += 1
            return closed
        if not quote["traded"]:  # no trade yet today: nothing to draw
            self.counters.no_trade += 1
            return closed
        if st.minute < 0:
            self._start(st, minute, quote)
        elif minute != st.minute:  # cannot happen: candle_minute is monotonic in ts
            closed.append(self._close(st))
            self._start(st, minute, quote)

        dv = volume - st.base_volume
        da = amount - st.base_amount
        if dv < 0 or da < 0:
            self.counters.counter_resets += 1
            logger.debug("%s: cumulative counters went backwards at %d", code, ts)
        if dv > 0:
            st.volume += dv
            st.base_volume = volume
        if da > 0:
            st.amount += da
            st.base_amount = amount

        price: float = quote["price"]
        if quote["traded"] and price > 0:
            if st.has_trade:
                if price > st.high:
                    st.high = price
                elif price < st.low:
                    st.low = price
            else:
                st.open = st.high = st.low = price
                st.has_trade = True
            st.close = price
            st.last_price = price
        st.ticks += 1
        return closed

    def closes(self, code: str, ts: int) -> bool:
        """Whether a quote of ``code`` at ``ts`` would close its open candle (:meth:`update`)."""
        st = self._stocks.get(code)
        return st is not None and st.minute >= 0 and ts >= st.end

    def current(self, code: str) -> Candle | None:
        """The open candle of ``code`` (``closed=False``), or None."""
        st = self._stocks.get(code)
        if st is None or st.minute < 0:
            return None
        return st.record(closed=False)

    def current_of(self, codes: Iterable[str]) -> list[Candle]:
        """The open candles of ``codes`` (those without one left out), in their order."""
        return [c for c in map(self.current, codes) if c is not None]

    def flush(
        self, now_ms: int, clock_of: Callable[[str], int] | None = None, limit: int | None = None
    ) -> list[Candle]:
        """Close every candle whose minute (plus grace) is over at ``now_ms``.

        ``now_ms`` is on the exchange clock: the newest exchange_ts the worker
        has seen, or the wall clock when the feed has gone quiet (lunch, close).
        ``clock_of(code)``, when given, is the clock of that stock (its
        partition's newest exchange_ts) and must also have passed the end: a
        worker catching up on a backlog reads its partitions at different
        positions, and a stock's last ticks of a minute may still be ahead of
        it while another partition is already in the next minute.
        ``limit``: close at most that many (the earliest ends first, then by
        code); the rest stay open for the next call.
        Costs O(candles due): open candles are indexed by their end.
        """
        ends = sorted(end for end in self._open_by_end if end <= now_ms)
        closed: list[Candle] = []
        for end in ends:
            for code in sorted(self._open_by_end[end]):
                if clock_of is None or clock_of(code) >= end:
                    closed.append(self._close(self._stocks[code]))
                    if len(closed) == limit:
                        return closed
        return closed

    def close_all(self) -> list[Candle]:
        """Close every open candle (end of day, shutdown)."""
        closed: list[Candle] = []
        for end in sorted(self._open_by_end):
            for code in sorted(self._open_by_end[end]):
                closed.append(self._close(self._stocks[code]))
        return closed

    def forget(self, codes: Iterable[str]) -> int:
        """Drop the state of ``codes`` (their partitions moved to another worker).

        Their open candles are not closed here: the new owner rebuilds them
        from the Redis ticks and closes them. Returns how many were dropped.
        """
        dropped = 0
        for code in codes:
            st = self._stocks.pop(code, None)
            if st is None:
                continue
            dropped += 1
            if st.minute >= 0:
                open_codes = self._open_by_end.get(st.end)
                if open_codes is not None:
                    open_codes.discard(code)
                    if not open_codes:
                        del self._open_by_end[st.end]
        return dropped

    def open_count(self) -> int:
        return sum(len(codes) for codes in self._open_by_end.values())

    def _start(self, st: _Stock, minute: int, quote: Quote) -> None:
        st.minute = minute
        st.end = candle_end(minute, self.close_grace_ms)
        st.volume = 0
        st.amount = 0.0
        st.ticks = 0
        st.has_trade = False
        st.ref_price = st.last_price or float(quote["prev_close"])
        codes = self._open_by_end.get(st.end)
        if codes is None:
            codes = self._open_by_end[st.end] = set()
        codes.add(st.code)

    def _close(self, st: _Stock) -> Candle:
        candle = st.record(closed=True)
        codes = self._open_by_end[st.end]
        codes.discard(st.code)
        if not codes:
            del self._open_by_end[st.end]
        st.closed_through = st.minute
        st.minute = -1
        self.counters.closed += 1
        return candle


#: what the compiled builder computes a candle's minute and end from
#: (:func:`schemas.timeframes.candle_minute`, ``candle_end``, ``is_opening_minute``)
CANDLE_SESSIONS: Final = (SHANGHAI_OFFSET_MS, DAY_MS, MINUTE_MS, OPEN_AUCTION_START,
                          AM_START, AM_END, PM_START, PM_END)  # fmt: skip


class CompiledCandleBuilder:
    """:class:`CandleBuilder` compiled (``hqstream_native.CandleBook``, native/src/candles.rs):
    the same state folded the same way, so the same candles at the same ticks (the tests
    run both over the same ticks); it makes the :class:`Candle` records by calling the
    class. ``update``, ``closes`` and ``current`` are the compiled methods themselves.
    Unlike the reference it does not log a counter that went backwards (it counts it)."""

    __slots__ = ("_book", "close_grace_ms", "closes", "current", "current_of", "update")

    def __init__(self, native: ModuleType, close_grace_ms: int = CLOSE_GRACE_MS) -> None:
        self.close_grace_ms = close_grace_ms
        self._book = native.CandleBook(Candle, close_grace_ms, CANDLE_SESSIONS)
        self.update: Callable[[Quote], list[Candle]] = self._book.update
        self.closes: Callable[[str, int], bool] = self._book.closes
        self.current: Callable[[str], Candle | None] = self._book.current
        self.current_of: Callable[[list[str]], list[Candle]] = self._book.current_of

    @property
    def counters(self) -> CandleCounters:
        return CandleCounters(*self._book.counters())

    def flush(
        self, now_ms: int, clock_of: Callable[[str], int] | None = None, limit: int | None = None
    ) -> list[Candle]:
        """:meth:`CandleBuilder.flush`."""
        closed: list[Candle] = self._book.flush(now_ms, clock_of, limit)
        return closed

    def close_all(self) -> list[Candle]:
        """Close every open candle (end of day, shutdown)."""
        closed: list[Candle] = self._book.close_all()
        return closed

    def forget(self, codes: Iterable[str]) -> int:
        """:meth:`CandleBuilder.forget`."""
        dropped: int = self._book.forget(list(codes))
        return dropped

    def open_count(self) -> int:
        count: int = self._book.open_count()
        return count


Candles: TypeAlias = CandleBuilder | CompiledCandleBuilder


def candle_builder(close_grace_ms: int = CLOSE_GRACE_MS, *, compiled: bool = True) -> Candles:
    """The compiled builder when ``compiled`` and the extension is installed, else the
    Python one."""
    native = native_module()[0] if compiled else None
    if native is None:
        return CandleBuilder(close_grace_ms)
    return CompiledCandleBuilder(native, close_grace_ms)
