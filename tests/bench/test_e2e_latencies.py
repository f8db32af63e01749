"""hqstream bench e2e: the worst second, where a short stall shows; a minute's first snapshot;
the workers' GC pauses; what each process ran and waited for a core."""

from __future__ import annotations

import gc
import math
import os
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY, generate_latest

from hqstream.bench import e2e
from hqstream.bench.e2e import (
    DEFER_BYTES,
    HELD_S,
    CoreShares,
    E2eRun,
    Latencies,
    _Client,
    _csv_of,
    _heap_frozen,
    _report_compare,
    permutation_p,
)
from hqstream.bench.pipeline_rig import GcPauses, gc_pauses
from hqstream.bench.proc_cpu import group_sched_ns, sched_ns
from streams.metrics import GC_PAUSE


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


def _quotes(n: int, receive_ts: int) -> bytes:
    quote = {"receive_ts": receive_ts, "process_ts": receive_ts + 5, "exchange_ts": 1_000}
    return orjson.dumps({"type": "quotes", "data": [quote] * n})


def test_a_burst_s_messages_are_measured_when_they_came_not_when_decoded() -> None:
    """A large message waits, with its stamp, until the socket is quiet; a small one
    (a steady feed's) and any message of ``inline`` are decoded at once."""
    got = Latencies()
    client = _Client(got, inline=False)
    assert len(_quotes(2_000, 0)) >= DEFER_BYTES > len(_quotes(3, 0))
    client.take(_quotes(2_000, receive_ts=1_000_000), now_ms=1_000_100.0, second=3)
    client.take(_quotes(3, receive_ts=1_000_000), now_ms=1_000_110.0, second=3)
    client.take(orjson.dumps({"type": "stats", "data": {}}), now_ms=1_000_120.0, second=3)
    assert got.total == [110.0] * 3  # the small one only; the large one is held
    client.take(_quotes(2_000, receive_ts=1_000_050), now_ms=1_000_130.0, second=4)
    assert len(got.total) == 3
    client.decode_held()  # the socket is quiet
    assert got.total == [110.0] * 3 + [100.0] * 2_000 + [80.0] * 2_000
    assert got.second == [3] * 2_003 + [4] * 2_000 and got.stage == [5] * 4_003
    assert not client.held

    inline = Latencies()
    _Client(inline, inline=True).take(_quotes(2_000, receive_ts=0), now_ms=30.0, second=0)
    assert inline.total == [30.0] * 2_000


def test_a_held_message_is_decoded_once_the_oldest_waited_its_most() -> None:
    """A socket never quiet (a steady feed of large messages) still has its messages
    decoded, :data:`HELD_S` after the oldest came."""
    got = Latencies()
    client = _Client(got, inline=False)
    message = _quotes(2_000, receive_ts=0)
    client.take(message, now_ms=10.0, second=0)
    client.take(message, now_ms=10.0 + HELD_S * 1000, second=0)
    assert not got.total and len(client.held) == 2
    client.take(message, now_ms=11.0 + HELD_S * 1000, second=1)
    assert len(got.total) == 6_000 and not client.held


def test_no_delivery_has_no_worst_second() -> None:
    at, p99 = Latencies().worst_second()
    assert at == 0 and math.isnan(p99)


def test_each_second_gets_its_own_line_in_order() -> None:
    got = Latencies(started_at=1_796_191_200.0)  # 2026-12-02 06:00:00 UTC
    for sec, total in ((1, 30.0), (0, 10.0), (1, 50.0), (0, 20.0)):
        got.total.append(total)
        got.stage.append(total / 2)
        got.second.append(sec)
    lines = got.per_second_csv().splitlines()
    assert lines[0].startswith("second,utc,quotes,p50_ms,p99_ms,max_ms")
    assert lines[1:] == [
        "0,06:00:00,2,20.0,20.0,20.0,10.0,10.0",
        "1,06:00:01,2,50.0,50.0,50.0,25.0,25.0",
    ]


def test_the_ticks_of_a_minute_s_first_snapshot_are_measured_apart() -> None:
    got = Latencies(opening_ms=3000)
    minute = 1_796_191_200_000  # 2026-12-02 14:00:00 in Shanghai, epoch ms
    for exchange_ts, delivered in ((minute, 400.0), (minute + 2_999, 900.0),
                                   (minute + 3_000, 50.0), (minute - 1, 60.0)):  # fmt: skip
        quote = {"exchange_ts": exchange_ts, "receive_ts": minute + 100, "process_ts": minute + 150}
        got.add(quote, minute + 100 + delivered, 7)
    assert got.minute_first == [400.0, 900.0]  # 14:00:00 and 14:00:02.999 only
    assert got.total == [400.0, 900.0, 50.0, 60.0] and got.stage == [50.0] * 4
    assert got.second == [7] * 4


def test_the_gc_pauses_are_read_from_a_worker_s_metrics() -> None:
    """The figures bench e2e prints come from the workers' own histogram, by its real name
    and buckets: three pauses observed into it are counted, timed and sorted by length."""
    gc.disable()  # no collection of this process's own observed meanwhile
    try:
        before = gc_pauses(generate_latest(REGISTRY))
        for seconds in (0.003, 0.030, 0.150):
            GC_PAUSE.labels("1").observe(seconds)
        got = gc_pauses(generate_latest(REGISTRY)) - before
    finally:
        gc.enable()
    assert (got.collections, got.over_25ms, got.over_100ms) == (3, 2, 1)
    assert got.seconds == pytest.approx(0.183)
    assert got.describe() == "3 collections, 183 ms in all, 2 over 25 ms, 1 over 100 ms"


def test_a_worker_that_does_not_serve_metrics_counts_no_pause() -> None:
    assert gc_pauses(b"") == GcPauses()
    assert GcPauses(2, 0.5, 1, 0) + GcPauses(1, 0.25, 1, 1) == GcPauses(3, 0.75, 2, 1)


def test_a_process_s_cpu_is_read_from_its_threads_schedstat() -> None:
    ran0, waited0 = sched_ns(os.getpid())
    spent = time.process_time() + 0.05
    while time.process_time() < spent:  # 50 ms of this thread's CPU, however long it takes
        pass
    ran1, waited1 = sched_ns(os.getpid())
    assert ran1 - ran0 >= 40_000_000 and waited1 >= waited0
    own_group, _ = group_sched_ns(os.getpgid(0))  # this process and the rest of its group
    assert own_group >= ran1


def test_core_shares_are_given_per_snapshot_of_the_feed() -> None:
    readings = iter([(1_000_000, 0), (3_001_000_000, 6_000_000_000)])  # ns ran, ns waited
    shares = CoreShares({"broker": lambda: next(readings)})
    shares.start()
    shares.stop()
    assert shares.used == {"broker": (3000.0, 6000.0)}
    assert "| broker | 300 | 600 |" in shares.table(snapshots=10)
    shares.used = {"client": (50.0, 0.0), "gateway": (100.0, 200.0),
                   "produce": (10.0, 20.0), "broker": (300.0, 600.0)}  # fmt: skip
    assert shares.table(snapshots=10).splitlines()[2:] == [
        "| produce | 1 | 2 |",
        "| gateway | 10 | 20 |",
        "| broker | 30 | 60 |",
        "| **pipeline** | 41 | 82 |",
        "| client (apart) | 5 | 0 |",
    ]
    assert set(CoreShares.of({"broker": os.getpgid(0)}).readers) == {
        "broker",
        "client",
    }


def test_the_heap_made_before_the_run_is_left_out_of_the_client_s_collections() -> None:
    """Frozen in the block, so a full collection does not walk it; after the block,
    unfrozen (or left frozen, if something had frozen it before: a gateway's app)."""
    made_before = [[i] for i in range(20_000)]
    frozen_before = gc.get_freeze_count()
    with _heap_frozen():
        assert gc.get_freeze_count() >= frozen_before + len(made_before)
        gc.collect()  # the oldest generation too: what is frozen stays frozen
        assert gc.get_freeze_count() >= frozen_before + len(made_before)
    if frozen_before:
        assert gc.get_freeze_count() >= frozen_before
    else:
        assert gc.get_freeze_count() == 0


def _quote(received: float) -> dict[str, float]:
    return {"receive_ts": received, "process_ts": received + 5, "exchange_ts": 1_000}


def test_each_burst_s_slowest_quote_groups_the_quotes_by_when_they_were_read() -> None:
    got = Latencies()
    for burst, slowest in enumerate((120.0, 180.0, 130.0)):
        start = 1_000_000.0 + 3000 * burst
        for i in range(100):  # read over ~100 ms, delivered in order, the last slowest
            got.add(_quote(start + i), start + i + 20 + (slowest - 20) * i / 99, 0)
    assert got.burst_maxes() == pytest.approx([120.0, 180.0, 130.0])
    steady = Latencies()
    for i in range(300):  # a quote every 10 ms: one "burst"
        steady.add(_quote(1_000_000.0 + 10 * i), 1_000_000.0 + 10 * i + 15 + i % 3, 0)
    assert steady.burst_maxes() == [17.0]


def _run_of(p99_ms: float, cpu_ms: float, calibration_s: float, parse_us: float = 9.0) -> E2eRun:
    """A run of two bursts: 99 quotes at 100 ms, one at ``p99_ms``; ``cpu_ms`` per burst."""
    got = Latencies()
    for burst in range(2):
        for i in range(100):
            received = 1_000_000.0 + 3000 * burst + i
            got.add(_quote(received), received + (p99_ms if i == 99 else 100.0), 0)
    cores = CoreShares({})
    cores.used = {"streams-0": (cpu_ms, 0.0), "broker": (cpu_ms, 0.0), "client": (99.0, 0.0)}
    return E2eRun(got, GcPauses(), cores, 2.0, calibration_s, parse_us)


def test_a_comparison_shows_every_run_and_each_side_s_medians_with_their_ratio() -> None:
    runs = [
        ("ref", 1, _run_of(200.0, 100.0, 0.25)),
        ("this", 1, _run_of(150.0, 80.0, 0.25)),
        ("this", 2, _run_of(170.0, 90.0, 0.27, 11.0)),
        ("ref", 2, _run_of(220.0, 110.0, 0.27)),
    ]
    with e2e.console.capture() as captured:
        _report_compare(["ref", "this"], runs, spread=False)
    lines = [line for line in captured.get().splitlines() if line.startswith("|")]
    assert lines[0] == (
        "| side | round | p50 ms | p99 ms | burst's slowest quote, median ms | "
        "pipeline CPU, ms per snapshot | calibration s | parse calibration, µs a line |"
    )
    # each burst's CPU counts the pipeline's processes only (the client apart)
    assert lines[2] == "| ref | 1 | 100.0 | 200.0 | 200.0 | 100 | 0.25 | 9.00 |"
    assert lines[4] == "| **ref** | median | 100.0 | 210.0 | 210.0 | 105 | 0.26 | 9.00 |"
    assert lines[7] == "| **this** | median | 100.0 | 160.0 | 160.0 | 85 | 0.26 | 10.00 |"
    assert lines[8] == "| this / ref, medians | | 1.00x | 0.76x | 0.76x | 0.81x | 1.00x | 1.11x |"
    # two runs a side: 6 ways to deal them, 2 as far apart as these (the sides swapped)
    assert lines[9] == (
        "| as far apart by chance, p (exact permutation test of the means) | "
        "| 1.00 | 0.33 | 0.33 | 0.33 | 1.00 | 1.00 |"
    )


def test_the_chance_of_a_difference_is_counted_over_every_deal_of_the_runs() -> None:
    assert permutation_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(2 / 20)
    assert permutation_p([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]) == pytest.approx(2 / 70)
    assert permutation_p([1.0, 5.0, 3.0], [4.0, 2.0, 3.0]) == 1.0  # the same means
    # sides that overlap (11.5 < 12): 4 of the 20 deals are as far apart (|11 - 13| = 2)
    assert permutation_p([10.0, 11.0, 12.0], [11.5, 12.5, 15.0]) == pytest.approx(4 / 20)


def test_a_compared_run_s_figures_go_to_a_file_of_its_own() -> None:
    assert _csv_of(None, ref=True, round_no=1) is None
    base = Path("/tmp/runs/e2e.csv")
    assert _csv_of(base, ref=True, round_no=2) == Path("/tmp/runs/e2e-ref-2.csv")
    assert _csv_of(base, ref=False, round_no=1) == Path("/tmp/runs/e2e-this-1.csv")
