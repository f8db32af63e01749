"""The compiled alert detector against the reference, tick by tick.

Both must fire the same alerts (every field, the floats to the last bit) at
the same ticks and count the same replays, suspensions and held-back alerts,
over a simulated market and over random ticks made to reach every branch:
limits touched and left, moves and spikes with short windows and cooldowns,
replays, suspensions, counters going backwards, lunch, the close, a new day,
full windows.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from producers.sample_feed import generate, session_start_ms
from streams.alerts import AlertConfig, AlertDetector, Alerts, CompiledAlertDetector
from streams.parse import parse_record
from tests.streams.test_alerts import DAY, NEXT_DAY, at, compiled, quote

Tick = dict[str, Any]


def same_alerts(ticks: list[Tick], config: AlertConfig | None = None) -> int:
    """Run both detectors over ``ticks``, asserting they agree at every tick; returns how
    many alerts fired."""
    reference, native = AlertDetector(config), compiled(config)
    fired = 0
    for i, tick in enumerate(ticks):
        expected = reference.update(tick)
        got = native.update(tick)
        assert got == expected, f"tick {i}: {tick['code']} at {tick['exchange_ts']}"
        assert [a.value.hex() for a in got] == [a.value.hex() for a in expected]
        fired += len(expected)
    assert native.counters == reference.counters
    return fired


def test_a_simulated_market_fires_the_same_alerts() -> None:
    lines, _ = generate(300, 120, start_ms=session_start_ms(hhmmss="09:29:00"))
    ticks = [parse_record(value, 0) for _, value, _ in lines]
    config = AlertConfig(fast_move_pct=1.0, fast_move_window_s=60, volume_min_shares=1,
                         volume_spike_ratio=2.0, volume_min_history_s=15)  # fmt: skip
    assert same_alerts(ticks) > 0
    assert same_alerts(ticks, config) > 100


def random_ticks(rng: random.Random, codes: list[str], n: int) -> list[Tick]:
    """Ticks of ``codes`` through two trading days with jumps to the limits, counters
    reset, replays and suspensions."""
    ticks: list[Tick] = []
    state: dict[str, tuple[float, int, int]] = {code: (10.0, 0, at(9, 24)) for code in codes}
    day_end = {DAY: at(15, 5), NEXT_DAY: at(15, 5, day=NEXT_DAY)}  # after the close
    for k in range(n):
        code = rng.choice(codes)
        price, volume, ts = state[code]
        day = DAY if k < n // 2 else NEXT_DAY
        if day == NEXT_DAY and ts < at(9, 0, day=NEXT_DAY):
            ts, volume = at(9, 24, day=NEXT_DAY), 0
        roll = rng.random()
        if roll < 0.05 and ticks:  # a replay: an older or the same tick again
            ticks.append(dict(rng.choice(ticks[-50:])))
            continue
        ts += rng.choice([10, 500, 3000, 3000, 3000, 30_000, 600_000])
        ts = min(ts, day_end[day])
        if roll < 0.1:
            price = rng.choice([11.0, 9.0, 10.0])  # at a limit, or back to the close
        else:
            price = round(max(0.01, price * (1 + rng.gauss(0, 0.02))), 2)
        if roll > 0.97:
            volume = rng.randrange(0, max(1, volume))  # the counter goes backwards
        else:
            volume += rng.choice([0, 100, 5_000, 50_000, 2_000_000])
        suspended = rng.random() < 0.02
        state[code] = (price, volume, ts)
        if suspended:
            ticks.append(quote(ts, 0.0, 0, code=code, suspended=True))
        else:
            ticks.append(quote(ts, price, volume, code=code))
    return ticks


@pytest.mark.parametrize("seed", range(12))
def test_random_ticks_fire_the_same_alerts(seed: int) -> None:
    rng = random.Random(seed)
    codes = [f"60{i:04d}" for i in range(6)]
    config = AlertConfig(
        fast_move_pct=rng.choice([0.5, 2.0, 5.0]),
        fast_move_window_s=rng.choice([10.0, 60.0, 300.0]),
        volume_spike_ratio=rng.choice([1.5, 5.0]),
        volume_window_s=rng.choice([15.0, 300.0]),
        volume_min_shares=rng.choice([0, 1_000]),
        volume_min_history_s=rng.choice([0.0, 6.0]),
        cooldown_s=rng.choice([0.0, 5.0, 60.0]),
        max_points=rng.choice([2, 8, 512]),
    )
    assert same_alerts(random_ticks(rng, codes, 3_000), config) > 0


def test_the_compiled_detector_refuses_what_the_reference_refuses() -> None:
    """A quote without a field, or with one of the wrong type, raises in both (the worker
    then dead-letters it and forgets the stock's state)."""
    native = compiled()
    assert isinstance(native, CompiledAlertDetector)
    reference: Alerts = AlertDetector()
    good = quote(at(10, 0), 10.0)
    for det in (reference, native):
        det.update(good)
        without = {k: v for k, v in quote(at(10, 1), 10.5).items() if k != "volume"}
        with pytest.raises(KeyError):
            det.update(without)
        with pytest.raises(TypeError):
            det.update({**quote(at(10, 2), 10.5), "price": "10.5"})
    assert native.held("600000") is not None  # (its windows: the worker forgets them)
