"""schemas.market_rules: boards by prefix, effective-dated limits and rounding, new listings."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from schemas.market_rules import (
    BOARD_PREFIXES,
    LIMIT_RULES,
    NEW_LISTING_RULES,
    UnknownCode,
    board_of,
    is_limit_free,
    is_st,
    limit_fraction,
    limit_prices,
    limit_rule,
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
        ("SZ", "302132", "CHINEXT"),  # ChiNext's newer 302xxx range: listed and trading
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
        ("MAIN", True, D(2025, 7, 7), "0.05"),  # the 2025 draft's date: not in force
        ("MAIN", True, D(2026, 7, 3), "0.05"),
        ("MAIN", True, D(2026, 7, 6), "0.10"),
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
        # ST on a main board: 5% up to Friday 2026-07-03, 10% from Monday 2026-07-06
        (3.10, "MAIN", True, D(2026, 7, 3), (3.26, 2.95)),
        (3.10, "MAIN", True, D(2026, 7, 6), (3.41, 2.79)),
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
    ],
)
def test_limit_prices_round_half_up(
    prev_close: float, board: str, st: bool, expected: tuple[float, float]
) -> None:
    assert limit_prices(prev_close, board, st, D(2025, 7, 1)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prev_close", "expected"),
    [
        (84.63, (110.01, 59.25)),  # 110.019 / 59.241: half up would give 110.02 / 59.24
        (1.45, (1.88, 1.02)),  # 1.885 / 1.015: never beyond 30%
        (4.80, (6.24, 3.36)),  # exact
        (13.37, (17.38, 9.36)),  # 17.381 / 9.359
    ],
)
def test_bj_limits_never_exceed_30_percent(
    prev_close: float, expected: tuple[float, float]
) -> None:
    """BSE limit prices as the exchange publishes them: limit-up rounded down,
    limit-down rounded up, so neither is more than 30% from prev_close."""
    assert limit_prices(prev_close, "BJ", False, D(2026, 11, 23)) == expected
    up, down = expected
    assert up <= prev_close * 1.3 + 1e-9 and down >= prev_close * 0.7 - 1e-9


def test_rounding_mode_is_data_in_the_rules_table() -> None:
    assert {r.rounding for r in LIMIT_RULES if r.board == "BJ"} == {"INWARD"}
    assert {r.rounding for r in LIMIT_RULES if r.board != "BJ"} == {"HALF_UP"}
    assert limit_rule("BJ", False, D(2026, 1, 5)).rounding == "INWARD"


def test_st_ten_percent_row_cites_its_final_notice() -> None:
    row = limit_rule("MAIN", True, D(2026, 7, 6))
    assert row.effective == D(2026, 7, 6) and row.limit == Decimal("0.10")
    assert "final" in row.note and "2026-07-06" in row.note


@pytest.mark.parametrize(
    ("name", "board", "on", "free"),
    [
        ("N中芯", "STAR", D(2026, 11, 23), True),  # first day
        ("C中芯", "STAR", D(2026, 11, 24), True),  # days 2-5
        ("N天工", "CHINEXT", D(2026, 11, 23), True),
        ("C天工", "CHINEXT", D(2026, 11, 23), True),
        ("N华电", "MAIN", D(2026, 11, 23), True),  # main-board registration
        ("C华电", "MAIN", D(2026, 11, 23), True),
        ("N颖泰", "BJ", D(2026, 11, 23), True),  # BJ: first day only
        ("C颖泰", "BJ", D(2026, 11, 23), False),
        ("中芯国际", "STAR", D(2026, 11, 23), False),
        ("CHINA", "MAIN", D(2026, 11, 23), False),  # a Latin name is no prefix
        ("N", "MAIN", D(2026, 11, 23), False),
        ("N华电", "MAIN", D(2023, 4, 7), False),  # before main-board registration
    ],
)
def test_new_listings_have_no_price_limit(name: str, board: str, on: dt.date, free: bool) -> None:
    """Exchange rule: N (first day) and C (days 2-5) names trade without a daily
    limit on STAR, ChiNext and registration main-board listings; BJ first day only."""
    assert is_limit_free(name, board, on) is free  # type: ignore[arg-type]


def test_new_listing_rules_are_unique() -> None:
    keys = [(r.prefix, b) for r in NEW_LISTING_RULES for b in r.boards]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("name", "st"),
    [("ST康美", True), ("*ST海投", True), ("S*ST前锋", True), (" *ST 国华", True),
     ("中国平安", False), ("万 科Ａ", False), ("BEST", False)],
)  # fmt: skip
def test_is_st(name: str, st: bool) -> None:
    assert is_st(name) is st
