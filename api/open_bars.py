"""The open bar of every (stock, timeframe) a WebSocket client watches, pushed as it changes.

The workers compute nothing per tick for open bars (docs/indicators.md):
Redis holds each stock's open 1-minute candle and, per timeframe, its bar
series. :class:`OpenBars` does for the push what REST does for a request.
When the hub routes a quote of a stock some client watches with
``subscribe_candles``, the stock is marked; at most once per ``interval_s``
one pipelined Redis read takes, for every marked stock, its stored quote's
``ts``, the 1-minute candle of the routed quote's minute and the series of
every timeframe watched, and evaluates the open bar(s) with
:func:`api.bars.open_bars`: the values REST returns at that moment. The hub
offers them to the watching sessions (:meth:`api.hub.Hub.offer_open_bars`),
conflated per (stock, bar start) like quotes.

Redis behind Kafka: the workers write Redis and produce to Kafka at the same
time, so a quote can be routed before Redis has it. A worker's pipeline
writes a batch's candles and series before its quotes (streams/redis_sink.py),
so once the stored quote's ``ts`` has reached the routed one, the candle and
series read after it in the same pipeline include that quote. Before that
the stock stays marked and is read again the next round (at most
``max_behind_rounds`` times; then what Redis has is pushed).

Closed bars, with their final values, come from Kafka (``hq.candles.<tf>``)
through :meth:`api.hub.Hub.dispatch`; the hub never offers an open bar for a
bar start it has routed closed.

This module reads Redis and never writes it; it never touches a socket.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson
from redis.exceptions import RedisError

from api import metrics
from api.bars import open_bars
from api.hub import Hub
from api.store import Store
from api.ws_session import QuoteEvent
from schemas.timeframes import Timeframe, candle_minute

logger = logging.getLogger(__name__)

#: stocks read per Redis pipeline
READ_CHUNK = 500


@dataclass(slots=True, frozen=True)
class _Read:
    code: str
    routed: QuoteEvent  # the newest quote the hub routed
    tfs: list[Timeframe]  # the timeframes its subscribers watch
    behind: int  # rounds it already waited for Redis


class OpenBars:
    """Reads and pushes the open bars of the stocks the hub marks; see the module docstring."""

    def __init__(
        self, hub: Hub, store: Store, interval_s: float, max_behind_rounds: int = 20
    ) -> None:
        self.hub = hub
        self.store = store
        self.interval_s = interval_s
        self.max_behind_rounds = max_behind_rounds
        self._marked: dict[str, int] = {}  # code -> rounds it waited for Redis
        self._wake = asyncio.Event()
        hub.on_watched_quote = self.mark

    def mark(self, code: str) -> None:
        """``code`` got a quote (or a subscriber): read its open bars at the next round."""
        self._marked.setdefault(code, 0)
        self._wake.set()

    async def run(self) -> None:
        """Read rounds, at most one per ``interval_s``, while anything is marked."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.refresh()
            except RedisError as exc:
                logger.warning("open bars not read (Redis): %s", type(exc).__name__)
                self._wake.set()  # the marks were kept: try again after the interval
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> None:
        """One round: read every marked stock's open bars and offer them."""
        reads = self._take_marked()
        for start in range(0, len(reads), READ_CHUNK):
            chunk = reads[start : start + READ_CHUNK]
            try:
                await self._read(chunk)
            except RedisError:
                for read in reads[start:]:
                    self._marked.setdefault(read.code, read.behind)
                raise

    def _take_marked(self) -> list[_Read]:
        marked, self._marked = self._marked, {}
        reads: list[_Read] = []
        for code, behind in marked.items():
            subs = self.hub.candle_subs.get(code)
            routed = self.hub.latest.get(code)
            if not subs or routed is None:
                continue
            tfs = sorted({stream.tf for s in subs if (stream := s.candles.get(code)) is not None})
            reads.append(_Read(code, routed, tfs, behind))  # type: ignore[arg-type]
        return reads

    async def _read(self, reads: list[_Read]) -> None:
        wanted = [
            (r.code, str(orjson.loads(r.routed.raw)["trade_date"]), candle_minute(r.routed.ts),
             r.tfs)
            for r in reads
        ]  # fmt: skip
        found = await self.store.open_bar_parts(wanted)
        metrics.OPEN_BAR_READS.inc(len(reads))
        for read, (stored_ts, candle, series) in zip(reads, found, strict=True):
            if (stored_ts is None or stored_ts < read.routed.ts) and (
                read.behind < self.max_behind_rounds
            ):
                metrics.OPEN_BAR_BEHIND.inc()
                self._marked[read.code] = max(self._marked.get(read.code, 0), read.behind + 1)
                self._wake.set()
                continue
            minute = None if candle is None else orjson.loads(candle)
            if minute is not None and minute["closed"]:
                minute = None  # its minute is over: the series holds it
            for tf, stored in zip(read.tfs, series, strict=True):
                self.hub.offer_open_bars(read.code, tf, open_bars(tf, stored, minute))
