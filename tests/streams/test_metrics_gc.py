"""The stream worker's garbage-collector pauses, as a metric."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from streams.metrics import watch_gc


def timed(generation: int) -> float:
    labels = {"generation": str(generation)}
    return REGISTRY.get_sample_value("hq_streams_gc_pause_seconds_count", labels) or 0.0


def test_each_collection_is_timed_once_even_if_watched_twice() -> None:
    watch_gc()
    watch_gc()  # a second app in the process
    before = timed(1)
    gc.collect(1)
    assert timed(1) == before + 1
