"""Market statistics recounted from scratch: the reference the incremental
:class:`streams.market_stats.MarketStats` (and merged partials) must equal."""

from __future__ import annotations

from collections.abc import Iterable

from schemas.exchange import MARKETS_AND_ALL
from streams.market_stats import (
    _AMOUNT_SCALE,
    _PCT_SCALE,
    BOARDS,
    Counts,
    Quote,
    RankEntry,
    Record,
    _record,
)


def recompute(quotes: Iterable[Quote], top_n: int = 10, *, now_ms: int = 0) -> dict[str, Record]:
    """The same records as MarketStats, from scratch: a reference for tests.

    Takes the newest quote per code (a later one with an equal exchange_ts
    wins, as in ``update``), keeps those of the newest trade date, then counts
    and fully sorts.
    """
    latest: dict[str, Quote] = {}
    current = ""
    for q in quotes:
        current = max(current, q["trade_date"])
        held = latest.get(q["code"])
        if held is None or q["exchange_ts"] >= held["exchange_ts"]:
            latest[q["code"]] = q

    def move(q: Quote) -> int:
        prev = round(q["prev_close"] * 100)
        return 0 if prev <= 0 else round(q["price"] * 100) - prev

    out: dict[str, Record] = {}
    for market in MARKETS_AND_ALL:
        qs = [
            q
            for q in latest.values()
            if market in ("ALL", q["market"]) and q["trade_date"] == current
        ]
        live = [q for q in qs if not q["suspended"]]
        ranked = [q for q in live if q["traded"]]
        totals = {
            "stocks": len(qs),
            "advancers": sum(1 for q in ranked if move(q) > 0),
            "decliners": sum(1 for q in ranked if move(q) < 0),
            "limit_up": sum(1 for q in live if q["at_limit_up"]),
            "limit_down": sum(1 for q in live if q["at_limit_down"]),
            "suspended": len(qs) - len(live),
            "traded": len(ranked),
            "volume": sum(q["volume"] for q in qs),
            "amount_cents": sum(round(q["amount"] * _AMOUNT_SCALE) for q in qs),
            "change_sum": sum(round(q["change_pct"] * _PCT_SCALE) for q in ranked),
        }

        def entry(q: Quote) -> RankEntry:
            return RankEntry(q["code"], q["name"], q["price"], q["change_pct"], q["amount"])

        by_gain = sorted(ranked, key=lambda q: (-q["change_pct"], q["code"]))
        by_loss = sorted(ranked, key=lambda q: (q["change_pct"], q["code"]))
        by_amount = sorted(
            (q for q in live if q["amount"] > 0), key=lambda q: (-q["amount"], q["code"])
        )
        tops = {
            "top_gainers": [entry(q) for q in by_gain[:top_n]],
            "top_losers": [entry(q) for q in by_loss[:top_n]],
            "top_turnover": [entry(q) for q in by_amount[:top_n]],
        }
        boards: list[Record] = []
        for board in BOARDS:
            on = [q for q in qs if q["board"] == board]
            if not on:
                continue
            traded = [q for q in on if q["traded"] and not q["suspended"]]
            up = sum(1 for q in traded if move(q) > 0)
            down = sum(1 for q in traded if move(q) < 0)
            boards.append({
                "board": board, "stocks": len(on), "advancers": up, "decliners": down,
                "unchanged": len(traded) - up - down,
                "suspended": sum(1 for q in on if q["suspended"]),
                "not_traded_yet": sum(1 for q in on if not q["traded"] and not q["suspended"]),
                "limit_up": sum(1 for q in on if q["at_limit_up"] and not q["suspended"]),
                "limit_down": sum(1 for q in on if q["at_limit_down"] and not q["suspended"]),
            })  # fmt: skip
        out[market] = _record(market, Counts(**totals), tops, now_ms, boards)
    return out
