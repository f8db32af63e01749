"""The archiver's consume loop: Kafka -> batches per partition -> Parquet files.

One consumer in its own group reads the archived topics; each assigned
partition has one open batch, written when it reaches ``roll_bytes`` of
payload or has waited ``roll_seconds``. The order of events per batch is:
files written and renamed durably, *then* the offset committed. On
assignment, recovery reads the archive's file names: incomplete batches (a
crash between two renames) are deleted, and the partition resumes after the
last archived offset or the committed one, whichever is later; records at or
below the last archived offset are skipped. So a crash anywhere, even
between a rename and the commit, neither duplicates nor loses a row.
Several archivers in one group share the partitions like the stream workers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Message, TopicPartition

from archive import metrics
from archive.settings import ArchiveSettings
from archive.writer import Batch, BatchWriter
from hqcore.kafka_client import librdkafka_config
from hqcore.parquet_archive import layout
from hqcore.parquet_archive.arrow_schema import SPECS, Dataset
from hqcore.parquet_archive.storage import Storage, open_storage
from hqcore.signals import on_stop_signals
from schemas.serde import Codec, SerdeError, make_codec

logger = logging.getLogger(__name__)


@dataclass
class Figures:
    """Live figures: what was archived since start, and the lag."""

    rows: int = 0
    files: int = 0
    skipped: int = 0
    undecodable: int = 0
    lag: int = 0


class Archiver:
    """Consumes the archived topics and writes them to ``storage``."""

    def __init__(
        self,
        settings: ArchiveSettings,
        storage: Storage | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.storage = storage or open_storage(settings.root)
        self.clock = clock
        self.writer = BatchWriter(self.storage, settings.row_group_rows, settings.zstd_level)
        self.by_topic: dict[str, Dataset] = {}
        self.codecs: dict[str, Codec] = {}
        for name in settings.dataset_names:
            if name not in SPECS:
                raise ValueError(f"unknown dataset {name!r} (ticks, candles, alerts)")
            spec = SPECS[name]  # type: ignore[index]
            topic = settings.topic(spec.topic)
            self.by_topic[topic] = spec.name
            self.codecs[topic] = make_codec(spec.schema, settings.schema_registry_url, topic)
        self.batches: dict[tuple[str, int], Batch] = {}
        self.archived: dict[tuple[str, int], int] = {}  # last archived offset per partition
        self.figures = Figures()
        self.stop = threading.Event()
        self.consumer: Consumer | None = None

    # ------------------------------------------------------------ recovery --
    def recover(self, topic: str, partition: int, index: layout.ArchiveIndex | None = None) -> int:
        """Cleans up after a crash and returns the last archived offset (-1: none).

        ``index`` is the dataset's scan when the caller has one (one scan per
        dataset per assignment, not per partition).
        """
        dataset = self.by_topic[topic]
        index = index or layout.scan(self.storage, dataset)
        stale = [p for p in index.temporary if f"/{topic}+{partition}+" in p]
        orphans = index.incomplete_paths(topic, partition)
        leftovers = index.leftover_paths()
        if orphans or stale or leftovers:
            logger.warning(
                "%s[%d]: deleting %d parts of incomplete batches, %d temporary files, "
                "%d files already compacted",
                topic, partition, len(orphans), len(stale), len(leftovers),
            )  # fmt: skip
            self.storage.delete(orphans + stale + leftovers)
            index.forget(orphans + stale + leftovers)
        return index.archived_through(topic, partition)

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = {
            (tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=30)
        }
        scans: dict[str, layout.ArchiveIndex] = {}
        for tp in partitions:
            key = (tp.topic, tp.partition)
            dataset = self.by_topic[tp.topic]
            if dataset not in scans:
                scans[dataset] = layout.scan(self.storage, dataset)
            last = self.recover(tp.topic, tp.partition, scans[dataset])
            self.archived[key] = last
            self.batches.pop(key, None)
            start = committed.get(key, OFFSET_INVALID)
            if last >= 0 and (start < 0 or start <= last):
                start = last + 1
            tp.offset = start if start >= 0 else tp.offset
            logger.info("%s[%d]: archived through %d, reading from %s", *key, last, tp.offset)
        consumer.assign(partitions)
        metrics.HEALTH.joined = True

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A revoked partition's batch is written and committed before it moves on."""
        for tp in partitions:
            key = (tp.topic, tp.partition)
            batch = self.batches.pop(key, None)
            if batch is not None and not batch.empty:
                try:
                    self.flush(batch)
                except Exception:
                    logger.exception("%s[%d]: batch not written on revoke (read again)", *key)
            self.archived.pop(key, None)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A *lost* partition's batch is dropped, not written: another archiver may own
        the partition already (this one missed its session), and it reads them again.
        The whole assignment is lost at once: not ready until the next assignment."""
        metrics.HEALTH.joined = False
        for tp in partitions:
            key = (tp.topic, tp.partition)
            batch = self.batches.pop(key, None)
            if batch is not None and not batch.empty:
                logger.warning("%s[%d]: partition lost, %d buffered records dropped "
                               "(its new owner reads them)", *key, batch.row_count)  # fmt: skip
            self.archived.pop(key, None)

    # --------------------------------------------------------------- batches --
    def add(self, msg: Message) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        key = (topic, partition)
        if offset <= self.archived.get(key, -1):
            self.figures.skipped += 1
            metrics.SKIPPED.inc()
            return
        value = msg.value() or b""
        record: dict[str, Any] | None
        try:
            record = self.codecs[topic].decode(value)
        except SerdeError as exc:
            record = None
            self.figures.undecodable += 1
            metrics.UNDECODABLE.inc()
            logger.error("%s[%d]@%d not archived: %s", topic, partition, offset, exc)
        batch = self.batches.get(key)
        if batch is None:
            batch = self.batches[key] = Batch(self.by_topic[topic], topic, partition)
        batch.add(offset, record, len(value), self.clock())

    def due(self, batch: Batch, now: float) -> bool:
        if batch.empty:
            return False
        return (
            batch.payload_bytes >= self.settings.roll_bytes
            or now - batch.started >= self.settings.roll_seconds
        )

    def flush(self, batch: Batch) -> None:
        """Writes ``batch``'s files durably, then commits its offsets."""
        paths = self.writer.write(batch)
        key = (batch.topic, batch.partition)
        self.archived[key] = batch.last
        self.figures.rows += batch.row_count
        self.figures.files += len(paths)
        metrics.ROWS.labels(batch.dataset).inc(batch.row_count)
        metrics.FILES.labels(batch.dataset).inc(len(paths))
        if self.consumer is not None:
            tp = TopicPartition(batch.topic, batch.partition, batch.last + 1)
            try:
                self.consumer.commit(offsets=[tp], asynchronous=False)
            except Exception as exc:  # the files are the truth: a restart skips them
                logger.warning("%s[%d]: commit failed after archiving: %s", *key, exc)
        logger.debug("%s[%d] %d-%d: %d rows in %d files", *key, batch.first, batch.last,
                     batch.row_count, len(paths))  # fmt: skip

    def flush_due(self, force: bool = False) -> None:
        now = self.clock()
        for key, batch in list(self.batches.items()):
            if (force and not batch.empty) or self.due(batch, now):
                self.flush(batch)
                self.batches[key] = Batch(batch.dataset, batch.topic, batch.partition)

    # ------------------------------------------------------------------ loop --
    def lag(self) -> int:
        assert self.consumer is not None
        total = 0
        per_topic: dict[str, int] = {}
        for (topic, partition), last in self.archived.items():
            try:
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except Exception:
                continue
            behind = max(0, high - (last + 1))
            per_topic[topic] = per_topic.get(topic, 0) + behind
            total += behind
        for topic, value in per_topic.items():
            metrics.LAG.labels(topic).set(value)
        return total

    def run(self, on_figures: Callable[[Figures, float], None] | None = None) -> None:
        """Consumes until :attr:`stop` is set; writes what is buffered on the way out."""
        s = self.settings
        conf: dict[str, Any] = {
            **librdkafka_config(s),
            "group.id": s.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "isolation.level": "read_committed",
            "session.timeout.ms": s.session_timeout_ms,
        }
        if s.instance_id:
            conf["group.instance.id"] = s.instance_id
        consumer = Consumer(conf)
        self.consumer = consumer
        consumer.subscribe(
            list(self.by_topic),
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            on_lost=self.on_lost,
        )
        metrics.HEALTH.running = True
        last_report, rows_then = self.clock(), 0
        try:
            while not self.stop.is_set():
                for msg in consumer.consume(10_000, timeout=0.2):
                    err = msg.error()
                    if err is None:
                        self.add(msg)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        logger.warning("consume: %s", err)
                self.flush_due()
                now = self.clock()
                if now - last_report >= s.stats_interval_s:
                    self.figures.lag = self.lag()
                    rate = (self.figures.rows - rows_then) / (now - last_report)
                    if on_figures is not None:
                        on_figures(self.figures, rate)
                    last_report, rows_then = now, self.figures.rows
            self.flush_due(force=True)
        finally:
            metrics.HEALTH.running = False
            metrics.HEALTH.joined = False
            consumer.close()
            self.consumer = None


def run_archiver(settings: ArchiveSettings) -> Figures:
    """``hqstream archive``: runs until SIGINT/SIGTERM, logging live figures."""
    archiver = Archiver(settings)

    def _stop(signum: int) -> None:
        logger.info("signal %d: writing buffered batches and stopping", signum)
        archiver.stop.set()

    on_stop_signals(_stop)
    metrics.serve_metrics(settings.metrics_port)
    logger.info(
        "archiving %s to %s (group %s)", ", ".join(archiver.by_topic), settings.root,
        settings.group_id,
    )  # fmt: skip

    def report(f: Figures, rate: float) -> None:
        logger.info(
            "archive: %.0f rows/s, %d rows in %d files, lag %d, skipped %d, undecodable %d",
            rate, f.rows, f.files, f.lag, f.skipped, f.undecodable,
        )  # fmt: skip

    archiver.run(report)
    return archiver.figures
