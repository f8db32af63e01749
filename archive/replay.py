"""``hqstream replay``: an archived day published again to Kafka, at a chosen speed.

The day is read in exchange-time order and paced by
:mod:`hqcore.parquet_archive.reader` (shared with the gateway's
``replay_day``). Records go to ``<prefix>`` + the topic, keyed by code and
partitioned with murmur2 like the live ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archive.settings import ArchiveSettings
from hqcore.parquet_archive.arrow_schema import SPECS, Dataset
from hqcore.parquet_archive.errors import NoSuchDay
from hqcore.parquet_archive.reader import Pacer, RowGroupRef, events, index_day
from hqcore.parquet_archive.storage import Storage, open_storage
from schemas.exchange import shanghai_datetime


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
