"""Reading an archived day back: its records in exchange-time order, and their pacing.

The day's files are read row group by row group in the order of their
earliest exchange time; a record is released once no unread row group can
hold an earlier one, so memory holds only the row groups that overlap in time
(one file's worth on a live archive, one row group on a compacted one), never
the day. Ties keep the Kafka order (partition, offset), so one stock's
records keep their order. Candles are released at the end of their minute
(``minute_ts`` + 60 s). :class:`Pacer` follows the exchange clock divided by a
speed; clock and sleep are injected.

Shared by ``hqstream replay`` (:mod:`archive.replay`, which publishes a day to
Kafka) and the gateway's ``replay_day`` (:mod:`api.day_replay`). Reads only.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from hqcore.parquet_archive import layout
from hqcore.parquet_archive.arrow_schema import (
    DATASETS,
    OFFSET_COLUMN,
    PARTITION_COLUMN,
    SPECS,
    Dataset,
)
from hqcore.parquet_archive.storage import Storage

Event = tuple[int, Dataset, dict[str, Any]]  # (publish time on the exchange clock, dataset, row)


@dataclass(frozen=True, slots=True, order=True)
class RowGroupRef:
    min_ts: int
    path: str
    index: int
    dataset: Dataset = field(compare=False)
    rows: int = field(compare=False)


def index_day(
    storage: Storage,
    trade_date: str,
    datasets: list[Dataset],
    markets: Collection[str] | None = None,
) -> list[RowGroupRef]:
    """Every row group of the day's complete files (of ``markets`` only, if given),
    with its earliest publish time."""
    refs: list[RowGroupRef] = []
    wanted = None if markets is None else {f"/market={m}/" for m in markets}
    for dataset in datasets:
        spec = SPECS[dataset]
        index = layout.scan(storage, dataset, trade_date)
        covered = set(index.leftover_paths())
        complete = {r for key in list(index.ranges) for r in index.complete(*key)}
        paths = [p for p in index.compacted.values() if p not in covered]
        paths += [
            p for n, p in index.live.items()
            if p not in covered and layout.parse_live(n).range in complete
        ]  # fmt: skip
        if wanted is not None:
            paths = [p for p in paths if any(part in p for part in wanted)]
        for path in sorted(paths):
            with storage.fs.open_input_file(path) as fh:
                meta = pq.ParquetFile(fh).metadata
            col = meta.schema.to_arrow_schema().get_field_index(spec.time_column)
            for i in range(meta.num_row_groups):
                rg = meta.row_group(i)
                stats = rg.column(col).statistics
                low = int(stats.min) if stats is not None and stats.has_min_max else 0
                refs.append(RowGroupRef(low + spec.time_offset_ms, path, i, dataset, rg.num_rows))
    return sorted(refs)


def events(
    storage: Storage, refs: list[RowGroupRef], where: pc.Expression | None = None
) -> Iterator[Event]:
    """The records of ``refs`` in publish-time order (ties: dataset, partition, offset);
    with ``where``, only the rows it keeps (filtered by Arrow before they become dicts)."""
    order = {d: i for i, d in enumerate(DATASETS)}
    heap: list[tuple[int, int, int, int, int, Dataset, dict[str, Any]]] = []
    seq = 0
    for i, ref in enumerate(refs):
        spec = SPECS[ref.dataset]
        with storage.fs.open_input_file(ref.path) as fh:
            table = pq.ParquetFile(fh).read_row_group(ref.index)
        rows = (table if where is None else table.filter(where)).to_pylist()
        for row in rows:
            ts = int(row[spec.time_column]) + spec.time_offset_ms
            part, off = int(row.pop(PARTITION_COLUMN)), int(row.pop(OFFSET_COLUMN))
            heapq.heappush(heap, (ts, order[ref.dataset], part, off, seq, ref.dataset, row))
            seq += 1
        bound = refs[i + 1].min_ts if i + 1 < len(refs) else None
        while heap and (bound is None or heap[0][0] < bound):
            ts, _, _, _, _, dataset, row = heapq.heappop(heap)
            yield ts, dataset, row


class Pacer:
    """Waits so that exchange time ``ts`` happens at ``(ts - first) / speed`` after the start."""

    def __init__(
        self,
        speed: float,
        max_gap_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.speed, self.max_gap_s, self.clock, self.sleep = speed, max_gap_s, clock, sleep
        self._start: float | None = None
        self._last_ts = 0
        self._due = 0.0  # seconds after the start

    def wait(self, ts: int) -> None:
        delay = self.delay(ts)
        if delay > 0:
            self.sleep(delay)

    def delay(self, ts: int) -> float:
        """Seconds to wait before publishing ``ts`` (callers that sleep their own way)."""
        if self.speed <= 0:
            return 0.0
        if self._start is None:
            self._start, self._last_ts = self.clock(), ts
            return 0.0
        gap = max(0, ts - self._last_ts) / 1000 / self.speed
        if self.max_gap_s is not None:
            gap = min(gap, self.max_gap_s)
        self._due += gap
        self._last_ts = max(self._last_ts, ts)
        return self._start + self._due - self.clock()
