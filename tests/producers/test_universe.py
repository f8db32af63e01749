"""The simulated universe and its price walk: board mix, codes, names, limits, volumes."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter

import pytest

from producers.universe import (
    CODES_PER_PREFIX,
    PREFIX_WEIGHTS,
    MarketWalk,
    Stock,
    allocate,
    build_universe,
)
from schemas.market_rules import board_of, is_limit_free, is_st, limit_prices

TRADE_DATE = dt.date(2026, 11, 23)


@pytest.fixture(scope="module")
def universe() -> tuple[Stock, ...]:
    return build_universe(5000, seed=42)


def test_board_mix_matches_the_listing(universe: tuple[Stock, ...]) -> None:
    assert len(universe) == 5000
    boards = Counter(s.board for s in universe)
    # Real mix (2025): SH main ~1,700, STAR ~590, SZ main ~1,500, ChiNext ~1,390, BJ ~270.
    assert 2700 <= boards["MAIN"] <= 3000
    assert 500 <= boards["STAR"] <= 620
    assert 1200 <= boards["CHINEXT"] <= 1400
    assert 250 <= boards["BJ"] <= 290
    prefixes = Counter(s.code[:3] for s in universe)
    assert set(prefixes) == {p for _, p, _ in PREFIX_WEIGHTS}
    for market, prefix, weight in PREFIX_WEIGHTS:
        assert prefixes[prefix] == weight  # weights are per 5,000
        assert all(s.market == market for s in universe if s.code.startswith(prefix))


def test_codes_are_unique_real_looking_and_on_their_board(universe: tuple[Stock, ...]) -> None:
    codes = [s.code for s in universe]
    assert len(set(codes)) == len(codes)
    for s in universe:
        assert re.fullmatch(r"\d{6}", s.code)
        assert s.board == board_of(s.market, s.code)
        assert re.fullmatch(r"(sh|sz|bj)\d{6}", s.symbol)
    assert all(s.code.startswith("920") for s in universe if s.market == "BJ")


def test_names_st_share_suspended_and_prices(universe: tuple[Stock, ...]) -> None:
    names = [s.name for s in universe]
    assert len(set(names)) == len(names)
    name_re = r"(\*?ST|N|C)?[\u4e00-\u9fff]{2,4}A?"
    assert all(re.fullmatch(name_re, n) for n in names), [
        n for n in names if not re.fullmatch(name_re, n)
    ][:5]
    by_code = {s.code: s for s in universe}
    assert by_code["000001"].name == "平安银行" and by_code["000001"].market == "SZ"
    assert by_code["600519"].name == "贵州茅台" and by_code["600519"].prev_close == 144800
    st_share = sum(s.st for s in universe) / len(universe)
    assert 0.02 <= st_share <= 0.04
    assert any(n.startswith("*ST") for n in names) and any(n.startswith("ST") for n in names)
    assert all(s.st == is_st(s.name) for s in universe)
    assert by_code["302132"].board == "CHINEXT"  # ChiNext's 302xxx range is listed
    new = [s for s in universe if is_limit_free(s.name, s.board, TRADE_DATE)]
    assert 3 <= len(new) <= 25  # N (first day) and C (days 2-5) listings, no price limit
    assert {s.name[0] for s in new} == {"N", "C"}
    assert all(s.name[0] == "N" for s in new if s.board == "BJ")
    suspended = sum(s.suspended for s in universe) / len(universe)
    assert 0.005 <= suspended <= 0.015
    closes = sorted(s.prev_close for s in universe)
    assert closes[0] >= 150 and closes[-1] <= 180_000
    assert 800 <= closes[len(closes) // 2] <= 3000  # median around 10-20 yuan
    assert sum(c > 10_000 for c in closes) > 50  # a tail of expensive stocks


def test_deterministic_by_seed() -> None:
    assert build_universe(800, seed=7) == build_universe(800, seed=7)
    assert build_universe(800, seed=7) != build_universe(800, seed=8)


@pytest.mark.parametrize("count", [0, 1, 13, 50, 333, 5000, 5400, 12_000])
def test_allocation_sums_to_count(count: int) -> None:
    plan = allocate(count)
    assert sum(n for _, _, n in plan) == count
    assert all(0 <= n <= CODES_PER_PREFIX for _, _, n in plan)
    assert len(build_universe(count, seed=1)) == count


def test_too_many_stocks_rejected() -> None:
    with pytest.raises(ValueError, match="code space"):
        allocate(CODES_PER_PREFIX * len(PREFIX_WEIGHTS) + 1)


def test_walk_respects_limits_books_and_cumulative_fields() -> None:
    stocks = build_universe(400, seed=3)
    walk = MarketWalk(stocks, TRADE_DATE, seed=3)
    last = walk.step()
    seen_late_opener = False
    for _ in range(300):
        quotes = walk.step()
        for s, (up, down), prev, q in zip(stocks, walk.limits, last, quotes, strict=True):
            if is_limit_free(s.name, s.board, TRADE_DATE):  # a new listing: no daily limit
                assert (up, down) == (s.prev_close * 5, round(s.prev_close * 0.2))
            else:
                assert (up, down) == tuple(
                    round(x * 100)
                    for x in limit_prices(s.prev_close / 100, s.board, s.st, TRADE_DATE)
                )
            traded = q.price > 0
            if s.suspended or not traded:
                assert (q.open, q.price, q.high, q.low, q.volume, q.amount) == (0,) * 6
                seen_late_opener |= not s.suspended
            else:
                assert down <= q.low <= q.price <= q.high <= up
                assert down <= q.open <= up
                assert q.volume > 0 and q.volume % 100 == 0
                # amount ~ volume x price
                assert q.low * q.volume <= q.amount <= q.high * q.volume
            assert q.volume >= prev.volume and q.amount >= prev.amount
            if traded:
                assert q.high >= prev.high and (prev.low == 0 or q.low <= prev.low)
            bids = [p for v, p in q.bids if p]
            asks = [p for v, p in q.asks if p]
            if s.suspended:
                assert not bids and not asks
                continue
            assert bids == sorted(bids, reverse=True) and len(set(bids)) == len(bids)
            assert asks == sorted(asks) and len(set(asks)) == len(asks)
            assert all(down <= p <= up for p in bids + asks)
            if bids and asks:
                assert bids[0] < asks[0]
            assert all((v > 0) == (p > 0) for v, p in q.bids + q.asks)
        last = quotes
    assert seen_late_opener


def test_some_stocks_sit_at_their_limits() -> None:
    stocks = build_universe(5000, seed=42)
    walk = MarketWalk(stocks, TRADE_DATE, seed=42)
    quotes = walk.step()
    at_up = [q for q, (up, _) in zip(quotes, walk.limits, strict=True) if q.price == up]
    at_down = [q for q, (_, down) in zip(quotes, walk.limits, strict=True) if q.price == down]
    assert 10 <= len(at_up) <= 100 and 5 <= len(at_down) <= 100
    # Sealed at limit-up: nobody sells below the limit, so the ask side is empty.
    assert all(q.asks[0] == (0, 0) and q.bids[0][1] == q.price for q in at_up)
    assert all(q.bids[0] == (0, 0) and q.asks[0][1] == q.price for q in at_down)


def test_without_late_openers_everyone_trades_at_once() -> None:
    stocks = build_universe(300, seed=5)
    quotes = MarketWalk(stocks, TRADE_DATE, seed=5, late_openers=False).step()
    assert all((q.price > 0) != s.suspended for s, q in zip(stocks, quotes, strict=True))


def test_new_listings_trade_beyond_the_board_limit() -> None:
    """N-prefixed first-day listings have no price limit: they open far above
    their issue price (prev_close), beyond any board's limit-up."""
    stocks = build_universe(5000, seed=42)
    walk = MarketWalk(stocks, TRADE_DATE, seed=42, late_openers=False)
    quotes = walk.step()
    firsts = [(s, q) for s, q in zip(stocks, quotes, strict=True)
              if s.name.startswith("N") and not s.suspended]  # fmt: skip
    assert firsts
    for s, q in firsts:
        up, _ = limit_prices(s.prev_close / 100, s.board, False, TRADE_DATE)
        assert q.price > round(up * 100), (s, q)


def test_pre_open_and_hold_snapshots_trade_nothing() -> None:
    stocks = build_universe(300, seed=5)
    walk = MarketWalk(stocks, TRADE_DATE, seed=5)
    for s, q in zip(stocks, walk.indicative(), strict=True):
        assert (q.price, q.volume, q.open) == (0, 0, 0)
        assert (q.bids[0][0] > 0) != s.suspended  # orders in the book; a halt has none
    traded = walk.step()
    assert walk.hold() == traded
