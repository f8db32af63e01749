"""China A-share market rules as data: boards by code prefix, price limits by date.

Rules change (ChiNext moved to 20% in 2020, ST stocks on the main boards move
from 5% to 10% on 2026-07-06, Beijing moved every code to 920xxx in 2025), so
the limits (and how limit prices are rounded) are a table of effective-dated
rows, not constants in code. New listings (``N``/``C`` name prefixes) have no
limit in their first days: :func:`is_limit_free`, from a table too. Shared by
the feed simulator (to move prices realistically) and the stream workers (to
compute limit prices and flags). Pure functions; no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Final, Literal

from schemas.exchange import Market

Board = Literal["MAIN", "STAR", "CHINEXT", "BJ"]
#: How a limit price is rounded to 0.01 yuan. ``HALF_UP``: both limits half up
#: (SSE/SZSE trading rules). ``INWARD``: toward prev_close (limit-up down,
#: limit-down up), so a limit never exceeds its percentage.
Rounding = Literal["HALF_UP", "INWARD"]


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
        ("302", "CHINEXT"),  # ChiNext's newer range, e.g. 302132 (listed, trading)
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
    rounding: Rounding = "HALF_UP"


#: Effective-dated price-limit rules. For a (board, st, date) the latest row
#: whose ``effective`` <= date applies.
LIMIT_RULES: Final[tuple[LimitRule, ...]] = (
    LimitRule("MAIN", False, dt.date(1996, 12, 16), Decimal("0.10"), "main boards 10%"),
    LimitRule("MAIN", True, dt.date(1998, 4, 22), Decimal("0.05"), "ST on main boards 5%"),
    # The exchanges' draft for comment of 2025-06-27 (comments until 2025-07-04)
    # left the date open; the final notices (SSE and SZSE trading-rule
    # revisions, in force with the fund closing auction and ChiNext market
    # makers) apply 10% from Monday 2026-07-06.
    LimitRule(
        "MAIN",
        True,
        dt.date(2026, 7, 6),
        Decimal("0.10"),
        "SSE/SZSE main-board ST/*ST limits 5% -> 10% (final notices, from 2026-07-06)",
    ),
    LimitRule("STAR", False, dt.date(2019, 7, 22), Decimal("0.20"), "STAR Market 20%"),
    LimitRule("STAR", True, dt.date(2019, 7, 22), Decimal("0.20"), "ST on STAR 20%"),
    LimitRule("CHINEXT", False, dt.date(2009, 10, 30), Decimal("0.10"), "ChiNext 10%"),
    LimitRule("CHINEXT", False, dt.date(2020, 8, 24), Decimal("0.20"), "ChiNext reform 20%"),
    LimitRule("CHINEXT", True, dt.date(2009, 10, 30), Decimal("0.05"), "ST on ChiNext 5%"),
    LimitRule("CHINEXT", True, dt.date(2020, 8, 24), Decimal("0.20"), "ST on ChiNext 20%"),
    # BSE limit prices never exceed 30% of prev_close: limit-up rounded down,
    # limit-down up (prev 84.63 -> 110.01 / 59.25 as published, not the
    # half-up 110.02 / 59.24).
    LimitRule("BJ", False, dt.date(2021, 11, 15), Decimal("0.30"), "Beijing 30%", "INWARD"),
    LimitRule("BJ", True, dt.date(2021, 11, 15), Decimal("0.30"), "ST on Beijing 30%", "INWARD"),
)


@dataclass(frozen=True, slots=True)
class NewListingRule:
    """Names starting with ``prefix`` trade without a daily limit on ``boards``.

    ``N``: a stock's first trading day; ``C``: its 2nd-5th day. From
    ``effective`` on (the registration-based IPO regime of each board).
    """

    prefix: str
    boards: frozenset[Board]
    effective: dt.date
    note: str


NEW_LISTING_RULES: Final[tuple[NewListingRule, ...]] = (
    NewListingRule("N", frozenset({"STAR"}), dt.date(2019, 7, 22), "STAR: days 1-5 no limit"),
    NewListingRule("C", frozenset({"STAR"}), dt.date(2019, 7, 22), "STAR: days 1-5 no limit"),
    NewListingRule("N", frozenset({"CHINEXT"}), dt.date(2020, 8, 24), "ChiNext: days 1-5 no limit"),
    NewListingRule("C", frozenset({"CHINEXT"}), dt.date(2020, 8, 24), "ChiNext: days 1-5 no limit"),
    NewListingRule(
        "N", frozenset({"MAIN"}), dt.date(2023, 4, 10), "main-board registration: days 1-5"
    ),
    NewListingRule(
        "C", frozenset({"MAIN"}), dt.date(2023, 4, 10), "main-board registration: days 1-5"
    ),
    NewListingRule("N", frozenset({"BJ"}), dt.date(2021, 11, 15), "Beijing: first day only"),
)

_CENT: Final = Decimal("0.01")
_ST_NAME: Final = re.compile(r"^(S\*|\*|S)?ST")


def is_st(name: str) -> bool:
    """ST and *ST names (``ST康美``, ``*ST海投``, ``S*ST``)."""
    return _ST_NAME.match(name.strip()) is not None


def is_limit_free(name: str, board: Board, on: dt.date) -> bool:
    """A new listing without a daily price limit on ``on`` (``N中芯``, ``C中芯``).

    The prefix letter must be followed by the name proper (not another ASCII
    letter), so ``ST``-style and Latin names never match.
    """
    name = name.strip()
    if len(name) < 2 or (name[1].isascii() and name[1].isalpha()):
        return False
    return any(
        rule.prefix == name[0] and board in rule.boards and rule.effective <= on
        for rule in NEW_LISTING_RULES
    )


def limit_rule(board: Board, st: bool, on: dt.date) -> LimitRule:
    """The price-limit rule in force on ``on``; raises LookupError before any."""
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
    return best


def limit_fraction(board: Board, st: bool, on: dt.date) -> Decimal:
    """The daily limit fraction in force on ``on``."""
    return limit_rule(board, st, on).limit


#: (limit-up, limit-down) Decimal rounding modes of each Rounding.
_ROUNDING_MODES: Final[dict[Rounding, tuple[str, str]]] = {
    "HALF_UP": (ROUND_HALF_UP, ROUND_HALF_UP),
    "INWARD": (ROUND_FLOOR, ROUND_CEILING),
}


def limit_prices(prev_close: float, board: Board, st: bool, on: dt.date) -> tuple[float, float]:
    """``(limit_up, limit_down)`` to 0.01 yuan, rounded as the rule in force says.

    (0, 0) without prev_close.
    """
    if prev_close <= 0:
        return 0.0, 0.0
    rule = limit_rule(board, st, on)
    up_mode, down_mode = _ROUNDING_MODES[rule.rounding]
    pc = Decimal(str(prev_close))
    up = (pc * (1 + rule.limit)).quantize(_CENT, rounding=up_mode)
    down = (pc * (1 - rule.limit)).quantize(_CENT, rounding=down_mode)
    return float(up), float(down)


# Exchange sessions, Asia/Shanghai local time.
SESSIONS: Final[tuple[tuple[dt.time, dt.time, str], ...]] = (
    (dt.time(9, 15), dt.time(9, 25), "opening_auction"),
    (dt.time(9, 30), dt.time(11, 30), "continuous_am"),
    (dt.time(13, 0), dt.time(14, 57), "continuous_pm"),
    (dt.time(14, 57), dt.time(15, 0), "closing_auction"),
)
