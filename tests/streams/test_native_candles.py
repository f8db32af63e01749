"""The compiled candle builder against the reference, tick by tick.

``tests/streams/test_candles.py`` runs every rule on both builders; here both
take the same random ticks of a few stocks through two days (auctions,
late-stamped ticks, lunch, counters going backwards, replays, suspensions,
untraded quotes), with flushes on the way (with and without a stock's clock
and a limit), forgotten stocks and a close of everything at the end, and
must give the same candles, open candles and counters at every step.
"""

from __future__ import annotations

import random

import pytest

from streams.candles import Candle, CandleBuilder
from tests.streams.test_candles import DAY, NEXT_DAY, at, compiled, quote


@pytest.mark.parametrize("seed", range(10))
def test_random_ticks_make_the_same_candles(seed: int) -> None:
    rng = random.Random(seed)
    grace = rng.choice([0, 1_000, 30_000])
    reference, native = CandleBuilder(grace), compiled(grace)
    codes = [f"60{i:04d}" for i in range(5)]
    clocks: dict[str, int] = {}
    state = {code: (10.0, 0, 0.0) for code in codes}  # price, volume, amount
    made = 0
    for day in (DAY, NEXT_DAY):
        ts = at(9, 14, day=day)
        end = at(15, 2, day=day)
        while ts < end:
            ts += rng.choice([50, 700, 3_000, 3_000, 20_000, 61_000, 600_000])
            code = rng.choice(codes)
            price, volume, amount = state[code]
            roll = rng.random()
            if roll < 0.03:  # a counter going backwards
                volume, amount = volume // 2, amount / 2
            else:
                step = rng.choice([0, 100, 5_000])
                price = round(max(0.01, price * (1 + rng.gauss(0, 0.01))), 2)
                volume, amount = volume + step, amount + step * price
            state[code] = (price, volume, amount)
            tick_ts = clocks.get(code, ts) if roll > 0.95 else ts  # a replay of its last
            q = quote(
                tick_ts,
                0.0 if 0.1 < roll < 0.13 else price,  # traded, no price: a flat candle
                volume,
                amount,
                code=code,
                traded=True if 0.1 < roll < 0.13 else None if roll > 0.1 else False,
                suspended=0.97 < roll < 0.98,
            )
            expected, got = reference.update(q), native.update(q)
            assert got == expected, (code, tick_ts)
            made += len(expected)
            clocks[code] = max(clocks.get(code, 0), tick_ts)
            assert native.closes(code, ts + 60_000) == reference.closes(code, ts + 60_000)
            assert native.current_of(codes) == reference.current_of(codes)
            if rng.random() < 0.05:
                limit = rng.choice([None, 1, 3])
                clock_of = None if rng.random() < 0.5 else (lambda c: clocks.get(c, 0))
                flushed = reference.flush(ts, clock_of, limit)
                assert native.flush(ts, clock_of, limit) == flushed
                made += len(flushed)
            if rng.random() < 0.01:
                gone = rng.sample(codes, 2)
                assert native.forget(gone) == reference.forget(gone)
            assert native.open_count() == reference.open_count()
        everything: list[Candle] = reference.close_all()
        assert native.close_all() == everything
    assert native.counters == reference.counters
    assert made > 50 and reference.counters.late > 0 and reference.counters.no_trade > 0
