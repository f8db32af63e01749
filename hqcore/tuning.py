"""Process-wide memory tuning for the hot services (stream workers, gateway).

:func:`tune_malloc` keeps glibc's allocator from handing memory back to the
kernel after every batch. A stream worker allocates and frees megabytes per
batch (JSON of each quote, Avro payloads, ~1 MB Redis script calls); with
glibc's defaults the freed heap top is trimmed and blocks above the dynamic
mmap threshold are unmapped, so the next batch page-faults all of it in
again. Measured on the 2-core machine: ``orjson.dumps`` of a batch of
quotes took 5.4 µs per quote with the defaults and 1.3-1.6 µs with these
settings (same data, same process). The cost is a resident heap that stays
at its high-water mark (tens of MB for a worker).

:func:`freeze_survivors` keeps the cyclic garbage collector off a stream
worker's long-lived state; :func:`collect_frozen` reclaims what it left.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable
from typing import Final

logger = logging.getLogger(__name__)

# mallopt(3) parameters
M_TRIM_THRESHOLD: Final = -1
M_TOP_PAD: Final = -2
M_MMAP_THRESHOLD: Final = -3

TRIM_THRESHOLD_BYTES: Final = 256 << 20
TOP_PAD_BYTES: Final = 64 << 20
MMAP_THRESHOLD_BYTES: Final = 32 << 20


def tune_malloc() -> bool:
    """Apply the settings above through glibc's ``mallopt``; False where there is none."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        logger.info("no mallopt here (not glibc): allocator left as it is")
        return False
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
            (M_TOP_PAD, TOP_PAD_BYTES),
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        )
    )
    if not ok:
        logger.warning("mallopt refused a setting: allocator partly tuned")
    return ok


def freeze_survivors(gen0_threshold: int) -> None:
    """Collect young objects only: every object that survives a collection is frozen.

    A stream worker's state (every stock's quote, candles, bar series and
    indicator windows) grows all day, and CPython walks every tracked object
    of a generation it collects: with survivors left in the older
    generations, a worker paused 55-121 ms in each generation-1 collection
    (every 20 young ones) and would pause for its whole heap in each
    generation-2 one (docs/benchmarks.md, "The steady rate's tail"). Frozen
    objects are never walked, so a collection costs what was allocated since
    the last one (about ``gen0_threshold`` objects and what they refer to).

    The price: cyclic garbage that was alive at a collection is reclaimed
    only by :func:`collect_frozen` (short-lived cycles die young and are
    collected as before).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, 20, 100)
    if _freeze_after_collection not in gc.callbacks:
        gc.callbacks.append(_freeze_after_collection)


def _freeze_after_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "stop":
        gc.freeze()


def collect_frozen() -> tuple[int, int, float]:
    """One full collection of the frozen heap: ``(objects walked, garbage found,
    seconds)``. It pauses the process for all of them: call it when idle."""
    walked = gc.get_freeze_count()
    started = time.perf_counter()
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    return walked, found, time.perf_counter() - started


def young_collections() -> int:
    """How many generation-0 collections this process has run (cheap, unlike
    ``gc.get_freeze_count()``, which walks the whole frozen heap)."""
    return int(gc.get_stats()[0]["collections"])


class FrozenHeap:
    """When to reclaim the cyclic garbage :func:`freeze_survivors` froze.

    :meth:`check` (called every few seconds with a count of the work done so
    far) collects once the work has not moved for ``idle_s`` (the lunch break,
    the night) and a collection froze something since the last full one; and,
    busy or not, ``max_interval_s`` after the last (a feed that never pauses).
    A worker makes almost no such garbage: at 1,667 ticks/s, collections every
    5 s found 0 garbage objects each, walking its ~320k frozen objects in
    150-190 ms (docs/benchmarks.md, "The steady rate's tail"), a pause to take
    only while idle. Each collection is logged with its pause.
    """

    def __init__(
        self,
        idle_s: float,
        *,
        max_interval_s: float = 6 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], tuple[int, int, float]] = collect_frozen,
        collections: Callable[[], int] = young_collections,
    ) -> None:
        self.idle_s = idle_s
        self.max_interval_s = max_interval_s
        self._clock, self._collect, self._collections = clock, collect, collections
        self._last_at = clock()  # of the last full collection
        self._frozen_at = collections()  # young collections (each freezes) by then
        self._work: int | None = None
        self._work_since = self._last_at

    def check(self, work: int) -> str | None:
        """Collect if due (see the class); returns why it collected, or None."""
        now = self._clock()
        if work != self._work:
            self._work, self._work_since = work, now
        if now - self._last_at >= self.max_interval_s:
            why = "due"
        elif now - self._work_since >= self.idle_s and self._collections() > self._frozen_at:
            why = "idle"
        else:
            return None
        walked, found, seconds = self._collect()
        self._last_at, self._frozen_at = self._clock(), self._collections()
        logger.info(
            "full garbage collection (%s): %d frozen objects walked in %.0f ms, %d were garbage",
            why, walked, seconds * 1000, found,
        )  # fmt: skip
        return why


class YoungCollections:
    """Young collections between batches, not inside them.

    With ``gen0_threshold`` as the automatic threshold, a collection comes
    wherever an allocation crosses it: inside a burst's batches, where it
    walks every object of the batches in flight (25-97 ms, once a burst, on
    the burst's own path). Here the automatic threshold is ``backstop`` times
    higher and :meth:`between_batches` collects once ``gen0_threshold``
    objects outlived the batches, when the worker has caught up (nothing
    fetched waits, and no batch waits for the rest of its work: a burst's
    parsed batches are young objects, and its next fetch may be a few ms
    away; docs/benchmarks.md, "Young collections after the burst, and the
    client's heap frozen"), or at ``4 x gen0_threshold`` whatever waits (a
    backlog).
    """

    def __init__(
        self,
        gen0_threshold: int,
        *,
        backstop: int = 8,
        count: Callable[[], int] = lambda: gc.get_count()[0],
        collect: Callable[[int], int] = gc.collect,
    ) -> None:
        self.threshold = gen0_threshold
        self._count, self._collect = count, collect
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(gen0_threshold * backstop, older, oldest)

    def between_batches(self, caught_up: bool) -> bool:
        """Collect the young objects if due (see the class); True if it did."""
        young = self._count()
        if young < self.threshold or not (caught_up or young >= 4 * self.threshold):
            return False
        self._collect(0)
        return True
