"""Whether the stream workers are rebuilding the Redis state, for REST and the status.

While workers rebuild a Redis that lost its data (streams/state_rebuild.py),
they keep a live entry in ``hq:state:rebuilding``; REST would serve a
half-restored market meanwhile. :class:`RebuildWatch` reads that hash at most
every :data:`CACHE_S` (one HVALS, shared by every request) and
:meth:`RebuildWatch.refuse_while_rebuilding` makes the REST routes answer 503
``rebuilding`` with a ``Retry-After`` estimated from the progress. The
status shows the progress; the gateway's gauge too. Never writes to Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from api import metrics
from api.errors import Rebuilding
from api.models import RebuildState
from api.store import Store

#: seconds a reading of the rebuild state is reused
CACHE_S = 0.5
#: Retry-After bounds (seconds), and the answer before any progress was made
RETRY_MIN_S, RETRY_MAX_S, RETRY_UNKNOWN_S = 1, 30, 5


def retry_after_s(state: RebuildState, now_ms: int) -> int:
    """The remaining time at the rebuild's pace so far, bounded."""
    if state.progress < 0.01:
        return RETRY_UNKNOWN_S
    elapsed_s = max(0.0, (now_ms - state.started) / 1000)
    remaining = elapsed_s * (1 - state.progress) / state.progress
    return int(min(RETRY_MAX_S, max(RETRY_MIN_S, round(remaining))))


class RebuildWatch:
    """The rebuild state of the Redis the REST routes read; see the module docstring."""

    def __init__(
        self,
        store: Store,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.wall_ms = wall_ms
        self.monotonic = monotonic
        self._read_at = float("-inf")
        self._state: RebuildState | None = None

    async def state(self) -> RebuildState | None:
        now = self.monotonic()
        if now - self._read_at >= CACHE_S:
            self._state = await self.store.rebuild_state(self.wall_ms())
            self._read_at = now
            metrics.REBUILD_PROGRESS.set(1.0 if self._state is None else self._state.progress)
        return self._state

    async def refuse_while_rebuilding(self) -> None:
        """Raise :class:`Rebuilding` (503, Retry-After) while a rebuild runs."""
        state = await self.state()
        if state is not None:
            raise Rebuilding(
                f"the Redis state is being rebuilt from Kafka ({state.progress:.0%} done)",
                retry_after_s(state, self.wall_ms()),
            )
