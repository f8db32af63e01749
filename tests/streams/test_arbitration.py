"""streams.arbitration: each snapshot once across feeds; stale feeds; disagreements.

The arbiter alone (pure), then through ``Processor.process`` with records of
two feeds in one batch (no broker, no Redis: ``sink=None``).
"""

from __future__ import annotations

import asyncio

from schemas.topics import H_RECEIVE_TS, H_SOURCE
from streams.arbitration import Arbiter, ArbitrationConfig
from streams.pipeline import Processor, RawRecord
from streams.settings import StreamsSettings
from tests.feed_lines import bse_line, sse_line

T0 = 1_795_417_197_000  # 2026-11-23 14:59:57 Asia/Shanghai, the lines' own time


def arbiter(stale_after_ms: int = 10_000) -> Arbiter:
    return Arbiter(ArbitrationConfig(stale_after_ms=stale_after_ms))


def test_first_copy_wins_and_later_copies_are_counted_per_source() -> None:
    arb = arbiter()
    assert arb.judge("000001", T0, "a", 0, 11.05, 100) is None
    assert arb.judge("000001", T0, "b", 0, 11.05, 100) == "duplicate"
    assert arb.judge("000001", T0 + 3000, "b", 0, 11.06, 200) is None  # b first this time
    assert arb.judge("000001", T0 + 3000, "a", 0, 11.06, 200) == "duplicate"
    assert arb.accepted == {"a": 1, "b": 1}
    assert arb.dropped == {("b", "duplicate"): 1, ("a", "duplicate"): 1}
    assert not arb.disagreements


def test_equality_is_at_the_coarser_precision() -> None:
    """A vendor stamping milliseconds and one stamping seconds deliver the same snapshot."""
    arb = arbiter()
    assert arb.judge("920819", T0 + 417, "a", 0, 4.87, 100) is None
    assert arb.judge("920819", T0, "b", 0, 4.87, 100) == "duplicate"
    assert arb.judge("920819", T0 + 999, "b", 0, 4.87, 100) == "duplicate"
    assert arb.judge("920819", T0 + 1000, "b", 0, 4.88, 150) is None


def test_a_lagging_source_fills_a_snapshot_the_leader_missed_and_nothing_else() -> None:
    arb = arbiter()
    assert arb.judge("000001", T0, "a", 0, 11.04, 90) is None
    assert arb.judge("000001", T0 + 6000, "a", 0, 11.06, 110) is None  # a missed T0 + 3 s
    assert arb.judge("000001", T0, "b", 0, 11.04, 90) == "duplicate"  # b lags a
    assert arb.judge("000001", T0 + 3000, "b", 0, 11.05, 100) is None  # published late
    assert arb.judge("000001", T0 + 3000, "c", 0, 11.05, 100) == "duplicate"
    assert arb.judge("000001", T0 + 6000, "b", 0, 11.06, 110) == "duplicate"
    assert arb.judge("000001", T0 - 64_000, "b", 0, 11.0, 10) == "late"  # beyond the window
    assert arb.filled == {"b": 1}
    assert arb.dropped == {("b", "duplicate"): 2, ("c", "duplicate"): 1, ("b", "late"): 1}


def test_one_source_passes_everything_as_before() -> None:
    """No ``source`` header (one implicit source): replays and repeats are not dropped."""
    arb = arbiter()
    for ts in (T0, T0, T0 - 3000, T0 + 3000):
        assert arb.judge("000001", ts, "", 0, 11.05, 100) is None
    assert not arb.dropped
    assert not arb.multi_source


def test_disagreement_beyond_tolerance_is_counted() -> None:
    arb = arbiter()
    arb.judge("000001", T0, "a", 0, 11.05, 100_000)
    arb.judge("000001", T0, "b", 0, 11.05, 100_050)  # within 0.1 % of the volume
    arb.judge("600000", T0, "a", 1, 8.00, 100)
    arb.judge("600000", T0, "b", 1, 8.01, 100)  # a cent apart
    arb.judge("600519", T0, "a", 1, 1500.00, 1_000)
    arb.judge("600519", T0, "b", 1, 1500.00, 2_000)
    assert arb.disagreements == {"b": 2}


def test_a_source_far_behind_is_stale_until_it_catches_up() -> None:
    arb = arbiter(stale_after_ms=6000)
    assert arb.judge("000001", T0, "a", 0, 11.05, 100) is None
    assert arb.judge("000001", T0, "b", 0, 11.05, 100) == "duplicate"
    assert arb.judge("000002", T0 + 9000, "a", 0, 9.0, 100) is None
    # b still sends a stock a never had, 9 s behind a on this partition: stale
    assert arb.judge("000003", T0 + 1000, "b", 0, 7.0, 100) == "stale"
    assert arb.behind_ms() == {"a": 0, "b": 8000}
    # b catches up: its own newest tick makes it fresh again
    assert arb.judge("000003", T0 + 9000, "b", 0, 7.1, 100) is None
    assert arb.dropped[("b", "stale")] == 1
    # another partition's clocks are its own
    assert arb.judge("600000", T0, "b", 1, 8.0, 100) is None


def test_a_dead_source_is_fresh_as_soon_as_it_sends_current_ticks() -> None:
    arb = arbiter(stale_after_ms=6000)
    arb.judge("000001", T0, "a", 0, 11.05, 100)
    arb.judge("000001", T0, "b", 0, 11.05, 100)
    for step in range(1, 20):  # a is gone for a minute
        assert arb.judge("000001", T0 + step * 3000, "b", 0, 11.05, 100) is None
    assert arb.judge("000001", T0 + 60_000, "a", 0, 11.05, 100) is None


def test_state_is_stored_per_partition_and_restored_after_a_rebalance() -> None:
    first = arbiter()
    first.judge("000001", T0, "a", 3, 11.05, 100)
    first.judge("000002", T0, "b", 5, 9.0, 100)
    changes = first.take_changes()
    assert set(changes) == {3, 5}
    assert first.take_changes() == {}
    # the partition moves to another worker, which loads what was stored
    second = arbiter()
    second.restore(3, changes[3])
    assert second.judge("000001", T0, "b", 3, 11.05, 100) == "duplicate"
    assert second.judge("000001", T0, "a", 3, 11.05, 100) is None  # the winner's own replay
    first.forget_partitions({3})
    assert first.judge("000001", T0, "b", 3, 11.05, 100) is None  # forgotten, not its stock


def raw(value: bytes, source: str | None, offset: int, partition: int = 0) -> RawRecord:
    headers = [(H_RECEIVE_TS, str(T0 + 1000).encode())]
    if source is not None:
        headers.append((H_SOURCE, source.encode()))
    return RawRecord(b"k", value, headers, "raw", partition, offset, T0)


def test_processor_publishes_each_snapshot_once_across_two_feeds() -> None:
    lines = [sse_line(), sse_line(symbol="sh600000"), bse_line()]
    later = [sse_line(time="15:00:00"), sse_line(symbol="sh600000", time="15:00:00")]
    records = [
        *(raw(v, "a", i) for i, v in enumerate(lines)),
        *(raw(v, "b", 10 + i) for i, v in enumerate(lines)),
        *(raw(v, "b", 20 + i) for i, v in enumerate(later)),
        *(raw(v, "a", 30 + i) for i, v in enumerate(later)),
    ]
    processor = Processor(StreamsSettings(metrics_port=0))
    result = asyncio.run(processor.process(records, None))
    published = [(q["code"], q["exchange_ts"]) for q, _ in result.sink.quotes]
    assert len(published) == len(set(published)) == 5
    assert result.arbitrated == 5
    assert not result.dlq
    assert [r.offset for r in result.sources] == [0, 1, 2, 20, 21]
    assert set(result.feed_winners) == {0}  # two feeds: winners to store


def test_processor_with_one_feed_stores_no_arbitration_state() -> None:
    records = [raw(sse_line(), None, 0), raw(sse_line(), None, 1)]  # a replayed record
    result = asyncio.run(Processor(StreamsSettings(metrics_port=0)).process(records, None))
    assert len(result.sink.quotes) == 2
    assert result.arbitrated == 0
    assert result.feed_winners == {}
