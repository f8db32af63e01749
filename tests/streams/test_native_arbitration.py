"""The compiled parse run (``QuoteParser.parse_run``): the feed arbiter's judgement and the
raw records' headers read in one call give exactly what the Python loop gives.

Random feeds from three sources (and records with no source header) over a few
stocks and raw partitions, each source's clock drifting on its own: quotes
newer than the winner, replays, copies of a published snapshot with another
price (a disagreement), late copies of a snapshot no feed published, sources
more than 10 s behind (stale) and copies beyond the 64 s window (late), with
bad lines and unusual headers (which the run hands to the Python path)
interleaved. Batch by batch, the published quotes, the dead letters, the
counts and the whole state of the arbiter must be equal.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from schemas.topics import H_RECEIVE_TS, H_SOURCE
from streams import pipeline
from streams.arbitration import Arbiter
from streams.pipeline import Parsed, Processor, RawRecord
from streams.settings import StreamsSettings
from tests.feed_lines import sse_line
from tests.native import native_or_skip
from tests.streams.test_parse import BAD

PROCESS_TS = 1_900_000_000_456
CODES = ("sz000001", "sh600000", "sz002001", "sh601398", "sz000002")
DAY_START_S = 13 * 3600  # 13:00:00, the afternoon session


def clock(seconds: int) -> str:
    seconds = min(max(seconds, DAY_START_S), 14 * 3600 + 59 * 60 + 59)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def feed(seed: int, n: int) -> list[RawRecord]:
    """``n`` records of a random three-source feed (see the module docstring)."""
    rng = random.Random(seed)
    now = DAY_START_S
    lag = {b"a": 0, b"b": 0, b"c": 0, None: 0}  # seconds behind the market
    records: list[RawRecord] = []
    for offset in range(n):
        now += rng.choice((0, 0, 0, 1))
        source = rng.choice((b"a", b"a", b"b", b"b", b"c", None))
        if lag[source] < 10 and rng.random() < 0.01:
            lag[source] = rng.randrange(12, 100)  # falls behind: stale, then late
        elif lag[source] >= 10 and rng.random() < 0.05:
            lag[source] = 0  # back
        elif lag[source] < 10:
            lag[source] = rng.choice((0, 0, 0, 1, 2))
        seconds = now - lag[source] - (rng.randrange(0, 80) if rng.random() < 0.05 else 0)
        symbol = rng.choice(CODES)
        line = sse_line(
            symbol=symbol,
            time=clock(seconds),
            price=rng.choice(("11.05", "11.05", "11.05", "11.06", "10.99")),
            volume=rng.choice(("58342100", "58342100", "58342900", "68342100")),
        )
        headers: Any = [(H_RECEIVE_TS, b"1900000000000")]
        if source is not None:
            headers.append((H_SOURCE, source))
        odd = rng.random()
        if odd < 0.01:
            line = rng.choice(BAD)[1]  # a bad line: dead-lettered by the Python path
        elif odd < 0.02:
            headers = [(H_RECEIVE_TS, b"x19")]  # not digits: the Kafka timestamp counts
        elif odd < 0.03:
            headers = [(H_SOURCE, b"\xffb"), (H_RECEIVE_TS, b"1900000000001")]
        elif odd < 0.04:
            headers = tuple(headers)  # as another consumer may hand them over
        elif odd < 0.05:
            headers = [*headers, (H_RECEIVE_TS, b"1900000000002")]  # the last one counts
        partition = CODES.index(symbol) % 3 if rng.random() > 0.02 else 2
        records.append(RawRecord(None, line, headers, "raw", partition, offset, 1_800_000_000_000))
    return records


def arbiter_state(arbiter: Arbiter) -> dict[str, Any]:
    return {
        name: getattr(arbiter, name)
        for name in ("winners", "winner_partition", "newest", "changes", "sources", "accepted",
                     "filled", "dropped", "disagreements")
    }  # fmt: skip


@pytest.mark.parametrize("seed", range(8))
def test_the_compiled_run_judges_as_the_python_loop(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    native_or_skip()
    monkeypatch.setattr(pipeline, "_now_ms", lambda: PROCESS_TS)
    compiled = Processor(StreamsSettings(metrics_port=0, native=True))
    assert compiled.parse_path.run is not None
    loop = Processor(StreamsSettings(metrics_port=0, native=True))
    loop.parse_path = dataclasses.replace(loop.parse_path, run=None)  # the compiled line only
    python = Processor(StreamsSettings(metrics_port=0, native=False))
    records = feed(seed, 4000)
    rng = random.Random(seed)
    start = 0
    while start < len(records):
        batch = records[start : start + rng.choice((1, 7, 60, 250, 700))]
        start += len(batch)
        results = []
        for processor in (compiled, loop, python):
            lazy = processor.parse_path.make
            parsed = Parsed(n_in=len(batch), maker=lazy)
            processor.parse(batch, parsed)
            results.append(parsed)
        first, *others = results
        for parsed in others:
            assert parsed.codes == first.codes
            assert parsed.partitions == first.partitions
            assert [id(r) for r in parsed.sources] == [id(r) for r in first.sources]
            assert parsed.arbitrated == first.arbitrated
            assert [(d.value, d.headers) for d in parsed.dead] == [
                (d.value, d.headers) for d in first.dead
            ]
        assert first.encoded == results[1].encoded
        assert first.quotes == results[2].quotes  # the dicts made from the compiled Avro
        state = arbiter_state(compiled.arbiter)
        assert state == arbiter_state(loop.arbiter) == arbiter_state(python.arbiter)
        for processor in (compiled, loop, python):
            processor.arbiter.take_changes()
    arbiter = compiled.arbiter
    # every branch of the judgement was taken
    reasons = {reason for _, reason in arbiter.dropped}
    assert reasons == {"duplicate", "late", "stale"}, arbiter.dropped
    assert sum(arbiter.filled.values()) > 0 and sum(arbiter.disagreements.values()) > 0
    assert arbiter.sources == {"a", "b", "c", "", "\ufffdb"}


def test_a_record_the_run_cannot_judge_goes_to_the_python_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A winner the compiled judgement cannot read (state no worker makes) stops the run
    at that record; the Python path meets the same error and dead-letters the record as
    unprocessable, the rest of the batch is published: as the Python loop does."""
    native_or_skip()
    monkeypatch.setattr(pipeline, "_now_ms", lambda: PROCESS_TS)
    records = feed(3, 300)
    results = []
    for run in (True, False):
        processor = Processor(StreamsSettings(metrics_port=0, native=True))
        if not run:
            processor.parse_path = dataclasses.replace(processor.parse_path, run=None)
        processor.arbiter.winners["000002"] = "not a winner"  # type: ignore[assignment]
        parsed = Parsed(n_in=len(records), maker=processor.parse_path.make)
        processor.parse(records, parsed)
        results.append(parsed)
    compiled, loop = results
    assert compiled.codes == loop.codes and "000002" not in compiled.codes
    assert len(compiled.codes) > 100
    assert [(d.value, d.headers) for d in compiled.dead] == [
        (d.value, d.headers) for d in loop.dead
    ]
    assert sum(b"sz000002" in d.value for d in compiled.dead) > 10
