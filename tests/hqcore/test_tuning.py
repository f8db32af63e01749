"""The stream worker's garbage-collector policy: survivors frozen, their garbage reclaimed
when idle or when the frozen heap has doubled."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from hqcore.tuning import FrozenHeap, collect_frozen, freeze_survivors


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


@pytest.fixture
def gc_restored() -> Iterator[None]:
    threshold, callbacks = gc.get_threshold(), list(gc.callbacks)
    try:
        yield
    finally:
        gc.callbacks[:] = callbacks
        gc.set_threshold(*threshold)
        gc.unfreeze()


@pytest.mark.usefixtures("gc_restored")
def test_a_collection_freezes_its_survivors_and_still_takes_young_cycles() -> None:
    freeze_survivors(1000)
    frozen_before = gc.get_freeze_count()
    kept = [Node() for _ in range(5000)]  # outlive several young collections
    gc.collect(0)  # (no collection comes while the cycle is made)
    young = cycle()[1]  # garbage before any collection saw it
    gc.collect(0)
    assert young() is None
    assert gc.get_freeze_count() >= frozen_before + len(kept)
    assert gc.get_count()[0] < 1000  # the threshold is in force


@pytest.mark.usefixtures("gc_restored")
def test_garbage_frozen_alive_waits_for_collect_frozen() -> None:
    freeze_survivors(1000)
    node, ref = cycle()
    gc.collect(0)  # alive now: frozen
    del node
    for generation in (0, 1, 2):
        gc.collect(generation)
    assert ref() is not None  # no collection walks the frozen heap
    walked, found, seconds = collect_frozen()
    assert ref() is None
    assert found >= 2 and walked >= 2 and seconds >= 0


class FakeHeap:
    def __init__(self) -> None:
        self.now = 0.0
        self.frozen = 100_000
        self.collections = 0

    def collect(self) -> tuple[int, int, float]:
        self.collections += 1
        walked, self.frozen = self.frozen, self.frozen - 1_000
        return walked, 1_000, 0.25

    def keeper(self, **kwargs: int) -> FrozenHeap:
        return FrozenHeap(
            30.0,
            clock=lambda: self.now,
            collect=self.collect,
            frozen=lambda: self.frozen,
            **kwargs,
        )


def test_an_idle_worker_collects_once_its_frozen_heap_grew() -> None:
    heap = FakeHeap()
    keeper = heap.keeper()
    for second in range(0, 60, 5):  # busy: the work count moves
        heap.now, heap.frozen = second, heap.frozen + 5_000
        assert keeper.check(work=second) is None
    heap.now += 29
    assert keeper.check(work=55) is None  # quiet for 29 s only
    heap.now += 1
    assert keeper.check(work=55) == "idle"
    assert keeper.after_last == heap.frozen
    heap.now += 60
    assert keeper.check(work=55) is None  # still idle, nothing new to walk
    assert heap.collections == 1


def test_a_busy_worker_collects_once_its_frozen_heap_doubled() -> None:
    heap = FakeHeap()
    keeper = heap.keeper(min_objects=150_000)
    heap.frozen = 149_999
    assert keeper.check(work=1) is None  # not doubled (100,000 at the start)
    heap.frozen = 199_999
    assert keeper.check(work=2) is None  # min_objects passed, not doubled
    heap.frozen = 200_000
    assert keeper.check(work=3) == "grown"
    assert keeper.after_last == 199_000
    heap.frozen = 300_000
    assert keeper.check(work=4) is None  # the bound moved with the heap
