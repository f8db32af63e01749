"""Technical indicators of a candle series, incremental: O(1) per bar, never over history.

Shared by the stream workers (they advance the state when a bar closes), the
gateway (it evaluates the still-open bar against the stored state) and the
backfill (history before the platform started); it is pure arithmetic: no
I/O, no clock. :class:`IndicatorState` holds what the next bar needs;
:meth:`IndicatorState.close` folds a final bar in and returns its values,
:meth:`IndicatorState.peek` returns the values an open bar would have now
without changing the state, so an open bar's values update live and are
final, unchanged, when the bar closes.

Definitions: those of TA-Lib (``ta-lib`` C 0.6, default compatibility, no
unstable period), operation for operation, so the values are TA-Lib's to the
last bits (tests/schemas/test_indicators.py compares every series to TA-Lib
at 1e-9 relative). Where Chinese terminals (通达信, 同花顺) differ, it is said:

* ``ma5 ma10 ma20 ma60``: TA_SMA; null for the first n-1 bars. TA-Lib keeps a
  running sum (add the new close, divide, subtract the oldest): so do we.
* ``ema12 ema26``: TA_EMA, ``k = 2/(n+1)``, seeded with the SMA of the first n
  closes (terminals seed with the first close: the two converge within a few
  dozen bars); null for the first n-1 bars.
* ``macd macd_signal macd_hist``: TA_MACD(12, 26, 9): DIF = EMA12 - EMA26
  where *inside MACD* both EMAs start at bar 25, the fast one seeded with the
  SMA of closes 14..25 (so MACD's fast EMA is not ``ema12``); signal = EMA9 of
  DIF seeded with the SMA of its first 9 values; hist = DIF - signal; all null
  for the first 33 bars. Terminals call DIF/DEA ``DIF``/``DEA`` and draw
  ``MACD = 2 x (DIF - DEA)``: twice our ``macd_hist``.
* ``rsi6 rsi12 rsi24``: TA_RSI, Wilder's smoothing (the first value at bar n
  is the mean gain/loss of the first n changes, then ``avg = (avg*(n-1) +
  x)/n``); 0 when nothing moved. Terminals use the same smoothing
  (``SMA(x, n, 1)``) but seed it from the first bar.
* ``kdj_k kdj_d kdj_j``: KDJ(9, 3, 3) as Chinese terminals compute it (TA-Lib
  has none; its STOCH smooths with moving averages): ``RSV = (C - LLV(L, 9)) /
  (HHV(H, 9) - LLV(L, 9)) x 100`` over the bars so far (fewer than 9 at the
  start), ``K = (2 K' + RSV) / 3``, ``D = (2 D' + K) / 3`` (``SMA(x, 3, 1)``,
  weight 1/3), K' = D' = 50 before the first bar, ``J = 3K - 2D``. When the
  window has no range (HHV = LLV: a halt, a limit-locked run) RSV is taken as
  the previous K, so K holds. The test's reference is a plain batch
  implementation of these formulas.
* ``boll_mid boll_upper boll_lower``: TA_BBANDS(20, 2, 2, SMA): mid = SMA20,
  bands = mid +- 2 x the *population* standard deviation (TA-Lib's running
  sum of squares, 0 when the variance is below 1e-14). 通达信's BOLL uses the
  sample deviation (n-1): its bands are sqrt(20/19) = 2.6% wider apart.
* ``atr14``: TA_ATR(14): true range ``max(H-L, |H-C'|, |L-C'|)`` from the
  second bar; the first value (bar 14) is the mean of TR 1..14, then Wilder's
  ``(atr*13 + tr)/14``.
* ``vwap``: no TA-Lib function: ``sum(amount)/sum(volume)`` of the trade
  date's bars so far (intraday timeframes), the bar's own for daily bars;
  null until some volume traded, then held through bars without volume.

Values are ``None`` (JSON null) where not yet defined.

:class:`IndicatorState` here is the reference; the bar series use
:data:`SeriesState`: the compiled one (``hqstream_native.IndicatorState``,
native/src/indicators.rs: the same arithmetic operation for operation, the
same JSON) when the extension is installed, else this one. The two give the
same values to the last bit and read each other's JSON
(tests/schemas/test_native_indicators.py).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final, cast

import orjson

MA_PERIODS: Final = (5, 10, 20, 60)
EMA_PERIODS: Final = (12, 26)
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
RSI_PERIODS: Final = (6, 12, 24)
KDJ_N: Final = 9
BOLL_N, BOLL_K = 20, 2.0
ATR_N: Final = 14
#: TA-Lib's TA_IS_ZERO / TA_IS_ZERO_OR_NEG threshold (ta_utility.h)
TA_EPSILON: Final = 0.00000000000001

#: indicator groups (what a client asks for) -> the value names of each
GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "ma": tuple(f"ma{n}" for n in MA_PERIODS),
    "ema": tuple(f"ema{n}" for n in EMA_PERIODS),
    "macd": ("macd", "macd_signal", "macd_hist"),
    "rsi": tuple(f"rsi{n}" for n in RSI_PERIODS),
    "kdj": ("kdj_k", "kdj_d", "kdj_j"),
    "boll": ("boll_mid", "boll_upper", "boll_lower"),
    "vwap": ("vwap",),
    "atr": (f"atr{ATR_N}",),
}
#: every value name, in the order of the Avro ``Indicators`` record
NAMES: Final[tuple[str, ...]] = tuple(name for names in GROUPS.values() for name in names)
_WINDOW: Final = max(*MA_PERIODS, BOLL_N, MACD_SLOW)
_MA_NAMES: Final = GROUPS["ma"]
_EMA_NAMES: Final = GROUPS["ema"]
_RSI_NAMES: Final = GROUPS["rsi"]
_ATR_NAME: Final = GROUPS["atr"][0]
#: TA-Lib's PER_TO_K: the EMA weight of a period
_K: Final = {p: 2.0 / (p + 1) for p in (*EMA_PERIODS, MACD_FAST, MACD_SLOW, MACD_SIGNAL)}

Values = dict[str, float | None]


def select(values: Values | None, groups: frozenset[str] | None) -> Values | None:
    """The values of the indicator ``groups`` only (all of them when None)."""
    if values is None or groups is None:
        return values
    return {name: values.get(name) for group in GROUPS if group in groups for name in GROUPS[group]}


class IndicatorState:
    """What the next bar of one series (one stock, one timeframe) needs; see the module doc.

    Each running figure is kept as TA-Lib keeps it, so float rounding follows
    TA-Lib's: e.g. a moving average's sum holds the last n-1 closes, the
    newest is added, the sum divided, and the oldest subtracted.
    """

    __slots__ = (
        "atr",
        "bars",
        "closes",
        "day",
        "day_amount",
        "day_volume",
        "ema",
        "highs",
        "kdj_d",
        "kdj_k",
        "lows",
        "ma_sum",
        "macd_fast",
        "macd_signal",
        "macd_slow",
        "prev_close",
        "rsi_gain",
        "rsi_loss",
        "signal_sum",
        "tr_sum",
    )

    def __init__(self) -> None:
        self.bars = 0  # bars folded in
        self.closes: deque[float] = deque(maxlen=_WINDOW)  # newest last
        self.highs: deque[float] = deque(maxlen=KDJ_N - 1)  # the KDJ window before this bar
        self.lows: deque[float] = deque(maxlen=KDJ_N - 1)
        self.prev_close = 0.0
        # tuples, replaced whole when a bar closes: the cyclic GC does not track them
        self.ma_sum = (0.0,) * len(MA_PERIODS)  # the last n-1 closes (TA-Lib's periodTotal)
        self.ema: tuple[float | None, ...] = (None,) * len(EMA_PERIODS)
        self.macd_fast: float | None = None
        self.macd_slow: float | None = None
        self.signal_sum = 0.0  # sum of the first DIFs, until the signal is seeded
        self.macd_signal: float | None = None
        self.rsi_gain = (0.0,) * len(RSI_PERIODS)  # sums, then Wilder averages
        self.rsi_loss = (0.0,) * len(RSI_PERIODS)
        self.kdj_k = 50.0
        self.kdj_d = 50.0
        self.tr_sum = 0.0  # sum of the first true ranges, until the ATR is seeded
        self.atr: float | None = None
        self.day = ""  # trade date of the intraday VWAP's sums
        self.day_amount = 0.0
        self.day_volume = 0

    # -- the two entry points ---------------------------------------------------

    def close(self, bar: dict[str, Any], intraday: bool = True) -> Values:
        """Fold the final ``bar`` (open/high/low/close/volume/amount/trade_date) in."""
        return self._step(bar, intraday, commit=True)

    def peek(self, bar: dict[str, Any], intraday: bool = True) -> Values:
        """The values ``bar`` would have if it closed now; the state is unchanged."""
        return self._step(bar, intraday, commit=False)

    # -- persistence ------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        for name in ("closes", "highs", "lows"):
            out[name] = list(out[name])
        return out

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_json())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndicatorState:
        state = cls()
        for name in cls.__slots__:
            if name in ("closes", "highs", "lows"):
                getattr(state, name).extend(data[name])
            elif isinstance(data[name], list):
                setattr(state, name, tuple(data[name]))
            else:
                setattr(state, name, data[name])
        return state

    # -- the arithmetic -----------------------------------------------------------

    def _step(self, bar: dict[str, Any], intraday: bool, commit: bool) -> Values:
        c: float = bar["close"]
        h: float = bar["high"]
        lo: float = bar["low"]
        n = self.bars + 1  # bars including this one
        closes = self.closes
        values: Values = {}

        # moving averages (TA_SMA) and the BOLL deviation (TA_BBANDS)
        new_sums = []
        boll_mid: float | None = None
        for i, period in enumerate(MA_PERIODS):
            total = self.ma_sum[i] + c
            if n >= period:
                mean = total / period
                values[_MA_NAMES[i]] = mean
                if period == BOLL_N:
                    boll_mid = mean
                total -= closes[-(period - 1)]
            else:
                values[_MA_NAMES[i]] = None
            new_sums.append(total)
        if boll_mid is not None:
            # two-pass over the window: a running sum of squares loses the
            # variance of a narrow range (E[x^2] - E[x]^2 cancels 9 digits at
            # 10 yuan) and TA-Lib's current releases do not
            squares = (c - boll_mid) * (c - boll_mid)
            for i in range(len(closes) - (BOLL_N - 1), len(closes)):
                d = closes[i] - boll_mid
                squares += d * d
            variance = squares / BOLL_N
            spread = (math.sqrt(variance) if variance >= TA_EPSILON else 0.0) * BOLL_K
            values["boll_mid"] = boll_mid
            values["boll_upper"] = boll_mid + spread
            values["boll_lower"] = boll_mid - spread
        else:
            values["boll_mid"] = values["boll_upper"] = values["boll_lower"] = None

        # EMA (TA_EMA: seeded by the SMA of the first n closes)
        new_ema: list[float | None] = []
        for i, period in enumerate(EMA_PERIODS):
            ema = _ema_step(self.ema[i], c, period, n, closes)
            values[_EMA_NAMES[i]] = ema
            new_ema.append(ema)

        # MACD (TA_MACD: both EMAs start at bar MACD_SLOW-1)
        fast = slow = signal = dif = None
        signal_sum = self.signal_sum
        if n >= MACD_SLOW:
            if self.macd_slow is None:
                fast = _mean_with(closes, c, MACD_FAST)
                slow = _mean_with(closes, c, MACD_SLOW)
            else:
                assert self.macd_fast is not None  # seeded together
                fast = (c - self.macd_fast) * _K[MACD_FAST] + self.macd_fast
                slow = (c - self.macd_slow) * _K[MACD_SLOW] + self.macd_slow
            dif = fast - slow
            difs = n - MACD_SLOW + 1  # DIF values including this one
            if self.macd_signal is not None:
                signal = (dif - self.macd_signal) * _K[MACD_SIGNAL] + self.macd_signal
            else:
                signal_sum += dif
                if difs == MACD_SIGNAL:
                    signal = signal_sum / MACD_SIGNAL
        if signal is not None and dif is not None:
            values["macd"], values["macd_signal"], values["macd_hist"] = dif, signal, dif - signal
        else:
            values["macd"] = values["macd_signal"] = values["macd_hist"] = None

        # RSI (TA_RSI, Wilder)
        new_gain, new_loss = list(self.rsi_gain), list(self.rsi_loss)
        if n > 1:
            change = c - self.prev_close
            for i, period in enumerate(RSI_PERIODS):
                gain, loss = self.rsi_gain[i], self.rsi_loss[i]
                if n - 1 <= period:  # still summing the first `period` changes
                    if change < 0:
                        loss -= change
                    else:
                        gain += change
                    if n - 1 == period:
                        gain /= period
                        loss /= period
                else:
                    gain *= period - 1
                    loss *= period - 1
                    if change < 0:
                        loss -= change
                    else:
                        gain += change
                    gain /= period
                    loss /= period
                new_gain[i], new_loss[i] = gain, loss
                if n - 1 >= period:
                    total = gain + loss
                    values[_RSI_NAMES[i]] = 100.0 * (gain / total) if _not_zero(total) else 0.0
                else:
                    values[_RSI_NAMES[i]] = None
        else:
            for name in _RSI_NAMES:
                values[name] = None

        # KDJ(9, 3, 3), terminal style
        hhv = max(h, *self.highs) if self.highs else h
        llv = min(lo, *self.lows) if self.lows else lo
        rng = hhv - llv
        rsv = (c - llv) / rng * 100.0 if rng > 0 else self.kdj_k
        k = (2.0 * self.kdj_k + rsv) / 3.0
        d = (2.0 * self.kdj_d + k) / 3.0
        values["kdj_k"], values["kdj_d"], values["kdj_j"] = k, d, 3.0 * k - 2.0 * d

        # VWAP
        volume: int = bar["volume"]
        amount: float = bar["amount"]
        day, day_amount, day_volume = self.day, self.day_amount, self.day_volume
        if not intraday or bar["trade_date"] != day:
            day, day_amount, day_volume = bar["trade_date"], 0.0, 0
        day_amount += amount
        day_volume += volume
        values["vwap"] = day_amount / day_volume if day_volume > 0 else None

        # ATR (TA_ATR)
        atr = self.atr
        tr_sum = self.tr_sum
        if n > 1:
            pc = self.prev_close
            tr = h - lo
            up = abs(pc - h)
            if up > tr:
                tr = up
            down = abs(lo - pc)
            if down > tr:
                tr = down
            if atr is not None:
                atr = (atr * (ATR_N - 1) + tr) / ATR_N
            else:
                tr_sum += tr
                if n - 1 == ATR_N:
                    atr = tr_sum / ATR_N
        values[_ATR_NAME] = atr

        if commit:
            self.bars = n
            closes.append(c)
            self.highs.append(h)
            self.lows.append(lo)
            self.prev_close = c
            self.ma_sum = tuple(new_sums)
            self.ema = tuple(new_ema)
            self.macd_fast, self.macd_slow = fast, slow
            self.signal_sum, self.macd_signal = signal_sum, signal
            self.rsi_gain, self.rsi_loss = tuple(new_gain), tuple(new_loss)
            self.kdj_k, self.kdj_d = k, d
            self.tr_sum, self.atr = tr_sum, atr
            self.day, self.day_amount, self.day_volume = day, day_amount, day_volume
        return values


def _compiled_state() -> type[IndicatorState] | None:
    from schemas.native import native_module

    module, _ = native_module()
    # the same methods and JSON, checked bit for bit against this class by the tests
    return None if module is None else cast(type[IndicatorState], module.IndicatorState)


#: the state the bar series keep (see the module docstring)
SeriesState: Final[type[IndicatorState]] = _compiled_state() or IndicatorState


def _not_zero(v: float) -> bool:
    return not (-TA_EPSILON < v < TA_EPSILON)


def _mean_with(closes: deque[float], c: float, period: int) -> float:
    """SMA of the last ``period - 1`` closes and ``c``, summed oldest first (TA-Lib's seed)."""
    total = 0.0
    for x in list(closes)[len(closes) - (period - 1) :]:
        total += x
    return (total + c) / period


def _ema_step(
    prev: float | None, c: float, period: int, n: int, closes: deque[float]
) -> float | None:
    if prev is not None:
        return (c - prev) * _K[period] + prev
    if n == period:
        return _mean_with(closes, c, period)
    return None
