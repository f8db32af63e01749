"""hqstream bench e2e: the worst second, where a short stall shows."""

from __future__ import annotations

import math

from hqstream.bench.e2e import Latencies


def test_the_worst_second_is_the_one_with_the_highest_p99() -> None:
    got = Latencies()
    for sec in range(60):
        stalled = sec == 41
        for i in range(200):
            got.total.append(300.0 + i if stalled and i >= 100 else 20.0 + i % 7)
            got.stage.append(10.0)
            got.second.append(sec)
    at, p99 = got.worst_second()
    assert (at, p99) == (41, 300.0 + 198)


def test_no_delivery_has_no_worst_second() -> None:
    at, p99 = Latencies().worst_second()
    assert at == 0 and math.isnan(p99)
