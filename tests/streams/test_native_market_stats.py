"""The compiled statistics book against the reference, snapshot by snapshot.

``tests/streams/test_market_stats.py`` runs every definition on both books
(against an independent recount); here both take the same simulated market,
two trading days of it, and must give equal partials and records at every
snapshot, and fail alike on a quote they cannot count.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from producers.sample_feed import generate, session_start_ms
from streams.market_stats import MARKETS_AND_ALL, MarketStats, merge_partials
from streams.parse import parse_record
from tests.streams.test_market_stats import compiled, quote

DAY_MS = 86_400_000


def simulated(stocks: int, snapshots: int, start_ms: int) -> list[dict[str, Any]]:
    lines, _ = generate(stocks, snapshots, start_ms=start_ms)
    return [parse_record(value, 0) for _, value, _ in lines]


def test_a_simulated_market_gives_the_same_partials_and_records() -> None:
    start = session_start_ms(hhmmss="09:29:00")
    day1 = simulated(400, 40, start)
    day2 = simulated(400, 10, start + DAY_MS)  # a new trade date: yesterday's stop counting
    reference, native = MarketStats(), compiled()
    for i, q in enumerate([*day1, *day2]):
        reference.update(q)
        native.update(q)
        if i % 400 == 399:  # every snapshot
            top_n = (1, 10, 50)[i % 3]
            assert native.partial_state(top_n, now_ms=i) == reference.partial_state(
                top_n, now_ms=i
            ), f"after tick {i}"
    assert native.snapshot_all(10, now_ms=1) == reference.snapshot_all(10, now_ms=1)
    for market in MARKETS_AND_ALL:
        assert native.snapshot(market, 5, now_ms=2) == reference.snapshot(market, 5, now_ms=2)
    merged = merge_partials([native.partial_state(now_ms=3)], now_ms=3)
    assert merged == merge_partials([reference.partial_state(now_ms=3)], now_ms=3)
    assert merged["ALL"]["stocks"] == 400 and native.trade_date == reference.trade_date
    assert len(native) == len(reference) == 400


@pytest.mark.parametrize(
    "bad",
    [
        {"change_pct": math.nan},
        {"amount": math.inf},
        {"prev_close": -math.inf},
        {"market": "HK"},
        {"price": "10.0"},
    ],
    ids=["nan-change", "inf-amount", "inf-prev-close", "unknown-market", "str-price"],
)
def test_a_quote_that_cannot_be_counted_raises_and_drops_its_stock(bad: dict[str, Any]) -> None:
    """The worker dead-letters such a quote; the stock's old contribution is out in both
    books, and the next good quote counts it again."""
    reference, native = MarketStats(), compiled()
    for book in (reference, native):
        book.update(quote("600001", change_pct=1.0))
        book.update(quote("600002", change_pct=2.0))
        with pytest.raises((ValueError, TypeError, KeyError, OverflowError)):
            book.update({**quote("600001", 1_772_415_003_000, change_pct=3.0), **bad})
    assert native.snapshot_all(now_ms=0) == reference.snapshot_all(now_ms=0)
    assert native.snapshot("SH", now_ms=0)["stocks"] == 1
    for book in (reference, native):
        book.update(quote("600001", 1_772_415_006_000, change_pct=4.0))
    assert native.snapshot_all(now_ms=0) == reference.snapshot_all(now_ms=0)
    assert native.snapshot("SH", now_ms=0)["stocks"] == 2
