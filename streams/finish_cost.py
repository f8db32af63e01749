"""What a waiting tick costs to finish, so a slice of waiting work fits a time.

The rest of a batch parsed quotes first (its statistics, candles, alerts and
outputs: :meth:`streams.runtime.StreamsRuntime.finish_next`) is finished a
slice at a time, and input that comes meanwhile waits for the slice. A tick
that closes its stock's candle costs several times a plain one (its bar,
every timeframe's, their state and records: ~300 µs against ~35 µs on an idle
host), and a minute's first snapshot is all such ticks: a slice of so many
ticks held the parse of new input for ~0.4 s on a slow host
(docs/benchmarks.md, "A minute's close at --steal 0.6, second by second").
Sized by time, a slice holds as many ticks as fit, each costed as measured
on the slices before it.
"""

from __future__ import annotations

from collections.abc import Sequence

#: seconds a plain tick and a closing one took before any was measured (an idle host)
PLAIN_S = 40e-6
CLOSING_S = 300e-6
#: the weight of a slice's measure in the running estimates
WEIGHT = 0.3


class TickCost:
    """The seconds a plain waiting tick and one that closes its candle take to finish,
    running estimates of the slices measured (:meth:`observe`)."""

    def __init__(self, plain_s: float = PLAIN_S, closing_s: float = CLOSING_S) -> None:
        self.plain_s = plain_s
        self.closing_s = closing_s

    def fit(self, closing: Sequence[bool], budget_s: float) -> int:
        """How many of the ticks (in order; True: closes its candle) fit ``budget_s``:
        at least one."""
        plain_s, closing_s = self.plain_s, self.closing_s
        spent, most = 0.0, budget_s * (1 + 1e-9)  # (a sum of costs that is the budget fits)
        for n, closes in enumerate(closing):
            spent += closing_s if closes else plain_s
            if spent > most:
                return max(1, n)
        return len(closing)

    def observe(self, plain: int, closing: int, took_s: float) -> None:
        """A slice of ``plain`` and ``closing`` ticks took ``took_s``: the plain ticks'
        estimate is what a slice of them alone took; a closing tick's, the rest of
        a slice with any, shared among them (at least a plain tick's cost)."""
        if took_s <= 0 or plain + closing <= 0:
            return  # (a clock that did not move: nothing learned)
        if closing == 0:
            self.plain_s += WEIGHT * (took_s / plain - self.plain_s)
            return
        each = max(self.plain_s, (took_s - plain * self.plain_s) / closing)
        self.closing_s += WEIGHT * (each - self.closing_s)
