"""Every timeframe's bars and indicators of a worker's stocks, from their closed 1-minute candles.

:class:`TimeframeBars` keeps one :class:`schemas.bar_series.BarSeries` per
(stock, timeframe) and is fed the 1-minute candles the
:class:`streams.candles.CandleBuilder` closes: a closed candle gets its final
indicators, and the 5/15/30/60-minute and daily bars it completes close with
theirs. That is O(1) work per closed minute per timeframe and nothing per
tick: the open bars are shown by whoever reads them, from the stored series
and the open 1-minute candle (``BarSeries.view``).

A bar whose last minute had no candle (a gap: no tick of the stock in it) is
closed by :meth:`TimeframeBars.flush` once the stock's clock has passed its
end, like the 1-minute candles. The series of the stocks that changed are
handed out by :meth:`TimeframeBars.take_changed` for Redis (``hq:bars:{code}``),
from where a worker that takes a stock over restores them
(:meth:`TimeframeBars.restore`) before it replays the stock's recent ticks:
a minute the stored series already holds is not folded again, so values
never jump and never count a minute twice.

Kafka (``hq.bars.state``, compacted: what rebuilds a lost Redis) gets a
stock's series less often: a checkpoint (:meth:`TimeframeBars.take_checkpoints`)
every :data:`CHECKPOINT_EVERY_MIN` minutes, staggered by code so each
minute carries a fifth of the stocks, and at once when its timer closed a
bar (a minute that had no candle) or a daily bar. Anything newer than a
checkpoint is a closed 1-minute candle on ``hq.candles.1m``, which the
rebuild folds in as :meth:`add_minute_records` does here
(streams/state_rebuild.py): a series is a function of its checkpoint and the
minutes after it (of the day's minutes, for a stock with no checkpoint yet:
its series began that day). ~3.5-5 KB of JSON per stock; every minute for all 5,000
stocks it was ~93 % of the bytes the workers produced at a minute's end.

In memory only; never does I/O, never reads the clock.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable, Mapping

from schemas import redis_keys as rk
from schemas.bar_series import Bar, BarSeries
from schemas.timeframes import CLOSE_GRACE_MS, TIMEFRAMES, Timeframe, candle_end
from streams.candles import Candle

logger = logging.getLogger(__name__)

#: minutes between two ``hq.bars.state`` checkpoints of a stock (see the module docstring)
CHECKPOINT_EVERY_MIN = 5


def checkpoint_slot(code: str) -> int:
    """The minutes (modulo :data:`CHECKPOINT_EVERY_MIN`) of a stock's ``hq.bars.state``."""
    return zlib.crc32(code.encode()) % CHECKPOINT_EVERY_MIN


class TimeframeBars:
    """The bar series of every stock this worker owns; see the module docstring."""

    def __init__(
        self, timeframes: tuple[Timeframe, ...] = TIMEFRAMES, close_grace_ms: int = CLOSE_GRACE_MS
    ) -> None:
        self.timeframes = timeframes
        self.close_grace_ms = close_grace_ms
        self._series: dict[str, dict[Timeframe, BarSeries]] = {}
        self._open_by_end: dict[int, set[tuple[str, Timeframe]]] = {}
        self._end_of: dict[tuple[str, Timeframe], int] = {}
        self._changed: set[str] = set()
        self._unpublished: set[str] = set()  # changed since their last checkpoint
        self._publish_now: set[str] = set()  # a checkpoint that must not wait its slot
        self._slot: dict[str, int] = {}  # code -> its checkpoint minute (mod the period)
        self._checked_minute = -1

    def series_of(self, code: str) -> dict[Timeframe, BarSeries]:
        found = self._series.get(code)
        if found is None:
            found = self._series[code] = {tf: BarSeries(tf) for tf in self.timeframes}
        return found

    def add_minutes(self, candles: Iterable[Candle]) -> list[Bar]:
        """Fold closed 1-minute candles in; returns the closed bars of every timeframe.

        A 1-minute candle comes back as a ``1m`` bar carrying its indicators.
        """
        return self.add_minute_records(candle.as_record() for candle in candles)

    def add_minute_records(self, minutes: Iterable[Bar]) -> list[Bar]:
        """:meth:`add_minutes` for 1-minute bars given as Avro records (a backfill's rows)."""
        closed: list[Bar] = []
        for minute in minutes:
            code = minute["code"]
            for tf, series in self.series_of(code).items():
                partial = series.partial
                done = series.add_minute(minute)
                if done:
                    closed += done
                    if tf == "1d":
                        self._publish_now.add(code)  # the rebuild reads one day of minutes
                if tf != "1m" and series.partial is not partial:
                    # (an open bar that goes on is the same dict, ending when it did)
                    self._index(code, tf, series)
            self._changed.add(code)
            self._unpublished.add(code)
        return closed

    def flush(
        self, now_ms: int, clock_of: Callable[[str], int] | None = None, limit: int | None = None
    ) -> list[Bar]:
        """Close the bars whose time is over at ``now_ms`` (and at their stock's clock).

        ``limit``: close at most that many; the rest stay open for the next call.
        """
        closed: list[Bar] = []
        for end in sorted(e for e in self._open_by_end if e <= now_ms):
            for code, tf in sorted(self._open_by_end[end]):
                if clock_of is None or clock_of(code) >= end:
                    series = self._series[code][tf]
                    closed.append(series.close_partial())
                    self._index(code, tf, series)
                    self._changed.add(code)
                    self._unpublished.add(code)
                    self._publish_now.add(code)  # no minute on Kafka closes it again
                    if len(closed) == limit:
                        return closed
        return closed

    def take_changed(self) -> dict[str, dict[str, bytes]]:
        """What changed of every stock's series since the last call, for ``hq:bars:{code}``.

        Per stock, field -> JSON (:meth:`BarSeries.take_stored`): a series'
        whole form under its timeframe when its indicator state changed, else
        its open bar's part under ``<tf>:open`` (a higher timeframe's minute
        within its bar: half the bytes of a minute's series).
        """
        out: dict[str, dict[str, bytes]] = {}
        open_field = rk.bars_open_field
        for code in self._changed:
            series = self._series.get(code)
            if series is None:
                continue
            fields = out[code] = {}
            for tf, s in series.items():
                taken = s.take_stored()
                if taken is not None:
                    fields[tf if taken[0] else open_field(tf)] = taken[1]
        self._changed = set()
        return out

    def take_checkpoints(
        self, minute: int, stored: Mapping[str, Mapping[str, bytes]] | None = None
    ) -> dict[str, dict[str, bytes]]:
        """The stored form of the series due for ``hq.bars.state`` at exchange ``minute``.

        ``minute``: the worker's exchange clock in minutes since the epoch;
        ``stored``: what :meth:`take_changed` just returned (its whole forms
        reused). Due are the stocks changed now whose slot is ``minute``, so
        a minute's checkpoints go out with the minute's closes, not all at
        its start; once per minute, the changed stocks of the previous
        minute's slot that did not change in it (no trade); and those that
        must not wait (see the module docstring).
        """
        stored = stored or {}
        unpublished, slot_of = self._unpublished, self._slot_of
        now = minute % CHECKPOINT_EVERY_MIN
        due = self._publish_now & unpublished
        due.update(code for code in stored if code in unpublished and slot_of(code) == now)
        if minute != self._checked_minute:
            self._checked_minute = minute
            before = (minute - 1) % CHECKPOINT_EVERY_MIN
            due.update(c for c in unpublished if slot_of(c) == before and c not in stored)
        self._publish_now -= due
        unpublished -= due
        out: dict[str, dict[str, bytes]] = {}
        for code in due:
            series = self._series.get(code)
            if series is not None:
                found = stored.get(code, {})
                out[code] = {tf: found.get(tf) or s.dumps() for tf, s in series.items()}
        return out

    def _slot_of(self, code: str) -> int:
        slot = self._slot.get(code)
        if slot is None:
            slot = self._slot[code] = checkpoint_slot(code)
        return slot

    def restore(self, code: str, stored: Mapping[str, bytes]) -> None:
        """Take a stock's series from their stored form (``hq:bars:{code}``), if any."""
        series = self.series_of(code)
        if any(stored.get(tf) for tf in self.timeframes):
            self._unpublished.add(code)  # Kafka's checkpoint of it may lag the stored one
        for tf in self.timeframes:
            data = stored.get(tf)
            if data is None:
                continue
            try:
                series[tf] = BarSeries.from_stored(data, stored.get(rk.bars_open_field(tf)))
            except Exception as exc:  # a foreign or older shape: start that series afresh
                logger.error("%s %s: stored bars not restored: %r", code, tf, exc)
                continue
            if tf != "1m":
                self._index(code, tf, series[tf])

    def forget(self, codes: Iterable[str]) -> None:
        """Drop the series of ``codes`` (their partitions moved to another worker)."""
        for code in codes:
            series = self._series.pop(code, None)
            self._changed.discard(code)
            self._unpublished.discard(code)
            self._publish_now.discard(code)
            for tf in series or ():
                self._unindex(code, tf)

    def _index(self, code: str, tf: Timeframe, series: BarSeries) -> None:
        last = series.last_minute()
        end = None if last is None else candle_end(last, self.close_grace_ms)
        if end is not None and self._end_of.get((code, tf)) == end:
            return  # its open bar's end is indexed already (most minutes: the bar goes on)
        self._unindex(code, tf)
        if end is None:
            return
        self._end_of[(code, tf)] = end
        self._open_by_end.setdefault(end, set()).add((code, tf))

    def _unindex(self, code: str, tf: Timeframe) -> None:
        end = self._end_of.pop((code, tf), None)
        if end is None:
            return
        keys = self._open_by_end[end]
        keys.discard((code, tf))
        if not keys:
            del self._open_by_end[end]
