"""Deterministic raw-topic records from the feed simulator, for benchmarks and tests.

The lines come from the feed simulator's own universe, random walk and
renderer (:mod:`producers.universe`, :mod:`producers.quote_lines`), so there
is one renderer of feed lines in the code base: Shanghai/Shenzhen ``$``
lines and Beijing JSON lines over a few snapshots 3 s apart, plus an optional
fraction of bad records whose dead-letter reasons are known in advance.
Output: ``(key, value, headers)`` tuples as the receiver would put them on
``hq.ticks.raw``. Never talks to Kafka.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import replace
from typing import Final

from producers.quote_lines import MALFORMED_KINDS, MalformedKind, Stamp, malformed_line, render
from producers.universe import MarketWalk, Stock, allocate, build_listing
from schemas.dlq import DlqReason
from schemas.exchange import SHANGHAI_TZ, Market
from schemas.topics import Headers, LineKind, raw_headers

RawLine = tuple[bytes, bytes, Headers]

#: One code prefix per board (SH main, STAR, SZ main, ChiNext, BJ), each given a
#: stock before the rest follow the real listing mix, so a handful covers them all.
BOARD_PREFIXES: Final[tuple[tuple[Market, str], ...]] = (
    ("SH", "600"),
    ("SH", "688"),
    ("SZ", "000"),
    ("SZ", "300"),
    ("BJ", "920"),
)

#: The dead-letter reason streams.parse gives each malformed kind on a
#: Shanghai/Shenzhen stock. Not on a Beijing one (a junk number there is a
#: missing_field, a bad $-line date a bad_symbol), so only SH/SZ lines go bad.
REASON_OF_KIND: Final[dict[MalformedKind, DlqReason]] = {
    "field_count": "wrong_field_count",
    "non_numeric": "not_a_number",
    "invalid_json": "invalid_json",
    "bad_symbol": "bad_symbol",
    "negative": "negative_value",
    "high_low": "high_below_low",
    "bad_datetime": "bad_datetime",
}


def universe(n: int, seed: int = 7) -> tuple[Stock, ...]:
    """``n`` stocks in code order, covering every board from ``n`` = 5 up.

    One stock per board first, then the real listing mix. None is suspended,
    so every stock trades and tests can expect a traded quote and a candle
    from each one.
    """
    first = BOARD_PREFIXES[:n]
    plan = [(m, p, k + ((m, p) in first)) for m, p, k in allocate(n - len(first))]
    return tuple(replace(stock, suspended=False) for stock in build_listing(plan, seed))


def session_start_ms(date: str = "2026-11-23", hhmmss: str = "10:00:00") -> int:
    """Epoch ms of ``date`` at ``hhmmss``, exchange (Shanghai) time."""
    when = dt.datetime.fromisoformat(f"{date}T{hhmmss}").replace(tzinfo=SHANGHAI_TZ)
    return int(when.timestamp() * 1000)


def generate(
    stocks: int,
    snapshots: int,
    *,
    bad_fraction: float = 0.0,
    seed: int = 7,
    start_ms: int | None = None,
    interval_ms: int = 3000,
    receive_ts: int | None = None,
) -> tuple[list[RawLine], dict[str, int]]:
    """Lines of ``snapshots`` full snapshots; also returns the bad lines per reason.

    Each snapshot has every stock once, in shuffled order, stamped exactly
    ``start_ms + k * interval_ms`` (no session clamping, unlike the simulator's
    clock). About ``bad_fraction`` of the Shanghai/Shenzhen lines are replaced
    by a malformed record of a uniformly drawn kind. The key is the stock's
    code even on a bad line (where the receiver may find none: callers want a
    key on every record); ``receive_ts`` defaults to the line's own time.
    """
    rng = random.Random(seed)
    start = start_ms if start_ms is not None else session_start_ms()
    listing = universe(stocks, seed)
    trade_date = dt.datetime.fromtimestamp(start // 1000, SHANGHAI_TZ).date()
    walk = MarketWalk(listing, trade_date, seed, late_openers=False)
    lines: list[RawLine] = []
    bad: dict[str, int] = {}
    for snap in range(snapshots):
        ts = start + snap * interval_ms
        stamp = Stamp.of_ms(ts)
        recv = str(receive_ts if receive_ts is not None else ts).encode()
        order = list(enumerate(walk.step()))
        rng.shuffle(order)
        for i, quote in order:
            stock = listing[i]
            if bad_fraction and stock.market != "BJ" and rng.random() < bad_fraction:
                kind = rng.choice(MALFORMED_KINDS)
                value = malformed_line(kind, stock, quote, stamp, rng).encode()
                reason = REASON_OF_KIND[kind]
                bad[reason] = bad.get(reason, 0) + 1
            else:
                value = render(stock, quote, stamp).encode()
            # The receiver tells the formats apart by the first byte alone.
            line_kind: LineKind = "bse_json" if value[:1] == b"{" else "sse_szse"
            lines.append((stock.code.encode(), value, raw_headers(line_kind, recv, b"bench")))
    return lines, bad
