"""The stream worker's garbage-collector policy: survivors frozen, their garbage reclaimed
when idle or when the frozen heap has doubled."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from hqcore.tuning import FrozenHeap, YoungCollections, collect_frozen, freeze_survivors


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
        self.young = 0  # young collections so far
        self.collections = 0  # full ones

    def collect(self) -> tuple[int, int, float]:
        self.collections += 1
        self.young += 1  # (a full collection counts as a young one too)
        return 300_000, 0, 0.15

    def keeper(self, **kwargs: float) -> FrozenHeap:
        return FrozenHeap(
            30.0, clock=lambda: self.now, collect=self.collect, collections=lambda: self.young,
            **kwargs,
        )  # fmt: skip


def test_an_idle_worker_collects_once_something_was_frozen_since_the_last() -> None:
    heap = FakeHeap()
    keeper = heap.keeper()
    for second in range(0, 60, 5):  # busy: the work count moves
        heap.now, heap.young = second, heap.young + 1
        assert keeper.check(work=second) is None
    heap.now += 29
    assert keeper.check(work=55) is None  # quiet for 29 s only
    heap.now += 1
    assert keeper.check(work=55) == "idle"
    heap.now += 60
    assert keeper.check(work=55) is None  # still idle, nothing frozen since
    heap.young += 1
    assert keeper.check(work=55) == "idle"
    assert heap.collections == 2


def test_a_worker_that_is_never_idle_collects_every_max_interval() -> None:
    heap = FakeHeap()
    keeper = heap.keeper(max_interval_s=3600.0)
    for second in range(0, 3600, 5):
        heap.now, heap.young = second, heap.young + 1
        assert keeper.check(work=second) is None
    heap.now = 3600.0
    assert keeper.check(work=3600) == "due"
    heap.now += 5
    assert keeper.check(work=3605) is None  # an hour from this one
    assert heap.collections == 1


@pytest.mark.usefixtures("gc_restored")
def test_young_objects_are_collected_between_batches_once_caught_up() -> None:
    young = [0]
    collected: list[int] = []
    collections = YoungCollections(
        1000, count=lambda: young[0], collect=lambda generation: collected.append(generation) or 0
    )
    assert gc.get_threshold()[0] == 8000  # the automatic one: a backstop
    young[0] = 999
    assert not collections.between_batches(caught_up=True)
    young[0] = 1000
    assert not collections.between_batches(caught_up=False)  # a burst's batches wait
    assert collections.between_batches(caught_up=True)
    young[0] = 4000
    assert collections.between_batches(caught_up=False)  # a backlog: not forever
    assert collected == [0, 0]
