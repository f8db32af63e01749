"""Coalesced snapshot reads: every subscribe of one event-loop tick shares one Redis pipeline.

When thousands of clients connect at once each ``subscribe_stock`` needs the
stored quote of its code. One pipeline per request costs a pooled connection
and a round trip each; under a connection storm the pool runs dry and
subscribes fail with ``unavailable``. :class:`SnapshotReads` gathers the codes
asked for during one loop iteration and reads them in one pipeline, then hands
each caller its own rows. A large request (a whole market) is read on its own.

Market and ALL snapshots (thousands of codes, megabytes) are read from Redis
at most once per ``max_age_s`` whatever the number of subscribers, one read
at a time (:meth:`SnapshotReads.market_events`), in pipelines of
:data:`MARKET_READ_CHUNK` codes: reading and decoding 5,000 quotes in one
pipeline held the event loop for up to 160 ms of CPU in one step (every
client waited), a chunk holds it a few milliseconds. A cached read of any age
never loses an update, because the caller merges it with the hub's own latest
quotes (every quote routed since the gateway started: whatever reached Redis
after the read is among them or still on its way to the hub), see :mod:`api.ws`.

This module only reads (through :class:`api.store.Store`); it never decides
what a snapshot contains (see :mod:`api.ws`).
"""

from __future__ import annotations

import asyncio

from api.store import Store
from api.ws_session import QuoteEvent
from schemas.exchange import MarketOrAll

MAX_BATCH_CODES = 1000
MARKET_READ_CHUNK = 250  # codes per pipeline of a market read: one loop step each

Rows = list[QuoteEvent | None]


class SnapshotReads:
    """Batches :meth:`Store.quote_events` calls made in the same loop iteration."""

    def __init__(self, store: Store, max_age_s: float = 0.01) -> None:
        self.store = store
        self.max_age_s = max_age_s
        self._waiting: list[tuple[list[str], asyncio.Future[Rows]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._markets: dict[str, tuple[float, list[QuoteEvent]]] = {}
        self._market_reads: dict[str, asyncio.Future[list[QuoteEvent]]] = {}
        self.pipelines = 0
        self.market_reads = 0

    async def market_events(self, market: MarketOrAll) -> list[QuoteEvent]:
        """The stored quotes of a market (or ALL), read at most once per ``max_age_s``.

        Callers arriving while a read is under way share it. The list is shared
        too: never modify it.
        """
        loop = asyncio.get_running_loop()
        cached = self._markets.get(market)
        if cached is not None and loop.time() - cached[0] < self.max_age_s:
            return cached[1]
        pending = self._market_reads.get(market)
        if pending is None:
            pending = loop.create_future()
            self._market_reads[market] = pending
            task = loop.create_task(self._read_market(market, pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(pending)

    async def _read_market(
        self, market: MarketOrAll, fut: asyncio.Future[list[QuoteEvent]]
    ) -> None:
        try:
            started = asyncio.get_running_loop().time()
            codes = await self.store.market_codes(market)
            events: list[QuoteEvent] = []
            for start in range(0, len(codes), MARKET_READ_CHUNK):
                rows = await self.store.quote_events(codes[start : start + MARKET_READ_CHUNK])
                events += [ev for ev in rows if ev is not None]
            self.market_reads += 1
            self._markets[market] = (started, events)
            fut.set_result(events)
        except Exception as exc:  # RedisError: every waiting caller answers "unavailable"
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waits
        finally:
            del self._market_reads[market]

    async def quote_events(self, codes: list[str]) -> Rows:
        """The stored latest quote of each code (None when absent), like the store's."""
        if not codes:
            return []
        if len(codes) >= MAX_BATCH_CODES:
            self.pipelines += 1
            return await self.store.quote_events(codes)
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._fire)
        fut: asyncio.Future[Rows] = loop.create_future()
        self._waiting.append((codes, fut))
        return await fut

    def _fire(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._read(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, batch: list[tuple[list[str], asyncio.Future[Rows]]]) -> None:
        codes = list(dict.fromkeys(code for wanted, _ in batch for code in wanted))
        self.pipelines += 1
        try:
            rows = dict(zip(codes, await self.store.quote_events(codes), strict=True))
        except Exception as exc:  # RedisError: every caller answers "unavailable"
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for wanted, fut in batch:
            if not fut.done():  # a caller that went away cancelled its future
                fut.set_result([rows[code] for code in wanted])
