"""Per-connection and per-key limits: a request token bucket and fair replay slots.

:class:`TokenBucket` meters one WebSocket connection's requests (each costs
tokens by what it makes the gateway do; see :data:`api.ws.REQUEST_COST`).
:class:`FairSlots` shares the few replay slots between API keys: a key waits
for a slot of its own before it may take one of the global ones, so one key's
clients can never hold every slot. This module only counts; it never reads a
socket, Redis or Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; :meth:`take` spends them."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; False (nothing spent) otherwise."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True


class FairSlots:
    """``total`` slots shared by keys, at most ``per_key`` of them held by one key."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = min(per_key, total)
        self._global = asyncio.Semaphore(total)
        self._keys: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}
        self.running: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Hold one slot for ``key``: first a slot of the key's own, then a global one."""
        own = self._keys.get(key)
        if own is None:
            own = self._keys[key] = asyncio.Semaphore(self.per_key)
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with own, self._global:
                self.running[key] = self.running.get(key, 0) + 1
                try:
                    yield
                finally:
                    self.running[key] -= 1
                    if not self.running[key]:
                        del self.running[key]
        finally:
            self._users[key] -= 1
            if not self._users[key]:  # nobody holds or waits: forget the key
                del self._users[key]
                del self._keys[key]
