"""When a worker closes candles: per-partition exchange clocks, and replays after a reseed.

A worker catching up on a backlog reads its partitions at different
positions; a candle may close only when its own partition is past the
minute. Replayed ticks (after a rebalance's reseed) move the clocks too, so
the wall-clock rule for a quiet feed does not close candles the feed is
still in the middle of.
"""

from __future__ import annotations

from typing import Any

from schemas.timeframes import TIMEFRAMES
from streams.parse import parse_record
from streams.pipeline import Processor
from streams.settings import StreamsSettings
from tests.feed_lines import sse_line

QUIET_MS = 5_000
DAY_LATER_MS = 2 * 86_400_000  # the test data is from 2026-11-23


def tick(code: str, clock: str, volume: int) -> dict[str, Any]:
    line = sse_line(symbol=f"sz{code}", time=clock, volume=str(volume))
    return parse_record(line, receive_ts=0, process_ts=0)


def processor() -> Processor:
    return Processor(StreamsSettings(metrics_port=0), publish_normalized=False)


def test_a_candle_waits_for_its_own_partition_not_the_newest_tick() -> None:
    p = processor()
    behind = tick("000001", "10:00:50", 1000)  # partition 1 is still in 10:00
    ahead = [tick("000002", "10:00:40", 500), tick("000002", "10:01:30", 900)]  # partition 0
    p.derive([(behind, 1), *((q, 0) for q in ahead)])
    wall = p.newest_wall_ms + 10  # the feed is not quiet
    closed = p.flush_candles(wall, QUIET_MS)
    assert [c["code"] for c in closed] == []  # 000002's 10:00 candle closed inline already
    # 000001's 10:00 candle is still open: more of its 10:00 ticks may be on their way
    assert p.candles.current("000001") is not None
    p.derive([(tick("000001", "10:00:57", 1200), 1), (tick("000003", "10:01:03", 10), 1)])
    closed = p.flush_candles(p.newest_wall_ms + 10, QUIET_MS)
    assert [(c["code"], c["ticks"], c["volume"]) for c in closed] == [("000001", 2, 200)]


def test_a_partition_that_went_quiet_follows_the_newest_tick() -> None:
    p = processor()
    p.derive([(tick("000001", "10:00:50", 1000), 1), (tick("000002", "10:01:30", 900), 0)])
    wall = p.partition_wall_ms[1] + QUIET_MS  # partition 1 stopped ticking, 0 did not
    p.newest_wall_ms = wall
    closed = p.flush_candles(wall, QUIET_MS)
    assert [c["code"] for c in closed] == ["000001"]


def test_replays_after_a_reseed_keep_the_wall_clock_rule_from_closing_candles() -> None:
    p = processor()
    history = [tick("000001", f"10:01:{s:02d}", 1000 + s) for s in (3, 6, 9)]
    for q in history:  # what warm_up replays from Redis after a reset
        p.last_ts["000001"] = q["exchange_ts"]
        p.candles.update(q)
    p.derive([(q, 0) for q in history])  # the same ticks fetched again: replays only
    closed = p.flush_candles(p.newest_wall_ms + 10, QUIET_MS)
    assert closed == [] and p.candles.current("000001") is not None
    # when the feed really is quiet, the wall clock (two days later) closes it
    later = p.newest_wall_ms + QUIET_MS + DAY_LATER_MS
    closed = p.flush_candles(later, QUIET_MS)  # with its 5m ... 1d bars
    assert [(c["code"], c["tf"]) for c in closed] == [("000001", tf) for tf in TIMEFRAMES]
