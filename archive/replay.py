"""Replay of an archived day: its records, in exchange-time order, at a chosen speed.

The day's files are read row group by row group in the order of their
earliest exchange time; a record is released once no unread row group can
hold an earlier one, so memory holds only the row groups that overlap in time
(one file's worth on a live archive, one row group on a compacted one), never
the day. Ties keep the Kafka order (partition, offset), so one stock's
records keep their order. Candles are released at the end of their minute
(``minute_ts`` + 60 s). Pacing follows the exchange clock divided by the
speed; clock and sleep are injected. Records go to ``<prefix>`` + the topic,
keyed by code and partitioned with murmur2 like the live ones.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from archive import layout
from archive.arrow_schema import DATASETS, OFFSET_COLUMN, PARTITION_COLUMN, SPECS, Dataset
from archive.errors import NoSuchDay
from archive.settings import ArchiveSettings
from archive.storage import Storage, open_storage
from schemas.exchange import shanghai_datetime

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


@dataclass
class Replay:
    """One replay job: what to read and how fast to publish it."""

    storage: Storage
    trade_date: str
    refs: list[RowGroupRef]
    prefix: str
    speed: float
    max_gap_s: float | None = None

    @property
    def total(self) -> int:
        return sum(r.rows for r in self.refs)

    @classmethod
    def open(
        cls,
        settings: ArchiveSettings,
        trade_date: str,
        datasets: list[str],
        prefix: str,
        speed: float,
        max_gap_s: float | None = None,
    ) -> Replay:
        storage = open_storage(settings.root)
        unknown = [d for d in datasets if d not in SPECS]
        if unknown:
            raise ValueError(f"unknown datasets {unknown} (ticks, candles, alerts)")
        refs = index_day(storage, trade_date, datasets)  # type: ignore[arg-type]
        if not refs:
            raise NoSuchDay(
                f"no archived {', '.join(datasets)} for {trade_date} in {settings.root}"
            )
        return cls(storage, trade_date, refs, prefix, speed, max_gap_s)

    def play(
        self,
        publish: Callable[[Dataset, dict[str, Any]], None],
        pacer: Pacer | None = None,
        on_progress: Callable[[int, str], None] | None = None,
    ) -> int:
        """Publishes every record through ``publish``, paced; returns how many."""
        pacer = pacer or Pacer(self.speed, self.max_gap_s)
        done = 0
        for ts, dataset, row in events(self.storage, self.refs):
            pacer.wait(ts)
            publish(dataset, row)
            done += 1
            if on_progress is not None and (done % 500 == 0 or done == self.total):
                on_progress(done, _shanghai_clock(ts))
        return done


def _shanghai_clock(ts: int) -> str:
    return shanghai_datetime(ts).strftime("%H:%M:%S")


def run_replay(
    job: Replay,
    settings: ArchiveSettings,
    on_progress: Callable[[int, str], None] | None = None,
) -> int:
    """Publishes ``job`` to Kafka under its prefix; returns the records published."""
    from confluent_kafka import KafkaException, Producer

    from hqcore.kafka_client import librdkafka_config
    from schemas.serde import make_codec

    producer = Producer(
        {
            **librdkafka_config(settings),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
        }
    )
    codecs = {}
    topic_of = {}
    for name, spec in SPECS.items():
        topic = f"{job.prefix}{spec.topic}"
        topic_of[name] = topic
        codecs[name] = make_codec(spec.schema, settings.schema_registry_url, topic)
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    def publish(dataset: Dataset, row: dict[str, Any]) -> None:
        value = codecs[dataset].encode(row)
        while True:
            try:
                producer.produce(
                    topic_of[dataset], value, key=str(row["code"]).encode(), on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)

    try:
        published = job.play(publish, on_progress=on_progress)
    finally:
        remaining = producer.flush(60)
    if remaining or failures:
        raise KafkaException(f"{remaining} undelivered, {len(failures)} failed: {failures[:3]}")
    return published
