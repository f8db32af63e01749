"""A bounded, append-only, segmented on-disk journal of feed records.

When Kafka is unreachable the forwarder spools every record here, in arrival
order, and replays it in the same order when the broker is back. Records are
framed as ``>IqBB`` (payload length, receive_ts ms, kind, reason) + payload.
A segment is deleted only after every record read from it was acknowledged
by Kafka (:meth:`Journal.release`). The journal never drops silently: when
it is full, :meth:`append` raises :class:`JournalFull` and the caller counts
and logs the loss. Single-threaded use (the forwarder thread owns it).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from producers.errors import JournalError

logger = logging.getLogger(__name__)

_HEADER: Final = struct.Struct(">IqBB")
_PREFIX: Final = "journal-"
_SUFFIX: Final = ".log"


class JournalFull(JournalError):
    """The journal reached its size bound; ``not_written`` records were not written."""

    def __init__(self, message: str, not_written: int = 1) -> None:
        super().__init__(message)
        self.not_written = not_written


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One spooled feed record."""

    receive_ts: int
    kind: int  # see producers.forwarder.RecordKind
    reason: int
    payload: bytes


class Journal:
    """Segment files ``journal-<seq>.log`` in one directory."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._segments: list[int] = sorted(
            int(p.name[len(_PREFIX) : -len(_SUFFIX)])
            for p in directory.glob(f"{_PREFIX}*{_SUFFIX}")
        )
        self._size = sum(self._path(s).stat().st_size for s in self._segments)
        self._writer: BinaryIO | None = None
        self._writer_seq = -1
        self.records_written = 0
        if self._segments:
            logger.warning(
                "journal %s holds %d segment(s), %d bytes from an earlier run: they will be "
                "replayed to Kafka first",
                directory,
                len(self._segments),
                self._size,
            )

    def _path(self, seq: int) -> Path:
        return self.directory / f"{_PREFIX}{seq:012d}{_SUFFIX}"

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def empty(self) -> bool:
        return self._size == 0 and not self._segments

    def append_many(self, records: list[JournalRecord]) -> None:
        """Append records in order; raises JournalFull (nothing partial is lost silently:
        records before the bound are written, the exception says how many were not)."""
        for i, rec in enumerate(records):
            try:
                self.append(rec)
            except JournalFull as exc:
                lost = len(records) - i
                raise JournalFull(f"{lost} record(s) not journaled: {exc}", lost) from exc

    def append(self, rec: JournalRecord) -> None:
        frame = _HEADER.pack(len(rec.payload), rec.receive_ts, rec.kind, rec.reason) + rec.payload
        if self._size + len(frame) > self.max_bytes:
            raise JournalFull(f"journal at {self._size} of {self.max_bytes} bytes")
        writer = self._current_writer(len(frame))
        try:
            writer.write(frame)
        except OSError as exc:
            raise JournalError(f"cannot write journal {self.directory}: {exc}") from exc
        self._size += len(frame)
        self.records_written += 1

    def _current_writer(self, incoming: int) -> BinaryIO:
        if self._writer is not None and self._writer.tell() + incoming > self.segment_bytes:
            self._close_writer()
        if self._writer is None:
            seq = (self._segments[-1] + 1) if self._segments else 1
            self._segments.append(seq)
            self._writer = self._path(seq).open("ab", buffering=1024 * 1024)
            self._writer_seq = seq
        return self._writer

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())
            self._writer.close()
            self._writer = None
            self._writer_seq = -1

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def oldest_segment(self) -> int | None:
        """The oldest segment, sealed first if it is still being written."""
        if not self._segments:
            return None
        if self._segments[0] == self._writer_seq:
            self._close_writer()
        return self._segments[0]

    def read_segment(self, seq: int) -> Iterator[JournalRecord]:
        """Every record of a sealed segment, in order."""
        path = self._path(seq)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise JournalError(f"cannot read journal segment {path}: {exc}") from exc
        pos, end = 0, len(data)
        while pos + _HEADER.size <= end:
            length, receive_ts, kind, reason = _HEADER.unpack_from(data, pos)
            start = pos + _HEADER.size
            if start + length > end:
                logger.error("journal segment %s has a torn last record at %d: skipped", path, pos)
                break
            yield JournalRecord(receive_ts, kind, reason, data[start : start + length])
            pos = start + length

    def release(self, seq: int) -> None:
        """Delete a segment whose every record Kafka has acknowledged."""
        path = self._path(seq)
        size = path.stat().st_size if path.exists() else 0
        path.unlink(missing_ok=True)
        self._segments.remove(seq)
        self._size -= size

    def close(self) -> None:
        self._close_writer()
