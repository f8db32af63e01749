"""streams.redis_lua: the compiled quote script arguments are the Python ones, byte for byte.

The Python :func:`streams.redis_lua.quote_chunks` is the reference; the
compiled path (``hqstream_native.quote_chunks``, via
:func:`~streams.redis_lua.quote_chunks_path`) must give the same KEYS and
ARGV, each argument of the same type and bytes: on simulated trading days, on
numbers Python writes in exponent form or that are no whole thousandths, on
names JSON must escape, on repeated codes and chunk boundaries.
``HQ_TEST_REQUIRE_NATIVE=1`` (``make test``) fails these instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import pytest

from producers.sample_feed import generate
from schemas.records import Quote
from streams.pipeline import Processor, RawRecord
from streams.redis_lua import QuoteChunks, ScriptCall, quote_chunks, quote_chunks_path
from streams.settings import StreamsSettings

REQUIRED = os.environ.get("HQ_TEST_REQUIRE_NATIVE") == "1"


@pytest.fixture(scope="module")
def compiled() -> QuoteChunks:
    path = quote_chunks_path(enabled=True)
    if path is quote_chunks:
        if REQUIRED:
            pytest.fail("HQ_TEST_REQUIRE_NATIVE=1 but hqstream_native is not installed")
        pytest.skip("hqstream_native is not installed")
    return path


def typed(calls: list[ScriptCall]) -> list[Any]:
    """Each argument with its type: ``"1"`` and ``b"1"`` differ on the wire."""
    return [([(type(k), k) for k in keys], [(type(a), a) for a in argv]) for keys, argv in calls]


def assert_same(compiled: QuoteChunks, quotes: list[tuple[Quote, int]], max_ticks: int) -> None:
    data = [b"tick %d" % i for i in range(len(quotes))]  # the JSON is passed on as it is
    assert typed(compiled(quotes, data, max_ticks)) == typed(quote_chunks(quotes, data, max_ticks))


def processed_quotes(stocks: int, snapshots: int) -> list[list[tuple[Quote, int]]]:
    """The quotes a worker writes, batch by batch of 1,000 lines, for simulated snapshots."""
    lines, _ = generate(stocks, snapshots)
    records = [RawRecord(key, value, headers, "raw", i % 4, i, 0)
               for i, (key, value, headers) in enumerate(lines)]  # fmt: skip
    processor = Processor(StreamsSettings(metrics_port=0), publish_normalized=False)

    async def run() -> list[list[tuple[Quote, int]]]:
        out = []
        for start in range(0, len(records), 1000):
            result = await processor.process(records[start : start + 1000], None)
            out.append(result.sink.quotes)
        return out

    return asyncio.run(run())


def test_the_switch_chooses_the_python_path() -> None:
    assert quote_chunks_path(enabled=False) is quote_chunks


def test_simulated_batches_are_identical(compiled: QuoteChunks) -> None:
    batches = processed_quotes(2000, 6)
    assert sum(map(len, batches)) == 12_000
    for quotes in batches:
        for max_ticks in (1000, 250, 1):
            assert_same(compiled, quotes, max_ticks)
    assert_same(compiled, [], 1000)


def test_repeated_codes_keep_the_newest_tick_and_never_span_chunks(compiled: QuoteChunks) -> None:
    rng = random.Random(7)
    quotes = [
        (q, p) for batch in processed_quotes(100, 4) for q, p in batch
    ]  # four ticks of each of 100 stocks
    rng.shuffle(quotes)
    same_ts = [({**q, "price": q["price"] + 1.0}, p) for q, p in quotes[:10]]
    mixed = quotes + same_ts  # ties: the later one of equal exchange_ts wins, as in Python
    for max_ticks in (1, 3, 7, 1000):
        assert_same(compiled, mixed, max_ticks)
    calls = compiled(mixed, [b"{}"] * len(mixed), 7)
    codes = [key for keys, _ in calls for key in keys if key.startswith("hq:quote:")]
    assert len(codes) == len(set(codes)) == 100


def test_numbers_and_names_python_writes_its_own_way(compiled: QuoteChunks) -> None:
    (q, p), *_ = processed_quotes(10, 1)[0]
    odd_numbers: list[dict[str, Any]] = [
        {"amount": 5_213_456_789.5},  # >= 1e9: Python's repr
        {"amount": 1e16},  # '1e+16'
        {"amount": 12345678.1234},  # no whole number of thousandths
        {"change": -0.0, "change_pct": -0.0},
        {"change": 0.1 + 0.2},  # '0.30000000000000004'
        {"price": 1e-05},  # '1e-05'
        {"change_pct": 0.001, "price": 0.0},
        {"volume": 2**70},  # beyond i64
        {"volume": 0},
        {"price": 7},  # an int where a float is expected: Python's repr all the same
    ]
    odd_names = ['say "hi"', "back\\slash", "tab\there", "nul\x00", "\x1f", "贵州茅台", "ＳＴ🚀"]
    quotes = [({**q, "code": f"6000{i:02d}", **o}, i) for i, o in enumerate(odd_numbers)]
    quotes += [({**q, "code": f"0000{i:02d}", "name": n}, p) for i, n in enumerate(odd_names)]
    assert_same(compiled, quotes, 1000)
    assert_same(compiled, quotes, 2)


def test_what_python_refuses_the_compiled_path_refuses(compiled: QuoteChunks) -> None:
    (q, p), *_ = processed_quotes(10, 1)[0]
    without_name = {k: v for k, v in q.items() if k != "name"}
    for bad in ([(without_name, p)], [({**q, "exchange_ts": "soon"}, p)]):
        data = [b"{}"]
        with pytest.raises((KeyError, TypeError)):
            quote_chunks(bad, data, 10)  # type: ignore[arg-type]
        with pytest.raises((KeyError, TypeError)):
            compiled(bad, data, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="length"):
        compiled([(q, p)], [], 10)
