"""Records Kafka may hold although it never acknowledged them, found before a replay.

When the broker goes away, the records librdkafka had already sent get no
acknowledgement (purged in flight, or timed out) although the broker may have
written them before it died. The forwarder journals them with everything else,
and a plain replay would write them a second time. So:

* each failed record that may have reached the broker (any that was given a
  partition: even one purged from librdkafka's queue may be a retry) is
  remembered *in doubt*, with where it would be: its topic and partition, and
  what identifies it there (value, receive time and source headers);
* before the journal is replayed, :meth:`InDoubt.find_in_kafka` reads each of those
  partitions from the oldest doubtful record's receive time (a record's Kafka
  timestamp is when it was produced, never earlier) to its end, and counts
  which doubtful records are there;
* the replay skips those, once each (:class:`Skips`). Records a failed replay
  had already delivered are added too, as that segment is replayed again from
  its start.

What is found is bounded by the partitions' tails since the outage began. The
doubt lives in memory: a receiver killed during an outage replays its journal
after a restart without this check (duplicates, never a gap). The lines a
killed receiver had not settled come back from its write-ahead log
(:mod:`producers.wal`) in doubt on *any* partition of their topic, produced
before this process started: every partition is read from the oldest one's
receive time up to that start.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, NamedTuple

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from schemas import topics

logger = logging.getLogger(__name__)


class RecordId(NamedTuple):
    """What tells one of our records apart on a topic."""

    topic: str
    value: bytes
    receive_ts: bytes
    source: bytes


def header(msg: Message, name: str) -> bytes | None:
    headers = msg.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    for key, value in pairs:
        if key == name:
            return value if isinstance(value, bytes) else None
    return None


def record_id(msg: Message) -> RecordId:
    """The id of a consumed record (a delivery report carries no headers: the
    forwarder builds its ids from the journal record instead)."""
    return RecordId(
        msg.topic() or "",
        msg.value() or b"",
        header(msg, topics.H_RECEIVE_TS) or b"",
        header(msg, topics.H_SOURCE) or b"",
    )


class InDoubt:
    """Failed records that may be in Kafka anyway, by partition (``-1``: any partition
    of the topic, for records of a killed receiver's write-ahead log)."""

    def __init__(self) -> None:
        self._by_partition: dict[tuple[str, int], collections.Counter[RecordId]] = {}
        self._open_ended = False
        self._produced_before_ms = 0

    def __len__(self) -> int:
        return sum(c.total() for c in self._by_partition.values())

    def add(self, partition: int, rid: RecordId) -> None:
        """A record of this run: the partitions are read to their end."""
        self._by_partition.setdefault((rid.topic, partition), collections.Counter())[rid] += 1
        self._open_ended = True

    def add_anywhere(self, rid: RecordId, produced_before_ms: int) -> None:
        """A record of a killed receiver, produced (if at all) before ``produced_before_ms``
        (this process's start): a partition is read up to that time only."""
        self._by_partition.setdefault((rid.topic, -1), collections.Counter())[rid] += 1
        self._produced_before_ms = max(self._produced_before_ms, produced_before_ms)

    def clear(self) -> None:
        self._by_partition.clear()
        self._open_ended = False
        self._produced_before_ms = 0

    def find_in_kafka(
        self, config: dict[str, Any], timeout_s: float
    ) -> collections.Counter[RecordId]:
        """Which doubtful records the partitions hold. Raises KafkaException or
        TimeoutError if Kafka cannot be read within ``timeout_s``."""
        if not self._by_partition:
            return collections.Counter()
        started = time.monotonic()
        consumer = Consumer(
            {
                **config,
                "group.id": "hqstream-receiver-in-doubt",  # never joins, never commits
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 20,
            }
        )
        try:
            found = self._scan(consumer, started + timeout_s)
        finally:
            consumer.close()
        logger.info(
            "%d of %d record(s) in doubt were already in Kafka (checked in %.1f s): not replayed",
            found.total(),
            len(self),
            time.monotonic() - started,
        )
        return found

    def _starts(self, consumer: Consumer, deadline: float) -> list[TopicPartition]:
        """Each partition to read, from the oldest receive time of what may be there."""
        oldest: dict[tuple[str, int], int] = {}
        for (topic, partition), doubt in self._by_partition.items():
            since = min(int(r.receive_ts or 0) for r in doubt)
            if partition >= 0:
                wanted = [partition]
            else:
                meta = consumer.list_topics(topic, timeout=max(0.1, deadline - time.monotonic()))
                wanted = sorted(meta.topics[topic].partitions)
            for p in wanted:
                oldest[(topic, p)] = min(since, oldest.get((topic, p), since))
        return [TopicPartition(t, p, ts) for (t, p), ts in oldest.items()]

    def _scan(self, consumer: Consumer, deadline: float) -> collections.Counter[RecordId]:
        starts = consumer.offsets_for_times(
            self._starts(consumer, deadline), timeout=max(0.1, deadline - time.monotonic())
        )
        # OFFSET_END: nothing was written since the oldest doubtful record was received
        todo = [tp for tp in starts if tp.offset != OFFSET_END and tp.offset >= 0]
        found: collections.Counter[RecordId] = collections.Counter()
        if not todo:
            return found
        exact = {
            where: doubt.copy() for where, doubt in self._by_partition.items() if where[1] >= 0
        }
        anywhere = {
            topic: doubt.copy() for (topic, p), doubt in self._by_partition.items() if p < 0
        }
        # records of this run may be anywhere up to the end; a killed receiver's were
        # produced before this process started
        until = None if self._open_ended else self._produced_before_ms
        consumer.assign(todo)
        open_partitions = {(tp.topic, tp.partition) for tp in todo}
        while open_partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"partitions {sorted(open_partitions)} not read to their end")
            for msg in consumer.consume(10_000, timeout=0.1):
                where = (msg.topic() or "", msg.partition() or 0)
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                    open_partitions.discard(where)
                    continue
                if where not in open_partitions:
                    continue
                if until is not None and msg.timestamp()[1] >= until:
                    open_partitions.discard(where)
                    continue
                rid = record_id(msg)
                for doubt in (exact.get(where), anywhere.get(where[0])):
                    if doubt is not None and doubt[rid] > 0:
                        doubt[rid] -= 1
                        found[rid] += 1
                        break
        return found


class Skips:
    """Journaled records known to be in Kafka: the replay skips each once."""

    def __init__(self) -> None:
        self._counts: collections.Counter[RecordId] = collections.Counter()
        self.skipped = 0

    def __len__(self) -> int:
        return self._counts.total()

    def add(self, ids: collections.Counter[RecordId]) -> None:
        self._counts.update(ids)

    def add_one(self, rid: RecordId) -> None:
        self._counts[rid] += 1

    def take(self, rid: RecordId) -> bool:
        """True (and forgotten) if ``rid`` is known to be in Kafka."""
        if self._counts[rid] <= 0:
            return False
        self._counts[rid] -= 1
        if not self._counts[rid]:
            del self._counts[rid]
        self.skipped += 1
        return True

    def clear(self) -> None:
        self._counts.clear()
