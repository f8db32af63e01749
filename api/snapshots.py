"""Coalesced snapshot reads: every subscribe of one event-loop tick shares one Redis pipeline.

When thousands of clients connect at once each ``subscribe_stock`` needs the
stored quote of its code. One pipeline per request costs a pooled connection
and a round trip each; under a connection storm the pool runs dry and
subscribes fail with ``unavailable``. :class:`SnapshotReads` gathers the codes
asked for during one loop iteration and reads them in one pipeline, then hands
each caller its own rows. A large request (a whole market) is read on its own.

This module only reads (through :class:`api.store.Store`); it never decides
what a snapshot contains (see :mod:`api.ws`).
"""

from __future__ import annotations

import asyncio
import logging

from api.session import QuoteEvent
from api.store import Store

logger = logging.getLogger(__name__)

MAX_BATCH_CODES = 1000

Rows = list[QuoteEvent | None]


class SnapshotReads:
    """Batches :meth:`Store.quote_events` calls made in the same loop iteration."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[tuple[list[str], asyncio.Future[Rows]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.pipelines = 0

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
