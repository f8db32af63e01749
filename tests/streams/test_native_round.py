"""The compiled ``round(x, ndigits)`` against Python's, bit for bit.

The compiled parse and candles round derived values (an average price to 3
decimals, a ratio or an amount to 2) as :mod:`streams.normalize` does with
``round``. Away from a tie they take one multiplication and one division,
near one the exact decimal (``native/src/pyround.rs``); here both ways
meet Python's on random doubles of every magnitude, on the doubles
around every kind of tie, and on the edges (zeros, tiny and huge values,
the infinities and NaN).
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator

import pytest

from tests.native import native_or_skip

NDIGITS = (0, 1, 2, 3, 4, 6)


def same(a: float, b: float) -> bool:
    """The same double (-0.0 is not 0.0), or both NaN."""
    return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)


def around(x: float, steps: int = 3) -> Iterator[float]:
    """``x`` and the doubles up to ``steps`` ulps either side of it, both signs."""
    for value in (x, -x):
        below = above = value
        yield value
        for _ in range(steps):
            below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
            yield below
            yield above


def mismatches(values: Iterator[float], ndigits: int) -> list[tuple[float, float, float]]:
    round_float = native_or_skip().round_float
    return [
        (x, got, want)
        for x in values
        if not same(got := round_float(x, ndigits), want := round(x, ndigits))
    ]


@pytest.mark.parametrize("ndigits", NDIGITS)
def test_random_doubles_of_every_magnitude(ndigits: int) -> None:
    rng = random.Random(ndigits)
    values = (
        rng.choice((1, -1)) * rng.random() * 10.0 ** rng.randint(-8, 17) for _ in range(40_000)
    )
    assert mismatches(values, ndigits) == []


@pytest.mark.parametrize("ndigits", NDIGITS)
def test_the_doubles_around_ties(ndigits: int) -> None:
    """``k + 1/2`` units of the last digit kept: CPython rounds the exact binary value
    half to even, so the double nearest a tie may round either way."""
    rng = random.Random(100 + ndigits)
    scale = 10**ndigits
    ties = [(k + 0.5) / scale for k in range(2_000)]
    ties += [(rng.randrange(10**9) + 0.5) / scale for _ in range(3_000)]
    ties += [(k + 0.5) / scale for k in (2**52 // scale - 1, 2**53 // scale, 10**15 // scale)]
    values = (x for tie in ties for x in around(tie))
    assert mismatches(values, ndigits) == []


@pytest.mark.parametrize("ndigits", (2, 3))
def test_a_quotes_derived_values(ndigits: int) -> None:
    """What the parse rounds: amount / volume (an average price), percentages, ratios."""
    rng = random.Random(200 + ndigits)
    values: list[float] = []
    for _ in range(20_000):
        volume = rng.randint(1, 10**9)
        price_cents = rng.randint(1, 300_000)
        amount = round(volume * price_cents / 100 * rng.uniform(0.95, 1.05), 2)
        values.append(amount / volume)
        values.append((2 * rng.randint(0, volume) - volume) * 100 / volume)
        values.append(amount)
    assert mismatches(iter(values), ndigits) == []


@pytest.mark.parametrize("ndigits", NDIGITS)
def test_the_edges(ndigits: int) -> None:
    tiny = [5e-324, 2.2250738585072014e-308, 1e-300, 4.9e-9, 5e-7, 0.0049999999999999999]
    huge = [2.0**52, 2.0**52 / 10**ndigits, 2.0**53, 1e15, 1e16, 1e22, 1.7976931348623157e308]
    values = [0.0, -0.0, math.inf, -math.inf, math.nan]
    values += [x for v in tiny + huge for x in around(v, 2)]
    assert mismatches(iter(values), ndigits) == []
