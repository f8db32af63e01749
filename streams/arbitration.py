"""Arbitration between feeds (A/B lines, two vendors): every snapshot once.

Several receivers (one per feed in ``HQ_FEEDS``) produce the same stocks to
``hq.ticks.raw`` with the same key, each record carrying its feed's name in
the ``source`` header, so both copies of a stock's tick land in one
partition, in arrival order. :class:`Arbiter` decides, per parsed quote and in
O(1), whether it is published:

* **Equality.** Two quotes are copies of one snapshot when they have the same
  code and the same exchange time at the coarser precision of the vendors
  (``precision_ms``, default 1 s: Shanghai/Shenzhen lines carry seconds,
  Beijing lines milliseconds).
* **First copy wins.** A quote newer than the stock's winner is published
  and becomes the winner. Each stock remembers which of its last
  :data:`WINDOW` time units were published (a 64-bit mask, O(1)): a copy of
  one of them from another source is dropped (``duplicate``); an older quote
  from another source of a unit no feed published (the leading feed missed
  that stock in that snapshot, the lagging one had it) is published late
  (counted in ``filled``), so no snapshot any feed delivered is lost; one
  older than the window is dropped (``late``). A quote from the winner's own
  source that is not newer passes through as before (an at-least-once replay,
  or the only feed): with one feed, or no ``source`` header (one implicit
  source), nothing changes.
* **Stale sources.** Per raw partition, each source's newest exchange time is
  tracked; a source more than ``stale_after_ms`` behind the newest source is
  stale, and its quotes are dropped (``stale``) until it catches up (its own
  newest quote is enough: a feed that reconnects is fresh at once).
* **Disagreements.** A duplicate whose price or cumulative volume differs from
  the winner's beyond tolerance is counted (``hq_feed_disagreements_total``)
  and logged (at most one line per source every ``LOG_EVERY_S``).

State survives a rebalance: :meth:`Arbiter.take_changes` hands the winners of
processed batches to the runtime, which stores them in Redis
(:func:`schemas.redis_keys.feed_winners`) only once the batch's Kafka outputs
are acknowledged, so the stored state is never ahead of the normalized topic;
a worker assigned a partition loads it (:meth:`Arbiter.restore`). Restored
winners older than the committed offsets only cause copies to be published
twice (at-least-once), never a tick to be skipped.

Pure in-memory logic: no I/O.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

logger = logging.getLogger(__name__)

DropReason = Literal["duplicate", "late", "stale"]
#: the source of records without a ``source`` header (a single feed)
IMPLICIT_SOURCE: Final = ""
LOG_EVERY_S: Final = 10.0

#: time units (of ``precision_ms``) behind a stock's newest in which copies are recognized
WINDOW: Final = 64
_MASK: Final = (1 << WINDOW) - 1

#: a stock's winner: (exchange time in units of precision, source, price, volume,
#: bit i set = unit ``winner - i`` was published)
Winner = tuple[int, str, float, int, int]


@dataclass(frozen=True, slots=True)
class ArbitrationConfig:
    precision_ms: int = 1000
    stale_after_ms: int = 10_000
    price_tolerance: float = 0.005  # yuan: any difference of a cent or more
    volume_tolerance: float = 0.001  # share of the winner's cumulative volume


class Arbiter:
    """Per-stock winners and per-partition source clocks; see the module docstring."""

    def __init__(self, config: ArbitrationConfig | None = None) -> None:
        self.config = config or ArbitrationConfig()
        self.winners: dict[str, Winner] = {}
        self.winner_partition: dict[str, int] = {}
        #: raw partition -> source -> newest exchange_ts (ms) of that source there
        self.newest: dict[int, dict[str, int]] = {}
        self.changes: dict[int, dict[str, Winner]] = {}  # not yet handed to the store
        self.sources: set[str] = set()
        self.accepted: Counter[str] = Counter()
        self.filled: Counter[str] = Counter()  # late quotes of snapshots no feed had published
        self.dropped: Counter[tuple[str, DropReason]] = Counter()
        self.disagreements: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}

    @property
    def multi_source(self) -> bool:
        """True once quotes of more than one source were seen."""
        return len(self.sources) > 1

    def judge(
        self, code: str, ts: int, source: str, partition: int, price: float, volume: int
    ) -> DropReason | None:
        """``None`` if the quote is published, else why it is dropped (and counted)."""
        if source not in self.sources:
            self.sources.add(source)
        clocks = self.newest.get(partition)
        if clocks is None:
            clocks = self.newest[partition] = {}
        if ts > clocks.get(source, -1):
            clocks[source] = ts
        if len(clocks) > 1 and max(clocks.values()) - clocks[source] > self.config.stale_after_ms:
            self.dropped[source, "stale"] += 1
            return "stale"
        unit = ts // self.config.precision_ms
        winner = self.winners.get(code)
        if winner is None or unit > winner[0]:
            shift = WINDOW if winner is None else unit - winner[0]
            seen = (
                ((winner[4] << shift) | 1) & _MASK if winner is not None and shift < WINDOW else 1
            )
            self._set(code, partition, (unit, source, price, volume, seen))
            self.accepted[source] += 1
            return None
        age = winner[0] - unit
        published = age < WINDOW and (winner[4] >> age) & 1
        if winner[1] == source:  # its own source again: a replay, as with a single feed
            if age < WINDOW and not published:
                self._set(code, partition, (*winner[:4], winner[4] | 1 << age))
            self.accepted[source] += 1
            return None
        if age >= WINDOW:
            self.dropped[source, "late"] += 1
            return "late"
        if not published:  # the leading feed missed this snapshot: publish it late
            self._set(code, partition, (*winner[:4], winner[4] | 1 << age))
            self.accepted[source] += 1
            self.filled[source] += 1
            return None
        self.dropped[source, "duplicate"] += 1
        if age == 0 and self._disagree(winner, price, volume):
            self._disagreement(code, ts, source, winner, price, volume)
        return "duplicate"

    def _set(self, code: str, partition: int, winner: Winner) -> None:
        self.winners[code] = winner
        self.winner_partition[code] = partition
        changes = self.changes.get(partition)
        if changes is None:
            changes = self.changes[partition] = {}
        changes[code] = winner

    def _disagree(self, winner: Winner, price: float, volume: int) -> bool:
        cfg = self.config
        return abs(price - winner[2]) > cfg.price_tolerance or abs(
            volume - winner[3]
        ) > cfg.volume_tolerance * max(winner[3], 1)

    def _disagreement(
        self, code: str, ts: int, source: str, winner: Winner, price: float, volume: int
    ) -> None:
        self.disagreements[source] += 1
        now = time.monotonic()
        if now - self._logged_at.get(source, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged_at[source] = now
            logger.warning(
                "feed %r disagrees with %r on %s at %d: price %s vs %s, volume %d vs %d "
                "(%d disagreements from %r so far; one line per %gs)",
                source, winner[1], code, ts, price, winner[2], volume, winner[3],
                self.disagreements[source], source, LOG_EVERY_S,
            )  # fmt: skip

    # -- state across rebalances ---------------------------------------------------

    def take_changes(self) -> dict[int, dict[str, Winner]]:
        """The winners set since the last call, by raw partition (to be stored)."""
        changes, self.changes = self.changes, {}
        return changes

    def restore(self, partition: int, winners: dict[str, Winner]) -> None:
        """Load the stored winners of an assigned ``partition`` (never older than ours)."""
        for code, won in winners.items():
            mine = self.winners.get(code)
            if mine is None or won[0] > mine[0]:
                self.winners[code] = won
                self.winner_partition[code] = partition

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop what this worker held of revoked ``partitions``."""
        gone = set(partitions)
        for partition in gone:
            self.newest.pop(partition, None)
            self.changes.pop(partition, None)
        codes = [c for c, p in self.winner_partition.items() if p in gone]
        for code in codes:
            del self.winner_partition[code]
            self.winners.pop(code, None)

    def behind_ms(self) -> dict[str, int]:
        """How far each source is behind the newest source (worst partition)."""
        behind: dict[str, int] = {}
        for clocks in self.newest.values():
            lead = max(clocks.values())
            for source, ts in clocks.items():
                behind[source] = max(behind.get(source, 0), lead - ts)
        return behind
