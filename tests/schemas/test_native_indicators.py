"""The compiled indicator state (``hqstream_native.IndicatorState``) is the Python one, bit for bit.

schemas/indicators.py's :class:`IndicatorState` is the reference (checked
against TA-Lib by test_indicators.py); the bar series use the compiled one
when it is installed. Here both fold the same bars in lockstep: every value
of ``peek`` and ``close`` has the same bits and the same key order, the
states' JSON are the same numbers, and each restores from the other's JSON
mid-series and goes on as if never stopped (a worker of one build takes
over the stored series of another).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from schemas.indicators import IndicatorState, SeriesState
from tests.native import native_or_skip
from tests.schemas.test_indicators import random_walk

Bar = dict[str, Any]


@pytest.fixture(scope="module")
def compiled() -> type[IndicatorState]:
    module = native_or_skip()
    state_type: type[IndicatorState] = module.IndicatorState
    return state_type


def bits(value: Any) -> Any:
    """``value`` with every float as its exact bits (``-0.0`` is not ``0.0``), tuples as lists."""
    if isinstance(value, float):
        return value.hex() if not math.isnan(value) else "nan"
    if isinstance(value, dict):
        return [(key, bits(item)) for key, item in value.items()]
    if isinstance(value, (list, tuple)):
        return [bits(item) for item in value]
    return value


def restored(state_type: type[IndicatorState], other: IndicatorState) -> IndicatorState:
    """``other``'s state as ``state_type``, through its stored bytes (Redis's ``hq:bars``)."""
    return state_type.from_json(orjson.loads(other.dumps()))


def lockstep(
    compiled: type[IndicatorState], bars: list[Bar], intraday: bool = True, swap_every: int = 0
) -> int:
    """Fold ``bars`` into both states; every ``swap_every`` bars each restores from the other's
    JSON. Returns how many values were compared."""
    ours, reference = compiled(), IndicatorState()
    compared = 0
    for i, bar in enumerate(bars):
        if swap_every and i and i % swap_every == 0:
            ours, reference = restored(compiled, reference), restored(IndicatorState, ours)
        assert bits(ours.peek(bar, intraday)) == bits(reference.peek(bar, intraday)), i
        closed = ours.close(bar, intraday)
        assert bits(closed) == bits(reference.close(bar, intraday)), i
        assert ours.bars == reference.bars == i + 1
        assert bits(ours.to_json()) == bits(reference.to_json()), i
        assert bits(orjson.loads(ours.dumps())) == bits(orjson.loads(reference.dumps())), i
        compared += sum(v is not None for v in closed.values())
    return compared


def test_the_bar_series_fold_with_the_compiled_state(compiled: type[IndicatorState]) -> None:
    assert SeriesState is compiled


@pytest.mark.parametrize("seed", range(6))
def test_random_walks_give_the_same_bits(compiled: type[IndicatorState], seed: int) -> None:
    """Walks with overnight gaps, halts without volume and limit-locked runs (test_indicators')."""
    bars = random_walk(seed, 1500, start=[10.0, 3.17, 150.0, 1500.0, 0.85, 42.0][seed])
    assert lockstep(compiled, bars) > 1500 * 15


def test_daily_bars_give_the_same_bits(compiled: type[IndicatorState]) -> None:
    assert lockstep(compiled, random_walk(7, 300), intraday=False) > 300 * 15


def test_each_restores_from_the_others_json_and_goes_on_the_same(
    compiled: type[IndicatorState],
) -> None:
    """Swapped at bars 0 mod 37: before the windows fill, while the seeds are summed, after."""
    assert lockstep(compiled, random_walk(11, 800, start=7.77), swap_every=37) > 800 * 15


def test_the_values_keep_the_reference_key_order(compiled: type[IndicatorState]) -> None:
    """The bars' indicators are stored and pushed as JSON objects: the same bytes either way."""
    bar = random_walk(3, 1)[0]
    assert list(compiled().close(bar)) == list(IndicatorState().close(bar))


@pytest.mark.parametrize(
    "value", [1e-7, 1e-300, 5e-324, 1.0 / 3.0, 2.0**60, 1e20, 123456789012.345, -0.0, -1e-12]
)
def test_any_double_survives_the_compiled_json(
    compiled: type[IndicatorState], value: float
) -> None:
    """Prices are written short (as orjson writes them); any other double reads back exactly."""
    data = IndicatorState().to_json()
    data.update(day_amount=value, signal_sum=value, tr_sum=value, ma_sum=[value, 1.5, 0.1, 99.99])
    state = compiled.from_json(data)
    assert bits(orjson.loads(state.dumps())) == bits(orjson.loads(orjson.dumps(data)))


def test_prices_are_written_as_orjson_writes_them(compiled: type[IndicatorState]) -> None:
    state, reference = compiled(), IndicatorState()
    for bar in random_walk(5, 70, start=12.34):
        state.close(bar)
        reference.close(bar)
    closes = reference.to_json()["closes"]
    assert orjson.dumps(closes) in state.dumps()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"closes": []}, ValueError),  # a window that does not fit the bar count
        ({"highs": [1.0] * 7}, ValueError),
        ({"ma_sum": [0.0, 0.0]}, ValueError),
        ({"ema": "x"}, TypeError),
        ({"day": 20260105}, TypeError),
        ({"bars": -1}, OverflowError),
    ],
)
def test_a_foreign_state_is_refused_with_an_error(
    compiled: type[IndicatorState], change: dict[str, Any], error: type[Exception]
) -> None:
    """What TimeframeBars.restore catches (and then starts the series afresh): never a crash."""
    state = IndicatorState()
    for bar in random_walk(2, 30):
        state.close(bar)
    data = state.to_json()
    data.update(change)
    with pytest.raises(error):
        compiled.from_json(data)
    data = state.to_json()
    del data["kdj_k"]
    with pytest.raises(KeyError):
        compiled.from_json(data)
