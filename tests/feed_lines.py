"""Vendor feed lines for tests, written by hand rather than by the simulator's renderer.

Two formats (shared/spec/feed-protocol.md): Shanghai/Shenzhen quotes are one
line of 33 ``$``-separated fields, Beijing quotes one JSON object. ``sse_line`` and
``bse_line`` build a full, valid record (平安银行 and 颖泰生物 mid-afternoon)
whose every field can be overridden by name, for parser tests; ``sh_line`` and
``bj_line`` are short forms by stock code for tests that only move lines around.
Independent of producers.quote_lines on purpose, so a format slip there fails.
"""

from __future__ import annotations

from typing import Any

import orjson

Book = dict[str, list[tuple[int, str]]]
"""Five (volume, price) levels per side, ``"bid"`` and ``"ask"``."""

BOOK: Book = {
    "bid": [(1200, "11.04"), (3400, "11.03"), (500, "11.02"), (7800, "11.01"), (9900, "11.00")],
    "ask": [(1500, "11.05"), (2000, "11.06"), (300, "11.07"), (4100, "11.08"), (600, "11.09")],
}

FLAT_BOOK: Book = {"bid": [(1200, "11.04")] * 5, "ask": [(800, "11.05")] * 5}
"""The same volume and price on every level: for tests that never read the book."""

BSE: dict[str, Any] = {
    "symbol": "bj920819",
    "name": "颖泰生物",
    "lastPrice": 4.87,
    "preClose": 4.80,
    "open": 4.81,
    "high": 4.92,
    "low": 4.79,
    "volume": 1523400,
    "turnover": 7401234.0,
    "bidPrices": [4.86, 4.85, 4.84, 4.83, 4.82],
    "bidVolumes": [3100, 5000, 200, 900, 1200],
    "askPrices": [4.87, 4.88, 4.89, 4.90, 4.91],
    "askVolumes": [800, 2300, 400, 1000, 600],
    "timestamp": 1763881197000,
}
"""A valid Beijing JSON quote (颖泰生物), in the vendor's key order."""


def book_fields(book: Book) -> dict[str, str]:
    """A book as ``sse_line`` fields, in line order: ``bid1_volume``, ``bid1_price``, ..."""
    fields: dict[str, str] = {}
    for side in ("bid", "ask"):
        for i, (vol, px) in enumerate(book[side], start=1):
            fields[f"{side}{i}_volume"] = str(vol)
            fields[f"{side}{i}_price"] = px
    return fields


def sse_line(**over: Any) -> bytes:
    """A valid SH/SZ `$` line (平安银行 mid-afternoon); keyword overrides by field name.

    ``bid3_price="x"`` style keys override single book fields.
    """
    f: dict[str, Any] = {
        "symbol": "sz000001",
        "name": "平安银行",
        "open": "11.02",
        "prev_close": "11.00",
        "price": "11.05",
        "high": "11.10",
        "low": "10.98",
        "bid": "11.04",
        "ask": "11.05",
        "volume": "58342100",
        "amount": "643981234.50",
    }
    f.update(book_fields(BOOK))
    f["date"] = "2026-11-23"
    f["time"] = "14:59:57"
    f.update(over)
    return "$".join(str(v) for v in f.values()).encode()


def bse_line(drop: str | None = None, **over: Any) -> bytes:
    """A valid BJ JSON line (:data:`BSE`) with keys overridden, and ``drop`` left out."""
    obj = {**BSE, **over}
    if drop:
        del obj[drop]
    return orjson.dumps(obj)


def sh_line(code: str, price: str = "11.05", name: str = "平安银行", market: str = "sz") -> bytes:
    """A `$` line of stock ``<market><code>`` with a flat book; other fields as in ``sse_line``."""
    return sse_line(symbol=f"{market}{code}", name=name, price=price, **book_fields(FLAT_BOOK))


def bj_line(code: str) -> bytes:
    """A BJ JSON line of stock ``bj<code>`` with 1..5 lots on each side of the book."""
    return bse_line(symbol=f"bj{code}", bidVolumes=[1, 2, 3, 4, 5], askVolumes=[1, 2, 3, 4, 5])
