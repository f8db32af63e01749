"""Quote alerts: limit-price touches and leaves, fast moves, volume spikes.

``AlertDetector.update(quote)`` looks at one normalized Quote and returns the
:class:`Alert` values (the fields of schemas/avro/alert.v1.avsc) it triggers:

* ``LIMIT_UP_TOUCH`` / ``LIMIT_UP_LEAVE`` / ``LIMIT_DOWN_TOUCH`` /
  ``LIMIT_DOWN_LEAVE``: on a change of ``at_limit_up`` / ``at_limit_down``,
  never on every tick at the limit. A day starts "not at the limit", so a
  stock that opens at its limit (09:25 auction) alerts; a stock first seen
  after 09:30 (the worker restarted) is taken as it is, without an alert.
* ``FAST_MOVE``: the traded price is at least ``fast_move_pct`` percent above
  the lowest (or below the highest) traded price of the trailing
  ``fast_move_window_s``. After it fires the window restarts from the current
  price, so one move alerts once, not once per cooldown while it lasts.
  ``value`` is the signed move in percent.
* ``VOLUME_SPIKE``: shares traded since the previous tick, per second, are at
  least ``volume_spike_ratio`` times the stock's average rate over the
  trailing ``volume_window_s`` (needing ``volume_min_shares`` in the tick and
  ``volume_min_history_s`` of history). Judged in continuous trading only:
  the auctions' single large matches are not spikes. ``value`` is the ratio.

Windows and cooldowns run on ``streams.trading_clock.trading_clock_ms`` (trading
time, so lunch does not count: 11:29:50 and 13:00:05 are 15 trading seconds
apart) of the exchange timestamps, never the wall clock. A ``cooldown_s``
per (code, kind) limits repeats; a limit transition held back
by the cooldown is reported once the cooldown is over if it still holds, so
the reported limit state never stays wrong. Ticks with exchange_ts <= the last
seen for the stock (replays) and suspended quotes are ignored.

Memory per stock is bounded (deques of at most ``max_points``). Pure
in-memory computation; this module never does I/O.

:class:`AlertDetector` is the reference. :class:`CompiledAlertDetector` is the
same detector compiled (``hqstream_native.AlertWindows``, native/src/alerts.rs:
the same state and arithmetic, so the same alerts at the same ticks with the
same values); both make an alert's record with :func:`alert_of`.
:func:`alert_detector` gives the compiled one when the extension is installed.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, Generic, TypeAlias, TypeVar, cast

import msgspec

from schemas.exchange import Market
from schemas.native import native_module
from schemas.records import AlertKind, Quote
from streams.errors import StreamsError
from streams.trading_clock import (
    AM_START,
    CLOCK_SESSIONS,
    is_continuous,
    local_ms_of_day,
    trading_clock_ms,
)


class Alert(msgspec.Struct, frozen=True, gc=False):
    """One alert: the fields of the Avro ``Alert`` v1, in its order.

    Avro and the JSON Redis stores are written from :meth:`as_record` with
    orjson: alerts are rare, and a volume ratio may exceed 1e16, where
    msgspec's JSON writes floats differently (``1e16`` for ``1e+16``).
    """

    code: str
    name: str
    market: Market
    kind: AlertKind
    exchange_ts: int
    price: float
    change_pct: float
    value: float  # the move in percent (FAST_MOVE, LIMIT_*) or the volume ratio
    message: str

    def as_record(self) -> dict[str, Any]:
        """The Avro ``Alert`` record (a dict, fields in the schema's order)."""
        return msgspec.structs.asdict(self)


_EPS: Final = 1e-9  # float slack when comparing a computed percent to a threshold


class AlertConfigError(StreamsError, ValueError):
    """An AlertConfig with a threshold that makes no sense."""


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Alert thresholds. Windows and cooldowns are in trading seconds."""

    fast_move_pct: float = 5.0
    fast_move_window_s: float = 300.0
    volume_spike_ratio: float = 5.0
    volume_window_s: float = 300.0
    volume_min_shares: int = 100_000
    volume_min_history_s: float = 60.0
    cooldown_s: float = 60.0
    max_points: int = 512  # per stock and window; bounds memory under a flood of ticks

    def __post_init__(self) -> None:
        for name in ("fast_move_pct", "fast_move_window_s", "volume_spike_ratio"):
            if getattr(self, name) <= 0:
                raise AlertConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.volume_window_s <= 0 or self.max_points < 2:
            raise AlertConfigError("volume_window_s must be > 0 and max_points >= 2")
        if self.volume_min_shares < 0 or self.cooldown_s < 0 or self.volume_min_history_s < 0:
            raise AlertConfigError("volume_min_shares, cooldown_s, min history must be >= 0")

    def windows_ms(self) -> tuple[int, int, int, int]:
        """The fast-move window, the volume window, the volume's minimum history and
        the cooldown, in trading ms."""
        return (int(self.fast_move_window_s * 1000), int(self.volume_window_s * 1000),
                int(self.volume_min_history_s * 1000), int(self.cooldown_s * 1000))  # fmt: skip


#: what a fired alert needs beside its quote (:func:`alert_of`)
Detail: TypeAlias = tuple[()] | tuple[float, float] | tuple[float, int, int]


@dataclass(slots=True)
class AlertCounters:
    replays: int = 0  # exchange_ts <= last seen: ignored
    suspended: int = 0
    cooled_down: int = 0  # alerts held back by the cooldown


_N = TypeVar("_N", int, float)


class _Points(Generic[_N]):
    """(trading clock, value) points, oldest first, at most ``maxlen``.

    Two deques of numbers, not one deque of tuples: a tuple per tick is an
    object the cyclic GC tracks until a collection looks at it, and these
    windows' tuples (~1.3 a tick) were nearly all of what outlived a steady
    feed's batches: every ~30 s a young collection walked ~70,000 of them,
    65-119 ms on a slow day, with the batches waiting (docs/benchmarks.md,
    "Alerts' windows without a tuple per tick"). Ints and floats are not
    tracked at all.
    """

    __slots__ = ("clocks", "values")

    def __init__(self, maxlen: int) -> None:
        self.clocks: deque[int] = deque(maxlen=maxlen)
        self.values: deque[_N] = deque(maxlen=maxlen)

    def __len__(self) -> int:
        return len(self.clocks)

    def append(self, clock: int, value: _N) -> None:
        self.clocks.append(clock)
        self.values.append(value)

    def popleft(self) -> None:
        self.clocks.popleft()
        self.values.popleft()

    def pop(self) -> None:
        self.clocks.pop()
        self.values.pop()

    def clear(self) -> None:
        self.clocks.clear()
        self.values.clear()


class _Stock:
    __slots__ = (
        "cooldown",
        "last_continuous",
        "last_cum",
        "last_ts",
        "ld_reported",
        "lu_reported",
        "maxs",
        "mins",
        "trade_date",
        "vol_points",
    )

    def __init__(self, max_points: int) -> None:
        self.last_ts = -1
        self.trade_date = ""
        self.lu_reported = False
        self.ld_reported = False
        # (trading clock, price), increasing / decreasing prices: window min / max
        self.mins: _Points[float] = _Points(max_points)
        self.maxs: _Points[float] = _Points(max_points)
        # (trading clock, cumulative volume) of continuous-session ticks
        self.vol_points: _Points[int] = _Points(max_points)
        self.last_cum = 0
        self.last_continuous = False
        self.cooldown: dict[str, int] = {}  # kind -> trading clock of the last alert


class AlertDetector:
    """Per-stock alert state for the stocks one worker sees."""

    def __init__(self, config: AlertConfig | None = None) -> None:
        self.config = config or AlertConfig()
        self.counters = AlertCounters()
        self._stocks: dict[str, _Stock] = {}
        (self._move_window_ms, self._vol_window_ms,
         self._min_history_ms, self._cooldown_ms) = self.config.windows_ms()  # fmt: skip

    def forget(self, codes: Iterable[str]) -> None:
        """Drop the state of ``codes`` (their partitions moved to another worker)."""
        for code in codes:
            self._stocks.pop(code, None)

    def update(self, quote: Quote) -> list[Alert]:
        """The alerts this quote triggers (usually none)."""
        ts: int = quote["exchange_ts"]
        st = self._stocks.get(quote["code"])
        fresh = st is None
        if st is None:
            st = self._stocks[quote["code"]] = _Stock(self.config.max_points)
        elif ts <= st.last_ts:
            self.counters.replays += 1
            return []
        st.last_ts = ts
        if quote["suspended"]:
            self.counters.suspended += 1
            return []
        if quote["trade_date"] != st.trade_date:
            self._new_day(st, quote, fresh)

        alerts: list[Alert] = []
        self._limits(st, quote, alerts)
        clock = trading_clock_ms(ts)
        if quote["traded"] and quote["price"] > 0:
            self._fast_move(st, quote, clock, alerts)
        self._volume(st, quote, clock, alerts)
        return alerts

    def _new_day(self, st: _Stock, quote: Quote, fresh: bool) -> None:
        st.trade_date = quote["trade_date"]
        st.mins.clear()
        st.maxs.clear()
        st.vol_points.clear()
        st.last_cum = 0
        st.last_continuous = False
        if fresh and local_ms_of_day(quote["exchange_ts"]) >= AM_START:
            # first seen mid-session: take the limit state as it is, no alert
            st.lu_reported = bool(quote["at_limit_up"])
            st.ld_reported = bool(quote["at_limit_down"])
        else:
            st.lu_reported = st.ld_reported = False

    def _limits(self, st: _Stock, q: Quote, alerts: list[Alert]) -> None:
        up: bool = q["at_limit_up"]
        if up != st.lu_reported:
            kind: AlertKind = "LIMIT_UP_TOUCH" if up else "LIMIT_UP_LEAVE"
            if self._emit(st, q, kind, (), alerts):
                st.lu_reported = up
        down: bool = q["at_limit_down"]
        if down != st.ld_reported:
            kind = "LIMIT_DOWN_TOUCH" if down else "LIMIT_DOWN_LEAVE"
            if self._emit(st, q, kind, (), alerts):
                st.ld_reported = down

    def _fast_move(self, st: _Stock, q: Quote, clock: int, alerts: list[Alert]) -> None:
        price: float = q["price"]
        mins, maxs = st.mins, st.maxs
        horizon = clock - self._move_window_ms
        while mins.clocks and mins.clocks[0] < horizon:
            mins.popleft()
        while maxs.clocks and maxs.clocks[0] < horizon:
            maxs.popleft()
        fired = False
        if mins.clocks:
            lo, hi = mins.values[0], maxs.values[0]
            up = (price - lo) / lo * 100.0
            down = (price - hi) / hi * 100.0
            pct = self.config.fast_move_pct - _EPS
            move, ref = (up, lo) if up >= -down else (down, hi)
            if abs(move) >= pct:
                fired = self._emit(st, q, "FAST_MOVE", (move, ref), alerts)
        if fired:  # restart the window: one move, one alert
            mins.clear()
            maxs.clear()
        while mins.values and mins.values[-1] >= price:
            mins.pop()
        mins.append(clock, price)
        while maxs.values and maxs.values[-1] <= price:
            maxs.pop()
        maxs.append(clock, price)

    def _volume(self, st: _Stock, q: Quote, clock: int, alerts: list[Alert]) -> None:
        cum: int = q["volume"]
        points = st.vol_points
        if cum < st.last_cum:  # counter went backwards (data fix): start over
            points.clear()
            st.last_continuous = False
        st.last_cum = cum
        continuous = is_continuous(q["exchange_ts"])
        if not continuous:
            st.last_continuous = False
            return
        if st.last_continuous and points.clocks:
            spike = self._spike(points, clock, cum)
            if spike is not None:
                self._emit(st, q, "VOLUME_SPIKE", spike, alerts)
        points.append(clock, cum)
        horizon = clock - self._vol_window_ms
        clocks = points.clocks
        while len(clocks) > 1 and clocks[1] <= horizon:
            points.popleft()
        st.last_continuous = True

    def _spike(self, points: _Points[int], clock: int, cum: int) -> tuple[float, int, int] | None:
        """``(ratio, shares, ms)`` when this tick's volume rate is a spike."""
        clocks, cums = points.clocks, points.values
        prev_clock, prev_cum = clocks[-1], cums[-1]
        dt_ms = clock - prev_clock
        dv = cum - prev_cum
        span = prev_clock - clocks[0]
        if dt_ms <= 0 or dv < self.config.volume_min_shares or span <= 0:
            return None
        if span < self._min_history_ms:
            return None
        avg = (prev_cum - cums[0]) / span  # shares per trading ms over the window
        if avg <= 0:  # no trade in the window: a ratio means nothing
            return None
        ratio = dv / dt_ms / avg
        if ratio < self.config.volume_spike_ratio - _EPS:
            return None
        return ratio, dv, dt_ms

    def _emit(
        self, st: _Stock, q: Quote, kind: AlertKind, detail: Detail, out: list[Alert]
    ) -> bool:
        ts: int = q["exchange_ts"]
        clock = trading_clock_ms(ts)
        last = st.cooldown.get(kind)
        if last is not None and clock - last < self._cooldown_ms:
            self.counters.cooled_down += 1
            return False
        st.cooldown[kind] = clock
        out.append(alert_of(self.config, q, kind, detail))
        return True


def alert_of(config: AlertConfig, q: Quote, kind: AlertKind, detail: Detail) -> Alert:
    """The record of an alert ``q`` fired: ``detail`` is ``()`` for a limit's,
    ``(move, reference price)`` for a fast move's, ``(ratio, shares, ms)`` for a
    volume spike's. Both detectors make their alerts with it."""
    if kind == "FAST_MOVE":
        move, ref = cast(tuple[float, float], detail)
        value = round(move, 4)
        message = (
            f"{q['code']} {q['name']} moved {move:+.2f}% from {ref:.2f} to {q['price']:.2f} "
            f"within {config.fast_move_window_s:g}s of trading ({q['change_pct']:+.2f}% today)"
        )
    elif kind == "VOLUME_SPIKE":
        ratio, dv, dt_ms = cast(tuple[float, int, int], detail)
        value = round(ratio, 4)
        message = (
            f"{q['code']} {q['name']} traded {dv:,} shares in {dt_ms / 1000:g}s, "
            f"{ratio:.1f}x its {config.volume_window_s:g}s average rate; "
            f"price {q['price']:.2f} ({q['change_pct']:+.2f}%)"
        )
    else:
        value = q["change_pct"]
        message = _limit_message(q, kind)
    return Alert(q["code"], q["name"], q["market"], kind, q["exchange_ts"], q["price"],
                 q["change_pct"], float(value), message)  # fmt: skip


def _limit_message(q: Quote, kind: AlertKind) -> str:
    who = f"{q['code']} {q['name']}"
    now = f"{q['price']:.2f} ({q['change_pct']:+.2f}%)"
    if kind == "LIMIT_UP_TOUCH":
        return f"{who} hit its limit-up price {q['limit_up']:.2f}: {now}"
    if kind == "LIMIT_UP_LEAVE":
        return f"{who} left its limit-up price {q['limit_up']:.2f}, now {now}"
    if kind == "LIMIT_DOWN_TOUCH":
        return f"{who} hit its limit-down price {q['limit_down']:.2f}: {now}"
    return f"{who} left its limit-down price {q['limit_down']:.2f}, now {now}"


class CompiledAlertDetector:
    """:class:`AlertDetector` compiled (``hqstream_native.AlertWindows``): the same state
    and arithmetic in Rust, so the same alerts at the same ticks with the same values
    (the tests run both over the same ticks). ``update`` is the compiled method
    itself; it reads a quote's fields from its dict and calls :func:`alert_of` only
    for an alert that fires. The workers' default; :class:`AlertDetector` stays the
    reference and serves where the extension is not installed or is turned off."""

    __slots__ = ("_windows", "config", "update")

    def __init__(self, native: ModuleType, config: AlertConfig | None = None) -> None:
        self.config = config = config or AlertConfig()
        self._windows = native.AlertWindows(
            functools.partial(alert_of, config),
            config.windows_ms(),
            CLOCK_SESSIONS,
            config.fast_move_pct,
            config.volume_spike_ratio,
            config.volume_min_shares,
            config.max_points,
        )
        self.update: Callable[[Quote], list[Alert]] = self._windows.update

    @property
    def counters(self) -> AlertCounters:
        w = self._windows
        return AlertCounters(replays=w.replays, suspended=w.suspended, cooled_down=w.cooled_down)

    def forget(self, codes: Iterable[str]) -> None:
        """Drop the state of ``codes`` (their partitions moved to another worker)."""
        self._windows.forget(list(codes))

    def held(self, code: str) -> tuple[int, int, int, int] | None:
        """``(minima, maxima, volume points, cooldowns)`` the stock's windows hold, or None."""
        held: tuple[int, int, int, int] | None = self._windows.held(code)
        return held


Alerts: TypeAlias = AlertDetector | CompiledAlertDetector


def alert_detector(config: AlertConfig | None = None, *, compiled: bool = True) -> Alerts:
    """The compiled detector when ``compiled`` and the extension is installed, else the
    Python one."""
    native = native_module()[0] if compiled else None
    return AlertDetector(config) if native is None else CompiledAlertDetector(native, config)
