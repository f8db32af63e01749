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


def test_a_ticking_stock_closes_its_candle_itself_and_the_timer_waits_the_grace() -> None:
    """The timer leaves a live partition's candles to their stocks' next ticks for one
    snapshot interval (3 s): a minute's closes then come with the ticks, spread over
    the interval, instead of all at once in the timer's slices."""
    p = processor()
    assert p.timer_grace_ms == 3_000
    p.derive([(tick("000001", "10:00:50", 1000), 1), (tick("000004", "10:00:51", 10), 1)])
    p.derive([(tick("000003", "10:01:02", 10), 1)])  # partition 1 is past 10:01:00
    wall = p.newest_wall_ms + 10  # the feed is not quiet
    assert p.flush_candles(wall, QUIET_MS) == []  # within the grace: nothing closed
    minutes = p.derive([(tick("000001", "10:01:02", 1100), 1)])[0]
    assert [m.code for m in minutes] == ["000001"]  # closed by its own tick
    p.derive([(tick("000003", "10:01:03", 11), 1)])  # the grace is over at 10:01:03
    closed = p.flush_candles(p.newest_wall_ms + 10, QUIET_MS)
    assert [c["code"] for c in closed] == ["000004"]  # stopped ticking: the timer closes it

    at_once = Processor(StreamsSettings(metrics_port=0, candle_timer_grace_s=0),
                        publish_normalized=False)  # fmt: skip
    at_once.derive([(tick("000004", "10:00:51", 10), 1), (tick("000003", "10:01:00", 10), 1)])
    closed = at_once.flush_candles(at_once.newest_wall_ms + 10, QUIET_MS)
    assert [c["code"] for c in closed] == ["000004"]


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


def test_a_broker_outage_is_no_quiet_feed() -> None:
    """The broker went away at 10:00:50: no new tick, but no fetch either. The candles
    wait (the receiver journals the rest of the minute) however late the wall clock."""
    p = processor()
    p.derive([(tick("000001", "10:00:40", 1000), 0), (tick("000002", "10:00:50", 500), 1)])
    last_fetch = p.newest_wall_ms + 100  # the last answer before the broker died
    outage = {0: last_fetch, 1: last_fetch}
    later = p.newest_wall_ms + QUIET_MS + DAY_LATER_MS
    assert p.flush_candles(later, QUIET_MS, outage) == []
    assert p.candles.current("000001") is not None

    # the broker is back; the journal's backlog: the rest of the 10:00 minute, then 10:01
    backlog = [(tick("000001", "10:00:58", 1300), 0), (tick("000001", "10:01:01", 1400), 0)]
    minutes, _, _ = p.derive(backlog)
    assert [(c.code, c.ticks, c.volume) for c in minutes] == [("000001", 2, 300)]  # whole
    assert p.candles.counters.after_close == 0
    assert p.flush_candles(later, QUIET_MS, {0: 0, 1: 0}) == []  # still catching up

    # the broker answers "nothing new" for QUIET_MS: the feed really went quiet
    quiet = p.newest_wall_ms + QUIET_MS
    closed = p.flush_candles(quiet, QUIET_MS, {0: quiet, 1: quiet})
    assert {c["code"] for c in closed if c["tf"] == "1m"} == {"000001", "000002"}


def test_a_partition_is_quiet_only_once_the_broker_said_so() -> None:
    p = processor()
    p.derive([(tick("000001", "10:00:50", 1000), 1), (tick("000002", "10:01:30", 900), 0)])
    wall = p.partition_wall_ms[1] + QUIET_MS  # partition 1 stopped ticking, 0 did not
    p.newest_wall_ms = wall
    not_fetched = {0: wall, 1: 0}  # partition 1 has records the worker has not read yet
    assert p.flush_candles(wall, QUIET_MS, not_fetched) == []
    too_soon = {0: wall, 1: wall - 1}  # read to its end, but not QUIET_MS after its last tick
    assert p.flush_candles(wall, QUIET_MS, too_soon) == []
    closed = p.flush_candles(wall, QUIET_MS, {0: wall, 1: wall})
    assert [c["code"] for c in closed] == ["000001"]


def test_candles_closed_in_slices_are_the_ones_closed_at_once() -> None:
    """The timer closes a minute's candles a slice at a time (batches go between):
    the same bars, the same stored series, and no gap bar before its stock's minutes."""
    codes = [f"{n:06d}" for n in range(1, 13)]
    ticks = [(tick(c, "10:03:10", 1000), n % 3) for n, c in enumerate(codes)]
    # half the stocks tick in 10:04 too; the others' 5m bar ends with a gap
    ticks += [(tick(c, "10:04:20", 1500 + n), n % 3) for n, c in enumerate(codes) if n % 2]
    whole, sliced = processor(), processor()
    for p in (whole, sliced):
        p.close_bars(p.derive(ticks)[0])
        p.take_bar_states()
    later = whole.newest_wall_ms + QUIET_MS + DAY_LATER_MS  # the feed went quiet
    expected = whole.flush_candles(later, QUIET_MS)

    got: list[dict[str, Any]] = []
    slices = 0
    while True:
        closed, done = sliced.flush_candle_slice(later, QUIET_MS, None, 4)
        slices += 1
        minutes = [b for b in closed if b["tf"] == "1m"]
        assert len(minutes) <= 4 and (not minutes or len(closed) - len(minutes) <= 4 * 5)
        got += closed
        if done:
            break

    def key(bar: dict[str, Any]) -> tuple[str, str, int]:
        return bar["code"], bar["tf"], bar["minute_ts"]

    assert sorted(got, key=key) == sorted(expected, key=key)
    assert len([b for b in expected if b["tf"] == "1m"]) == 12  # 6 at 10:03, 6 at 10:04
    assert slices >= 12 // 4 + 1
    assert sliced.take_bar_states() == whole.take_bar_states()
    assert sliced.flush_candle_slice(later, QUIET_MS, None, 4) == ([], True)
