"""A whole simulated trading day through the stream worker's derive step.

The simulator's day (producers.quote_lines.SnapshotSource) runs from the
09:15 call auction to after the close (6 s snapshots, to keep the test
short; every minute still has ticks), with a ChiNext 302xxx
code, an N (first day) and a C (day 2-5) listing and a halted stock; every
line goes through streams.parse and the Processor's stats/candles/alerts.
The exchange facts checked: a traded stock gets 240 one-minute candles
(09:30-11:29, 13:00-14:59) whose volumes add up to the day's final
cumulative volume, the late-stamped 11:30:0x / 15:00:03 prints included; a
halted stock gets none; new listings never touch a limit.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

import pytest

from producers.quote_lines import SnapshotSource
from producers.universe import build_listing
from schemas.exchange import shanghai_datetime
from streams.parse import parse_record
from streams.pipeline import Processor
from streams.settings import StreamsSettings

DAY = dt.date(2026, 11, 23)
PLAN = [("SH", "600", 3), ("SH", "688", 3), ("SZ", "000", 2), ("SZ", "300", 2),
        ("SZ", "302", 1), ("BJ", "920", 2)]  # fmt: skip
#: The day's 240 candle labels (minute starts), local time.
MINUTES = [
    *((dt.datetime(2026, 11, 23, 9, 30) + dt.timedelta(minutes=m)).time() for m in range(120)),
    *((dt.datetime(2026, 11, 23, 13, 0) + dt.timedelta(minutes=m)).time() for m in range(120)),
]


def _listing() -> tuple[Any, ...]:
    stocks = list(build_listing(PLAN, seed=9))
    for i, s in enumerate(stocks):
        if s.code == "302132":
            continue
        stocks[i] = replace(s, suspended=False)
    stocks[1] = replace(stocks[1], name="N" + stocks[1].name[:3])  # main board, first day
    stocks[4] = replace(stocks[4], name="C" + stocks[4].name[:3])  # STAR, day 2-5
    stocks[2] = replace(stocks[2], suspended=True)  # halted all day
    return tuple(stocks)


def test_a_simulated_day_gives_240_candles_whose_volumes_add_up() -> None:
    stocks = _listing()
    # a naive start is Shanghai time; 09:10 is before the call auction: 09:15
    source = SnapshotSource(stocks, dt.datetime(2026, 11, 23, 9, 10), 6.0, seed=9)
    processor = Processor(StreamsSettings(metrics_port=0), publish_normalized=False)
    closed: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    last: dict[str, dict[str, Any]] = {}
    phases: Counter[str] = Counter()
    first_trade: dict[str, int] = {}
    stamps: list[str] = []
    while source.clock.time() < dt.time(15, 2):
        stamps.append(source.clock.strftime("%H:%M:%S"))
        snapshot = source.next()
        quotes = [parse_record(line, 0, 0) for line in snapshot.data.splitlines()]
        for q in quotes:
            assert q["trade_date"] == DAY.isoformat()
            phases[q["phase"]] += 1
            if q["traded"]:
                first_trade.setdefault(q["code"], q["exchange_ts"])
            last[q["code"]] = q
        done, _, fired = processor.derive([(q, 0) for q in quotes])
        closed += (c.as_record() for c in done)
        alerts += (a.as_record() for a in fired)
    closed += (c.as_record() for c in processor.candles.close_all())

    assert stamps[0] == "09:15:00" and "09:25:00" in stamps
    assert "11:30:02" in stamps and "15:00:03" in stamps and stamps[-1] > "15:01:00"
    assert not any("11:30:03" <= t < "13:00:00" for t in stamps)  # lunch is skipped
    assert set(phases) == {"opening_auction", "continuous", "midday_break", "closing_auction",
                           "closed"}  # fmt: skip
    by_code: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in closed:
        by_code[c["code"]].append(c)
    halted = stocks[2].code
    assert halted not in by_code and last[halted]["suspended"] is True
    for s in stocks:
        if s.suspended:
            continue
        q = last[s.code]
        mine = by_code[s.code]
        assert sum(c["volume"] for c in mine) == q["volume"], s.code
        assert sum(c["amount"] for c in mine) == pytest.approx(q["amount"]), s.code
        labels = [shanghai_datetime(c["minute_ts"]).time() for c in mine]
        opened = shanghai_datetime(first_trade[s.code]).time()
        # every minute from the first trade (the 09:25 print folds into 09:30) on
        assert labels == [m for m in MINUTES if m >= min(opened, dt.time(9, 30)).replace(second=0)]
        if opened < dt.time(9, 31):
            assert len(mine) == 240, s.code
    assert sum(len(v) == 240 for v in by_code.values()) >= len(stocks) - 3
    assert all(last[s.code]["phase"] == "closed" for s in stocks)
    stats = processor.stats.snapshot("ALL", now_ms=0)
    breadth = ("advancers", "decliners", "unchanged", "suspended", "not_traded_yet")
    assert sum(stats[k] for k in breadth) == stats["stocks"] == len(stocks)
    assert stats["suspended"] == 1
    new = {stocks[1].code, stocks[4].code}
    assert all(last[c]["limit_free"] for c in new)
    assert not [a for a in alerts if a["code"] in new and a["kind"].startswith("LIMIT")]
    assert last["302132"]["board"] == "CHINEXT" and "302132" in by_code
