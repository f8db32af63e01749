"""China A-share market rules as data: boards by code prefix, price limits by date.

Rules change (ChiNext moved to 20% in 2020, ST stocks on the main boards moved
from 5% to 10% in 2025, Beijing moved every code to 920xxx in 2025), so the
limits are a table of effective-dated rows, not constants in code. Shared by
the feed simulator (to move prices realistically) and the stream workers (to
compute limit prices and flags). Pure functions; no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Literal

Market = Literal["SH", "SZ", "BJ"]
Board = Literal["MAIN", "STAR", "CHINEXT", "BJ"]


class UnknownCode(ValueError):
    """A 6-digit code that belongs to no known board of its market."""


#: (market, code prefix) -> board. Longest prefix wins.
BOARD_PREFIXES: Final[dict[Market, tuple[tuple[str, Board], ...]]] = {
    "SH": (
        ("600", "MAIN"),
        ("601", "MAIN"),
        ("603", "MAIN"),
        ("605", "MAIN"),
        ("688", "STAR"),
        ("689", "STAR"),
    ),
    "SZ": (
        ("000", "MAIN"),
        ("001", "MAIN"),
        ("002", "MAIN"),
        ("003", "MAIN"),
        ("300", "CHINEXT"),
        ("301", "CHINEXT"),
    ),
    # 920 since 2025-10-09; legacy 43x/83x/87x codes still appear in older data.
    "BJ": (("920", "BJ"), ("43", "BJ"), ("83", "BJ"), ("87", "BJ")),
}


def board_of(market: Market, code: str) -> Board:
    """The board of a code on its market; raises UnknownCode."""
    for prefix, board in BOARD_PREFIXES[market]:
        if code.startswith(prefix):
            return board
    raise UnknownCode(f"{market}{code} is on no known {market} board")


@dataclass(frozen=True, slots=True)
class LimitRule:
    """Daily price limit (fraction of prev_close) for a board, from a date on."""

    board: Board
    st: bool
    effective: dt.date
    limit: Decimal
    note: str


#: Effective-dated price-limit rules. For a (board, st, date) the latest row
#: whose ``effective`` <= date applies.
LIMIT_RULES: Final[tuple[LimitRule, ...]] = (
    LimitRule("MAIN", False, dt.date(1996, 12, 16), Decimal("0.10"), "main boards 10%"),
    LimitRule("MAIN", True, dt.date(1998, 4, 22), Decimal("0.05"), "ST on main boards 5%"),
    LimitRule(
        "MAIN",
        True,
        dt.date(2025, 7, 7),
        Decimal("0.10"),
        "SSE/SZSE moved main-board ST limits to 10%",
    ),
    LimitRule("STAR", False, dt.date(2019, 7, 22), Decimal("0.20"), "STAR Market 20%"),
    LimitRule("STAR", True, dt.date(2019, 7, 22), Decimal("0.20"), "ST on STAR 20%"),
    LimitRule("CHINEXT", False, dt.date(2009, 10, 30), Decimal("0.10"), "ChiNext 10%"),
    LimitRule("CHINEXT", False, dt.date(2020, 8, 24), Decimal("0.20"), "ChiNext reform 20%"),
    LimitRule("CHINEXT", True, dt.date(2009, 10, 30), Decimal("0.05"), "ST on ChiNext 5%"),
    LimitRule("CHINEXT", True, dt.date(2020, 8, 24), Decimal("0.20"), "ST on ChiNext 20%"),
    LimitRule("BJ", False, dt.date(2021, 11, 15), Decimal("0.30"), "Beijing 30%"),
    LimitRule("BJ", True, dt.date(2021, 11, 15), Decimal("0.30"), "ST on Beijing 30%"),
)

_CENT: Final = Decimal("0.01")
_ST_NAME: Final = re.compile(r"^(S\*|\*|S)?ST")


def is_st(name: str) -> bool:
    """ST and *ST names (``ST康美``, ``*ST海投``, ``S*ST``)."""
    return _ST_NAME.match(name.strip()) is not None


def limit_fraction(board: Board, st: bool, on: dt.date) -> Decimal:
    """The daily limit fraction in force on ``on``."""
    best: LimitRule | None = None
    for rule in LIMIT_RULES:
        if (
            rule.board == board
            and rule.st == st
            and rule.effective <= on
            and (best is None or rule.effective > best.effective)
        ):
            best = rule
    if best is None:
        raise LookupError(f"no price-limit rule for {board} st={st} on {on}")
    return best.limit


def limit_prices(prev_close: float, board: Board, st: bool, on: dt.date) -> tuple[float, float]:
    """``(limit_up, limit_down)`` rounded half-up to 0.01 yuan; (0, 0) without prev_close."""
    if prev_close <= 0:
        return 0.0, 0.0
    frac = limit_fraction(board, st, on)
    pc = Decimal(str(prev_close))
    up = (pc * (1 + frac)).quantize(_CENT, rounding=ROUND_HALF_UP)
    down = (pc * (1 - frac)).quantize(_CENT, rounding=ROUND_HALF_UP)
    return float(up), float(down)


# Exchange sessions, Asia/Shanghai local time.
SESSIONS: Final[tuple[tuple[dt.time, dt.time, str], ...]] = (
    (dt.time(9, 15), dt.time(9, 25), "opening_auction"),
    (dt.time(9, 30), dt.time(11, 30), "continuous_am"),
    (dt.time(13, 0), dt.time(14, 57), "continuous_pm"),
    (dt.time(14, 57), dt.time(15, 0), "closing_auction"),
)
SHANGHAI_TZ: Final = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")  # no DST since 1991
