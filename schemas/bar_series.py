"""One stock's bars of one timeframe, built from its closed 1-minute candles, with indicators.

:class:`BarSeries` is the whole state of a (stock, timeframe): the indicator
state after the last closed bar, the open bar's part made of the 1-minute
candles already closed (``partial``) and the newest minute folded in
(``through``, so a replayed candle is never folded twice). The stream workers
feed it the closed 1-minute candles (:meth:`BarSeries.add_minute`, O(1)) and
store it in Redis when it changes (:meth:`BarSeries.take_stored`); the gateway
loads it and shows the open bar (:meth:`BarSeries.view`): the partial plus the
still-open 1-minute candle, its indicators evaluated without closing it. So
nothing is computed per tick for the higher timeframes; an open bar is always
current, and when it closes its values are the ones it showed.

Bar dicts are Avro ``Candle`` v2 records (schemas/avro/candle.v2.avsc): the
1-minute fields, ``minute_ts`` = the bar's start, ``tf`` and ``indicators``.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.indicators import IndicatorState, SeriesState
from schemas.timeframes import Timeframe, bucket

Bar = dict[str, Any]
#: a series' whole form is stored again after this many minutes of open parts (exchange
#: time), so one that Redis lost (a failover's last writes) is not missing for long
WHOLE_EVERY_MS = 15 * 60_000
#: a series as ``hq:bars:{code}`` holds it: its whole form and its open part (or None)
StoredSeries = tuple[bytes, bytes | None]


def new_bar(tf: Timeframe, start: int, candle: Bar) -> Bar:
    """A ``tf`` bar starting at ``start`` holding one 1-minute ``candle`` so far."""
    return {
        "code": candle["code"],
        "market": candle["market"],
        "trade_date": candle["trade_date"],
        "minute_ts": start,
        "open": candle["open"],
        "high": candle["high"],
        "low": candle["low"],
        "close": candle["close"],
        "volume": candle["volume"],
        "amount": candle["amount"],
        "ticks": candle["ticks"],
        "closed": False,
        "tf": tf,
        "indicators": None,
    }


def fold(bar: Bar, candle: Bar) -> Bar:
    """``bar`` extended by the later 1-minute ``candle`` (a new dict)."""
    out = dict(bar)
    fold_into(out, candle)
    return out


def fold_into(bar: Bar, candle: Bar) -> None:
    """Extend ``bar`` by the later 1-minute ``candle``, in place."""
    if candle["high"] > bar["high"]:
        bar["high"] = candle["high"]
    if candle["low"] < bar["low"]:
        bar["low"] = candle["low"]
    bar["close"] = candle["close"]
    bar["volume"] += candle["volume"]
    bar["amount"] = round(bar["amount"] + candle["amount"], 2)
    bar["ticks"] += candle["ticks"]


class BarSeries:
    """The bars of one stock in one timeframe; see the module docstring."""

    __slots__ = ("_given", "_given_through", "_state_json", "intraday", "partial", "state", "tf",
                 "through")  # fmt: skip

    def __init__(self, tf: Timeframe) -> None:
        self.tf: Timeframe = tf
        self.intraday = tf != "1d"
        self.state = SeriesState()
        self.partial: Bar | None = None  # the open bar's closed minutes (higher timeframes)
        self.through = -1  # minute_ts of the newest 1-minute candle folded in
        # (the state, its bar count, its JSON): see dumps()
        self._state_json: tuple[IndicatorState, int, bytes] | None = None
        # (the state, its bar count, through) at the last whole form take_stored gave; the
        # through of its last form
        self._given: tuple[IndicatorState, int, int] | None = None
        self._given_through = -1

    def add_minute(self, candle: Bar) -> list[Bar]:
        """Fold a closed 1-minute candle in; returns the bars it closed (final indicators).

        For ``1m`` that is the candle itself. A candle not newer than
        ``through`` (a replay) changes nothing.
        """
        minute = candle["minute_ts"]
        if minute <= self.through:
            return []
        self.through = minute
        if self.tf == "1m":
            bar = dict(candle, tf="1m", closed=True)
            bar["indicators"] = self.state.close(bar, self.intraday)
            return [bar]
        closed: list[Bar] = []
        start, last = bucket(self.tf, minute)
        partial = self.partial
        if partial is not None and partial["minute_ts"] != start:
            closed.append(self.close_partial())
            partial = None
        if partial is None:
            self.partial = new_bar(self.tf, start, candle)
        else:
            fold_into(partial, candle)  # the open bar stays the same dict while it goes on
        if minute == last:
            closed.append(self.close_partial())
        return closed

    def add_bar(self, bar: Bar) -> Bar | None:
        """Fold a complete bar of this timeframe in (a backfill of history); None if not newer.

        ``bar["minute_ts"]`` is its start (for 1d: 09:30 of the day).
        """
        last = bucket(self.tf, bar["minute_ts"])[1]
        if last <= self.through:
            return None
        self.through = last
        self.partial = None
        closed = dict(bar, tf=self.tf, closed=True)
        closed["indicators"] = self.state.close(closed, self.intraday)
        return closed

    def close_partial(self) -> Bar:
        """Close the open bar (its last minute closed, or its time is over)."""
        bar = self.partial
        assert bar is not None
        self.partial = None
        bar["closed"] = True
        bar["indicators"] = self.state.close(bar, self.intraday)
        return bar

    def last_minute(self) -> int | None:
        """Start of the open bar's last minute, None without an open bar."""
        if self.partial is None:
            return None
        return bucket(self.tf, self.partial["minute_ts"])[1]

    def view(self, open_minute: Bar | None) -> list[Bar]:
        """The open bar(s) as they stand, given the open 1-minute candle (or None).

        Usually one bar: the partial with the open minute folded in. When the
        open minute already belongs to the next bar (the partial's time is
        over but the worker's timer has not closed it yet) both are shown, the
        second evaluated as if the first had closed.
        """
        if open_minute is not None and open_minute["minute_ts"] <= self.through:
            open_minute = None  # already folded (a stale open candle)
        if self.tf == "1m":
            if open_minute is None:
                return []
            bar = dict(open_minute, tf="1m", closed=False)
            bar["indicators"] = self.state.peek(bar, self.intraday)
            return [bar]
        if open_minute is None:
            if self.partial is None:
                return []
            return [dict(self.partial, indicators=self.state.peek(self.partial, self.intraday))]
        start = bucket(self.tf, open_minute["minute_ts"])[0]
        if self.partial is not None and self.partial["minute_ts"] == start:
            bar = fold(self.partial, open_minute)
            return [dict(bar, indicators=self.state.peek(bar, self.intraday))]
        bars: list[Bar] = []
        state = self.state
        if self.partial is not None:
            state = SeriesState.from_json(self.state.to_json())
            bars.append(dict(self.partial, indicators=state.close(self.partial, self.intraday)))
        bar = new_bar(self.tf, start, open_minute)
        bars.append(dict(bar, indicators=state.peek(bar, self.intraday)))
        return bars

    def to_json(self) -> dict[str, Any]:
        return {"tf": self.tf, "state": self.state.to_json(), "partial": self.partial,
                "through": self.through}  # fmt: skip

    def dumps(self) -> bytes:
        """``orjson.dumps(self.to_json())``, the state's part serialized once per bar it folds.

        The series of a higher timeframe change every minute (the open bar's
        part) but their indicator state only when one of their bars closes,
        and the state is most of the bytes: a worker stores every stock's
        series each minute (streams.bars.TimeframeBars.take_changed).
        """
        state, cached = self.state, self._state_json
        if cached is None or cached[0] is not state or cached[1] != state.bars:
            cached = self._state_json = (state, state.bars, state.dumps())
        return orjson.dumps({"tf": self.tf, "state": orjson.Fragment(cached[2]),
                             "partial": self.partial, "through": self.through})  # fmt: skip

    def take_stored(self) -> tuple[bool, bytes] | None:
        """What Redis needs to hold the series as it is now, after what this gave it last.

        ``(True, whole)``: :meth:`dumps`, when the indicator state changed
        (a bar closed), at the first call and :data:`WHOLE_EVERY_MS` after
        the last whole form; ``(False, open part)``, when only the open bar
        went on (most minutes of a higher timeframe): its ``partial`` and
        ``through`` and ``of``, the whole form they go with (its bar count
        and ``through``), ~250 bytes instead of ~1 KB; None when nothing
        changed. Redis keeps both in ``hq:bars:{code}`` (fields ``tf`` and
        ``tf:open``); a reader joins them (:meth:`from_stored`).
        """
        state, given = self.state, self._given
        if (
            given is None
            or given[0] is not state
            or given[1] != state.bars
            or self.through - given[2] >= WHOLE_EVERY_MS
        ):
            self._given = (state, state.bars, self.through)
            self._given_through = self.through
            return True, self.dumps()
        if self.through == self._given_through:
            return None
        self._given_through = self.through
        return False, orjson.dumps({"of": [given[1], given[2]], "partial": self.partial,
                                    "through": self.through})  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BarSeries:
        series = cls(data["tf"])
        series.state = SeriesState.from_json(data["state"])
        series.partial = data["partial"]
        series.through = data["through"]
        return series

    @classmethod
    def from_stored(cls, whole: bytes, open_part: bytes | None = None) -> BarSeries:
        """The series from its stored forms (:meth:`take_stored`): the whole one and, if
        any, the open part, which counts only if made on top of that whole one (a
        newer whole form, or an older one restored, leaves it out)."""
        series = cls.from_json(orjson.loads(whole))
        if open_part is not None:
            part = orjson.loads(open_part)
            if part["of"] == [series.state.bars, series.through]:
                series.partial, series.through = part["partial"], part["through"]
        return series
