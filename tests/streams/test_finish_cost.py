"""What a waiting tick costs to finish: the slices sized by it, the estimates measured."""

from __future__ import annotations

import pytest

from streams.finish_cost import WEIGHT, TickCost


def test_a_slice_holds_the_ticks_whose_cost_fits_the_time() -> None:
    cost = TickCost(plain_s=0.001, closing_s=0.005)
    assert cost.fit([False] * 20, 0.010) == 10
    assert cost.fit([True] * 5, 0.010) == 2
    assert cost.fit([True] + [False] * 9, 0.010) == 6  # 5 + 5 x 1 ms
    assert cost.fit([False] * 4, 0.010) == 4  # all of them
    assert cost.fit([], 0.010) == 0


def test_a_slice_holds_one_tick_at_least() -> None:
    assert TickCost(plain_s=0.001, closing_s=0.050).fit([True, True], 0.010) == 1


def test_a_slice_of_plain_ticks_measures_a_plain_tick() -> None:
    cost = TickCost(plain_s=0.001, closing_s=0.005)
    cost.observe(10, 0, 0.020)  # 2 ms each
    assert cost.plain_s == pytest.approx(0.001 + WEIGHT * 0.001)
    assert cost.closing_s == 0.005


def test_a_slice_with_closing_ticks_measures_them_after_its_plain_ones() -> None:
    cost = TickCost(plain_s=0.001, closing_s=0.005)
    cost.observe(4, 2, 0.024)  # 24 - 4 x 1 ms = 10 ms a closing tick
    assert cost.closing_s == pytest.approx(0.005 + WEIGHT * 0.005)
    assert cost.plain_s == 0.001
    cost.observe(20, 1, 0.010)  # less than its plain ones: a closing tick costs a plain one
    assert cost.closing_s == pytest.approx(0.0065 + WEIGHT * (0.001 - 0.0065))


@pytest.mark.parametrize("took_s", [0.0, -0.001])
def test_a_slice_whose_clock_did_not_move_teaches_nothing(took_s: float) -> None:
    cost = TickCost(plain_s=0.001, closing_s=0.005)
    cost.observe(10, 2, took_s)
    cost.observe(0, 0, 0.010)
    assert (cost.plain_s, cost.closing_s) == (0.001, 0.005)
