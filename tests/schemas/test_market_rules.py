"""schemas.market_rules: boards by prefix, effective-dated limits, half-up rounding."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from schemas.market_rules import (
    BOARD_PREFIXES,
    LIMIT_RULES,
    UnknownCode,
    board_of,
    is_st,
    limit_fraction,
    limit_prices,
)

D = dt.date


@pytest.mark.parametrize(
    ("market", "code", "board"),
    [
        ("SH", "600000", "MAIN"),
        ("SH", "601318", "MAIN"),
        ("SH", "603288", "MAIN"),
        ("SH", "605499", "MAIN"),
        ("SH", "688981", "STAR"),
        ("SH", "689009", "STAR"),
        ("SZ", "000001", "MAIN"),
        ("SZ", "001979", "MAIN"),
        ("SZ", "002594", "MAIN"),
        ("SZ", "003816", "MAIN"),
        ("SZ", "300750", "CHINEXT"),
        ("SZ", "301236", "CHINEXT"),
        ("BJ", "920819", "BJ"),
        ("BJ", "430047", "BJ"),
        ("BJ", "830799", "BJ"),
        ("BJ", "871981", "BJ"),
    ],
)
def test_board_of(market: str, code: str, board: str) -> None:
    assert board_of(market, code) == board  # type: ignore[arg-type]


def test_every_prefix_in_the_table_is_covered() -> None:
    for market, rows in BOARD_PREFIXES.items():
        for prefix, board in rows:
            assert board_of(market, prefix + "0" * (6 - len(prefix))) == board


@pytest.mark.parametrize(
    ("market", "code"),
    [
        ("SH", "900901"),  # SH B share
        ("SH", "000001"),  # an SZ code (and the SSE index)
        ("SH", "604000"),
        ("SZ", "200002"),  # SZ B share
        ("SZ", "600000"),
        ("SZ", "399001"),  # index
        ("BJ", "600000"),
        ("BJ", "888888"),
    ],
)
def test_board_of_unknown(market: str, code: str) -> None:
    with pytest.raises(UnknownCode):
        board_of(market, code)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("board", "st", "on", "fraction"),
    [
        ("MAIN", False, D(2026, 1, 5), "0.10"),
        ("MAIN", True, D(2025, 7, 4), "0.05"),
        ("MAIN", True, D(2025, 7, 7), "0.10"),
        ("STAR", False, D(2026, 1, 5), "0.20"),
        ("STAR", True, D(2026, 1, 5), "0.20"),
        ("CHINEXT", False, D(2020, 8, 21), "0.10"),
        ("CHINEXT", False, D(2020, 8, 24), "0.20"),
        ("CHINEXT", True, D(2020, 8, 21), "0.05"),
        ("CHINEXT", True, D(2020, 8, 24), "0.20"),
        ("BJ", False, D(2026, 1, 5), "0.30"),
        ("BJ", True, D(2026, 1, 5), "0.30"),
    ],
)
def test_limit_fraction(board: str, st: bool, on: dt.date, fraction: str) -> None:
    assert limit_fraction(board, st, on) == Decimal(fraction)  # type: ignore[arg-type]


def test_limit_fraction_before_any_rule() -> None:
    with pytest.raises(LookupError):
        limit_fraction("STAR", False, D(2019, 7, 19))


def test_limit_rules_are_unique_per_effective_date() -> None:
    keys = [(r.board, r.st, r.effective) for r in LIMIT_RULES]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("prev_close", "board", "st", "on", "expected"),
    [
        (11.00, "MAIN", False, D(2026, 11, 23), (12.10, 9.90)),
        (1500.00, "MAIN", False, D(2026, 11, 23), (1650.00, 1350.00)),
        (85.37, "STAR", False, D(2026, 11, 23), (102.44, 68.30)),
        (250.00, "CHINEXT", False, D(2026, 11, 23), (300.00, 200.00)),
        (4.80, "BJ", False, D(2025, 11, 23), (6.24, 3.36)),
        # ST on a main board: 5% up to 2025-07-04, 10% from 2025-07-07
        (3.10, "MAIN", True, D(2025, 7, 4), (3.26, 2.95)),
        (3.10, "MAIN", True, D(2025, 7, 7), (3.41, 2.79)),
        (0.0, "MAIN", False, D(2026, 11, 23), (0.0, 0.0)),
    ],
)
def test_limit_prices(
    prev_close: float, board: str, st: bool, on: dt.date, expected: tuple[float, float]
) -> None:
    assert limit_prices(prev_close, board, st, on) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prev_close", "board", "st", "expected"),
    [
        # exact half cents round up (naive float round() gives 2.94 and 1.01)
        (3.10, "MAIN", True, (3.26, 2.95)),  # 3.255 / 2.945
        (10.05, "MAIN", False, (11.06, 9.05)),  # 11.055 / 9.045
        (2.15, "MAIN", False, (2.37, 1.94)),  # 2.365 / 1.935
        (12.45, "CHINEXT", False, (14.94, 9.96)),  # 14.94 / 9.96 (exact)
        (1.45, "BJ", False, (1.89, 1.02)),  # 1.885 / 1.015
    ],
)
def test_limit_prices_round_half_up(
    prev_close: float, board: str, st: bool, expected: tuple[float, float]
) -> None:
    assert limit_prices(prev_close, board, st, D(2025, 7, 1)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "st"),
    [("ST康美", True), ("*ST海投", True), ("S*ST前锋", True), (" *ST 国华", True),
     ("中国平安", False), ("万 科Ａ", False), ("BEST", False)],
)  # fmt: skip
def test_is_st(name: str, st: bool) -> None:
    assert is_st(name) is st
