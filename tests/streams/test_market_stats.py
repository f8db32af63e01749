"""streams.market_stats: definitions, newer-wins, incremental == recompute, partial merge."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from schemas.serde import SingleObjectCodec
from streams.market_stats import (
    MARKETS_AND_ALL,
    PARTIAL_JSON,
    CompiledMarketStats,
    MarketStats,
    PartialState,
    PartialStateError,
    Stats,
    merge_partials,
)
from streams.parse import parse_record
from tests.feed_lines import sse_line
from tests.native import native_or_skip
from tests.streams.stats_reference import recompute

STATS_CODEC = SingleObjectCodec("market_stats")
QUOTE_CODEC = SingleObjectCodec("quote")
T0 = 1_772_415_000_000  # 2026-03-02 09:30 Asia/Shanghai
PREFIX = {"SH": ("sh", "60"), "SZ": ("sz", "00"), "BJ": ("bj", "92")}

MakeBook = Callable[[], Stats]


def compiled() -> CompiledMarketStats:
    return CompiledMarketStats(native_or_skip())


@pytest.fixture(params=[MarketStats, compiled], ids=["python", "compiled"])
def book(request: pytest.FixtureRequest) -> MakeBook:
    """Makes the book under test: every figure holds for the reference
    (:class:`MarketStats`) and the compiled book alike."""
    make: MakeBook = request.param
    return make


def quote(
    code: str,
    ts: int = T0,
    change_pct: float = 0.0,
    *,
    market: str = "SH",
    price: float = 10.0,
    volume: int = 1000,
    amount: float = 10_000.0,
    traded: bool = True,
    suspended: bool = False,
    at_limit_up: bool = False,
    at_limit_down: bool = False,
    name: str | None = None,
    prev_close: float | None = None,
    trade_date: str = "2026-03-02",
    board: str | None = None,
) -> dict[str, Any]:
    """A complete Quote record (quote.v2.avsc); only the fields stats read vary.

    prev_close defaults to the one ``change_pct`` implies (to the cent).
    """
    if prev_close is None:
        prev_close = round(price / (1 + change_pct / 100), 2)
    return {
        "symbol": PREFIX[market][0] + code, "code": code, "market": market,
        "board": board or ("BJ" if market == "BJ" else "MAIN"), "name": name or f"A{code}",
        "is_st": False, "exchange_ts": ts, "trade_date": trade_date, "open": price,
        "prev_close": prev_close, "price": price, "high": price, "low": price, "bid": price,
        "ask": price, "volume": volume, "amount": amount, "bid_prices": [],
        "bid_volumes": [], "ask_prices": [], "ask_volumes": [], "change": 0.0,
        "change_pct": change_pct, "limit_up": price * 1.1, "limit_down": price * 0.9,
        "traded": traded, "suspended": suspended, "at_limit_up": at_limit_up,
        "at_limit_down": at_limit_down, "receive_ts": ts, "process_ts": ts,
        "limit_free": False, "not_traded_yet": not traded and not suspended,
        "phase": "continuous", "avg_price": 0.0, "amplitude": 0.0, "order_imbalance": 0.0,
    }  # fmt: skip


def test_quote_helper_matches_schema() -> None:
    q = quote("600000", change_pct=1.5)
    assert QUOTE_CODEC.decode(QUOTE_CODEC.encode(q)) == q


def test_definitions(book: MakeBook) -> None:
    s = book()
    s.update(quote("600001", change_pct=2.0, amount=5_000.5, volume=500))
    s.update(quote("600002", change_pct=-1.0, amount=7_000.25, volume=700))
    s.update(quote("600003", change_pct=0.0, amount=100.0, volume=10))  # flat
    s.update(quote("600004", traded=False, volume=0, amount=0.0))  # not traded yet
    s.update(quote("600005", suspended=True, traded=False, volume=0, amount=0.0, change_pct=0.0))
    s.update(quote("600006", change_pct=10.0, at_limit_up=True, amount=1e6, volume=9))
    s.update(quote("600007", change_pct=-10.0, at_limit_down=True, amount=2e5, volume=1))
    s.update(quote("000001", change_pct=3.0, market="SZ", amount=1.0, volume=1))
    r = s.snapshot("SH", now_ms=123)
    assert r["market"] == "SH" and r["ts"] == 123
    assert (r["stocks"], r["advancers"], r["decliners"], r["unchanged"]) == (7, 2, 2, 1)
    assert (r["limit_up"], r["limit_down"], r["suspended"], r["not_traded_yet"]) == (1, 1, 1, 1)
    assert r["volume"] == 500 + 700 + 10 + 9 + 1
    assert r["amount"] == pytest.approx(5_000.5 + 7_000.25 + 100.0 + 1e6 + 2e5)
    assert r["avg_change_pct"] == pytest.approx((2.0 - 1.0 + 0.0 + 10.0 - 10.0) / 5)
    assert [e["code"] for e in r["top_gainers"]] == ["600006", "600001", "600003", "600002",
                                                     "600007"]  # fmt: skip
    assert [e["code"] for e in r["top_losers"]][:2] == ["600007", "600002"]
    assert [e["code"] for e in r["top_turnover"]] == ["600006", "600007", "600002", "600001",
                                                      "600003"]  # fmt: skip
    assert r["top_gainers"][0] == {
        "code": "600006", "name": "A600006", "price": 10.0, "change_pct": 10.0, "amount": 1e6,
    }  # fmt: skip
    a = s.snapshot("ALL", now_ms=123)
    assert (a["market"], a["stocks"], a["advancers"], a["volume"]) == ("ALL", 8, 3, 1221)
    assert [e["code"] for e in a["top_gainers"]][:3] == ["600006", "000001", "600001"]
    for rec in (r, a, s.snapshot("BJ", now_ms=1)):
        assert STATS_CODEC.decode(STATS_CODEC.encode(rec)) == rec


def breadth(r: dict[str, Any]) -> int:
    keys = ("advancers", "decliners", "unchanged", "suspended", "not_traded_yet")
    return sum(r[k] for k in keys)


def test_breadth_fields_add_up_to_stocks(book: MakeBook) -> None:
    """Suspended and not-yet-traded stocks are neither advancers, decliners nor
    unchanged: the five breadth fields partition ``stocks``."""
    s = book()
    s.update(quote("600001", change_pct=1.0))
    s.update(quote("600002", change_pct=0.0))
    s.update(quote("600003", traded=False, volume=0, amount=0.0))
    s.update(quote("600004", suspended=True, traded=False, volume=0, amount=0.0))
    r = s.snapshot("SH", now_ms=0)
    assert (r["unchanged"], r["suspended"], r["not_traded_yet"]) == (1, 1, 1)
    assert breadth(r) == r["stocks"] == 4


def test_breadth_per_board(book: MakeBook) -> None:
    """Terminals show breadth per board (main boards, STAR, ChiNext, BJ): each
    board's fields add up to its stocks, and ALL adds the markets' boards."""
    s = book()
    s.update(quote("600001", change_pct=1.0))
    s.update(quote("688001", change_pct=-2.0, board="STAR"))
    s.update(quote("688002", traded=False, volume=0, amount=0.0, board="STAR"))
    s.update(quote("000001", change_pct=3.0, market="SZ"))
    s.update(quote("920001", suspended=True, traded=False, volume=0, amount=0.0, market="BJ"))
    stats = s.snapshot_all(now_ms=0)
    sh = {b["board"]: b for b in stats["SH"]["boards"]}
    assert list(sh) == ["MAIN", "STAR"]
    star = sh["STAR"]
    assert (star["stocks"], star["decliners"], star["not_traded_yet"]) == (2, 1, 1)
    every = {b["board"]: b for b in stats["ALL"]["boards"]}
    assert every["MAIN"]["stocks"] == 2 and every["MAIN"]["advancers"] == 2
    assert every["BJ"]["suspended"] == 1
    for b in every.values():
        assert breadth(b) == b["stocks"]
    assert STATS_CODEC.decode(STATS_CODEC.encode(stats["ALL"])) == stats["ALL"]


def test_new_listing_is_no_limit_up_count(book: MakeBook) -> None:
    """N中芯 at 82.92 on prev_close 27.46: no price limit on its first day, so
    it is an advancer but not counted at limit-up."""
    line = sse_line(symbol="sh688981", name="N中芯", prev_close="27.46", open="82.92",
                    price="82.92", high="82.92", low="82.92")  # fmt: skip
    s = book()
    s.update(parse_record(line, receive_ts=0, process_ts=0))
    r = s.snapshot("SH", now_ms=0)
    assert (r["advancers"], r["limit_up"]) == (1, 0)


def test_advancers_count_price_against_prev_close_not_rounded_pct(book: MakeBook) -> None:
    """1500.00 -> 1500.05 is +0.0033%, shown as change_pct 0.0, and is an
    advancer: exchanges count 上涨家数 by price, not by the rounded percent."""
    s = book()
    s.update(quote("600519", change_pct=0.0, price=1500.05, prev_close=1500.0))
    s.update(quote("600520", change_pct=0.0, price=1499.95, prev_close=1500.0))
    r = s.snapshot("SH", now_ms=0)
    assert (r["advancers"], r["decliners"], r["unchanged"]) == (1, 1, 0)


def test_only_quotes_of_the_current_trade_date_count(book: MakeBook) -> None:
    """A stock that stopped ticking yesterday does not carry yesterday's
    cumulative volume (or its place in the breadth) into today's statistics."""
    s = book()
    s.update(quote("600001", T0, 1.0, volume=5_000_000, amount=5e7, trade_date="2026-03-02"))
    s.update(quote("600002", T0, 1.0, volume=1_000, amount=1e4, trade_date="2026-03-02"))
    s.update(quote("600002", T0 + 86_400_000, -1.0, volume=200, amount=2e3,
                   trade_date="2026-03-03"))  # fmt: skip
    r = s.snapshot("SH", now_ms=0)
    assert (r["stocks"], r["volume"], r["amount"], r["decliners"]) == (1, 200, 2e3, 1)
    assert [e["code"] for e in r["top_turnover"]] == ["600002"]
    assert r == recompute(
        [quote("600001", T0, 1.0, volume=5_000_000, amount=5e7),
         quote("600002", T0 + 86_400_000, -1.0, volume=200, amount=2e3,
               trade_date="2026-03-03")], now_ms=0,
    )["SH"]  # fmt: skip
    s.update(quote("600001", T0 + 86_400_000 + 3000, 2.0, volume=10, amount=100.0,
                   trade_date="2026-03-03"))  # fmt: skip
    assert s.snapshot("SH", now_ms=0)["volume"] == 210
    assert s.forget(["600001", "600002"]) == 2 and s.snapshot("SH", now_ms=0)["stocks"] == 0


def test_empty_market_and_unknown_market(book: MakeBook) -> None:
    s = book()
    r = s.snapshot("BJ", now_ms=5)
    assert r["stocks"] == 0 and r["avg_change_pct"] == 0.0 and r["top_gainers"] == []
    assert STATS_CODEC.decode(STATS_CODEC.encode(r)) == r
    with pytest.raises(ValueError):
        s.snapshot("HK", now_ms=5)  # type: ignore[arg-type]


def test_update_replaces_and_older_quotes_are_ignored(book: MakeBook) -> None:
    s = book()
    s.update(quote("600001", T0 + 3000, change_pct=2.0, volume=100))
    s.update(quote("600001", T0 + 6000, change_pct=-1.0, volume=300))
    s.update(quote("600001", T0 + 3000, change_pct=5.0, volume=100))  # replay: ignored
    r = s.snapshot("SH", now_ms=0)
    assert (r["stocks"], r["advancers"], r["decliners"], r["volume"]) == (1, 0, 1, 300)
    assert s.replays_ignored == 1 and len(s) == 1
    s.update(quote("600001", T0 + 6000, change_pct=1.0, volume=300))  # same ts: newest wins
    assert s.snapshot("SH", now_ms=0)["advancers"] == 1


def test_ties_are_broken_by_code(book: MakeBook) -> None:
    s = book()
    for code in ("600003", "600001", "600002"):
        s.update(quote(code, change_pct=1.0, amount=50.0))
    r = s.snapshot("SH", top_n=2, now_ms=0)
    assert [e["code"] for e in r["top_gainers"]] == ["600001", "600002"]
    assert [e["code"] for e in r["top_losers"]] == ["600001", "600002"]
    assert [e["code"] for e in r["top_turnover"]] == ["600001", "600002"]


def _random_quotes(
    rnd: random.Random, n_codes: int, n_updates: int, new_day_at: int | None = None
) -> list[dict[str, Any]]:
    """A stream of quotes over several markets, with replays of old quotes.

    With ``new_day_at``, quotes after that many updates are of the next trade date.
    """
    codes = [(m, f"{PREFIX[m][1]}{i:04d}") for m in ("SH", "SZ", "BJ") for i in range(n_codes)]
    sent: list[dict[str, Any]] = []
    clock = {c: T0 for c in codes}
    for _ in range(n_updates):
        if sent and rnd.random() < 0.15:
            sent.append(rnd.choice(sent))  # a replay: same or older exchange_ts
            continue
        market, code = rnd.choice(codes)
        clock[(market, code)] += rnd.choice((0, 1000, 3000))  # equal ts happens too
        suspended = rnd.random() < 0.05
        traded = not suspended and rnd.random() < 0.9
        pct = round(rnd.uniform(-10, 10), 2) if traded else 0.0
        pct = rnd.choice((pct, pct, 0.0, 10.0, -10.0))
        volume = rnd.randint(0, 10**9) if traded else 0
        day = "2026-03-03" if new_day_at is not None and len(sent) >= new_day_at else "2026-03-02"
        if day == "2026-03-03":
            clock[(market, code)] = max(clock[(market, code)], T0 + 86_400_000)
        sent.append(
            quote(
                code, clock[(market, code)], pct, market=market, trade_date=day,
                price=round(rnd.uniform(1, 300), 2), volume=volume,
                amount=round(volume * rnd.uniform(1, 300), 2) if traded else 0.0,
                traded=traded, suspended=suspended,
                at_limit_up=traded and pct >= 10.0, at_limit_down=traded and pct <= -10.0,
            )
        )  # fmt: skip
    return sent


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_incremental_equals_recompute(seed: int, book: MakeBook) -> None:
    rnd = random.Random(seed)
    quotes = _random_quotes(rnd, n_codes=40, n_updates=3000, new_day_at=2500)
    s = book()
    checkpoints = [*sorted(rnd.sample(range(1, len(quotes) + 1), 6)), len(quotes)]
    done = 0
    for upto in checkpoints:
        for q in quotes[done:upto]:
            s.update(q)
        done = upto
        top_n = rnd.choice((1, 5, 10, 200))
        expected = recompute(quotes[:upto], top_n, now_ms=upto)
        assert s.snapshot_all(top_n, now_ms=upto) == expected
        for market in MARKETS_AND_ALL:
            assert s.snapshot(market, top_n, now_ms=upto) == expected[market]
            assert breadth(expected[market]) == expected[market]["stocks"]
    assert s.replays_ignored > 0
    final = s.snapshot_all(10, now_ms=1)
    assert final["ALL"]["stocks"] == sum(final[m]["stocks"] for m in ("SH", "SZ", "BJ"))
    for rec in final.values():
        assert STATS_CODEC.decode(STATS_CODEC.encode(rec)) == rec


@pytest.mark.parametrize(("seed", "shards"), [(11, 1), (12, 2), (13, 3), (14, 7)])
def test_merged_partials_equal_recompute(seed: int, shards: int, book: MakeBook) -> None:
    rnd = random.Random(seed)
    quotes = _random_quotes(rnd, n_codes=30, n_updates=2500)
    workers = [book() for _ in range(shards)]
    owner = {q["code"]: rnd.randrange(shards) for q in quotes}  # disjoint, like partitions
    for q in quotes:
        workers[owner[q["code"]]].update(q)
    # partials travel as JSON (through Redis)
    partials = [as_read_back(w.partial_state(10, now_ms=7)) for w in workers]
    for top_n in (1, 3, 10):
        merged = merge_partials(partials, top_n=top_n, now_ms=99)
        assert merged == recompute(quotes, top_n, now_ms=99)
    only_sz = merge_partials(partials, markets=("SZ",), top_n=5, now_ms=1)
    assert list(only_sz) == ["SZ"] and only_sz["SZ"] == recompute(quotes, 5, now_ms=1)["SZ"]


def as_read_back(partial: PartialState) -> PartialState:
    """``partial`` through its stored JSON, as the merging worker reads it."""
    return msgspec.json.decode(PARTIAL_JSON.encode(partial), type=PartialState)


def test_partial_state_is_compact_and_checked(book: MakeBook) -> None:
    s = book()
    for i in range(500):
        s.update(quote(f"60{i:04d}", change_pct=i / 100, amount=float(i)))
    p = s.partial_state(5, now_ms=42)
    assert p.v == 1 and p.ts == 42 and p.top_n == 5
    assert len(p.markets["SH"].top_gainers) == 5  # not every stock
    assert len(PARTIAL_JSON.encode(p)) < 4000
    with pytest.raises(PartialStateError):
        merge_partials([p], top_n=6, now_ms=0)
    with pytest.raises(PartialStateError):
        merge_partials([msgspec.structs.replace(p, v=99)], now_ms=0)
    with pytest.raises(ValueError):
        merge_partials([p], markets=("HK",), top_n=5, now_ms=0)  # type: ignore[arg-type]
    assert merge_partials([], top_n=5, now_ms=0)["ALL"]["stocks"] == 0
    none = merge_partials([p], top_n=0, now_ms=0)["ALL"]
    assert none["top_gainers"] == none["top_losers"] == none["top_turnover"] == []
    assert s.snapshot("ALL", top_n=0, now_ms=0)["top_turnover"] == []


def test_a_quiet_markets_partial_is_kept_not_walked_again(
    monkeypatch: pytest.MonkeyPatch, book: MakeBook
) -> None:
    """partial_state computes again only the markets a quote, a forget or a new day
    changed since the last call; what it returns is always what a walk would give."""
    rnd = random.Random(31)
    quotes = _random_quotes(rnd, n_codes=20, n_updates=3000, new_day_at=2200)
    s = book()
    walked: list[str] = []
    walk = s._market_partial
    monkeypatch.setattr(s, "_market_partial", lambda m, n: walked.append(m) or walk(m, n))

    def check(top_n: int = 10) -> list[str]:
        walked.clear()
        got = s.partial_state(top_n, now_ms=5)
        assert got.markets == {m: walk(m, top_n) for m in ("SH", "SZ", "BJ")}
        return sorted(walked)

    assert check() == ["BJ", "SH", "SZ"]
    for i, q in enumerate(quotes):
        s.update(q)
        if i % 97 == 0:
            check()
    check()
    assert check() == []  # nothing changed since
    s.update({**quotes[-1], "exchange_ts": quotes[-1]["exchange_ts"] + 1})
    assert check() == [quotes[-1]["market"]]
    assert check(3) == ["BJ", "SH", "SZ"]  # another top-N
    sz = next(q["code"] for q in quotes if q["market"] == "SZ")
    assert s.forget([sz]) == 1 and check(3) == ["SZ"]
    s.update({**quotes[0], "exchange_ts": 0})  # a replay older than its stock's newest: no change
    assert check(3) == ([] if quotes[0]["code"] != sz else [quotes[0]["market"]])
    s.update(quote("600001", T0 + 2 * 86_400_000, trade_date="2026-03-04"))  # a new day
    assert check(3) == ["BJ", "SH", "SZ"]


def test_forget_drops_a_revoked_partitions_stocks(book: MakeBook) -> None:
    rnd = random.Random(21)
    quotes = _random_quotes(rnd, n_codes=20, n_updates=1000)
    s = book()
    for q in quotes:
        s.update(q)
    gone = {q["code"] for q in quotes if q["code"].endswith(("1", "7"))}
    assert s.forget([*gone, "999999"]) == len(gone)
    kept = [q for q in quotes if q["code"] not in gone]
    assert s.snapshot_all(10, now_ms=0) == recompute(kept, 10, now_ms=0)


def test_a_code_in_two_partials_is_ranked_once(book: MakeBook) -> None:
    """While partitions move, one stock may sit in two workers' partials."""
    a, b = book(), book()
    a.update(quote("600001", T0, change_pct=5.0))
    b.update(quote("600001", T0 + 3000, change_pct=6.0))
    b.update(quote("600002", T0, change_pct=1.0))
    merged = merge_partials([a.partial_state(), b.partial_state()], top_n=10, now_ms=0)
    assert [e["code"] for e in merged["SH"]["top_gainers"]] == ["600001", "600002"]
