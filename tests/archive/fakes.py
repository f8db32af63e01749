"""Stand-ins for confluent-kafka messages, and an archiver fed by hand (no broker)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archive.archiver import Archiver
from archive.settings import ArchiveSettings
from schemas import topics
from schemas.serde import make_codec


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(root: str, **over: Any) -> ArchiveSettings:
    return ArchiveSettings(root=root, metrics_port=0, **over)


def quote_messages(quotes: list[dict[str, Any]], partitions: int = 2) -> list[FakeMessage]:
    """The quotes as records of hq.ticks.normalized, spread over partitions by code."""
    codec = make_codec("quote")
    offsets = [0] * partitions
    out = []
    for q in quotes:
        p = int(q["code"]) % partitions
        out.append(FakeMessage(topics.NORMALIZED, p, offsets[p], codec.encode(q)))
        offsets[p] += 1
    return out


def feed(archiver: Archiver, messages: list[FakeMessage], chunk: int = 100) -> None:
    """Adds the messages ``chunk`` at a time, writing due batches after each chunk (as the
    consume loop does after each ``consume``)."""
    for i in range(0, len(messages), chunk):
        for m in messages[i : i + chunk]:
            archiver.add(m)  # type: ignore[arg-type]
        archiver.flush_due()


def record_messages(
    topic: str, schema: str, records: list[dict[str, Any]], partitions: int = 2
) -> list[FakeMessage]:
    """Any records as messages of ``topic`` (partition by code)."""
    codec = make_codec(schema)  # type: ignore[arg-type]
    offsets = [0] * partitions
    out = []
    for r in records:
        p = int(r["code"]) % partitions
        out.append(FakeMessage(topic, p, offsets[p], codec.encode(r)))
        offsets[p] += 1
    return out
