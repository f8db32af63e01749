"""The receiver's write-ahead log: every batch of lines it reads, on disk before
it is forwarded, so a killed receiver loses nothing it had read.

Between reading a line and Kafka's acknowledgement a line lives in memory: the
forwarder's queue, then librdkafka's (linger, the request in flight). A
SIGKILL, an OOM kill or a crash there lost it (~50 lines at the full-market
rate). Now the reader appends each batch here first (one ``write(2)``, into the
page cache: it survives the process, not the node); the forwarder records
which batches are *settled* (acknowledged by Kafka, in the outage journal, or
counted as dropped) and segments whose every batch is settled are deleted.

At start-up, the batches of the previous run that were not settled are handed
to the outage journal as records *in doubt* (the broker may have written them
without the ack reaching us): the forwarder checks them against Kafka before
it replays them (:mod:`producers.in_doubt`), so a crash costs neither a line
nor a duplicate. What the kernel had received for the killed process but it
had not read is the protocol's loss: the feed has no resend.

On disk (``<journal_dir>/wal/``):

* ``wal-<first batch number>.log``: the journal's version-2 framing
  (:func:`producers.journal.encode_record`), one frame per batch: the lines
  joined by ``\\n`` (kind ``LINE_BATCH``; each line's kind is classified again
  when read back) or one DLQ record;
* ``settled``: the number of the newest batch settled with every older one
  (8 bytes, rewritten in place by the forwarder thread whenever it moves on);
  batches up to it are not in doubt.

Threads: the reader thread appends, rolls and deletes segments; the forwarder
thread only calls :meth:`WriteAheadLog.settle`. A failing disk never stops the
feed: the lines are forwarded anyway, with an error in the log.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from producers import metrics, protocol
from producers.journal import (
    FORMAT_VERSION,
    SEGMENT_MAGIC,
    DlqCause,
    JournalRecord,
    RecordKind,
    encode_record,
    scan_records,
)

logger = logging.getLogger(__name__)

#: a frame holding a batch of quote lines joined by b"\n" (only ever in the WAL)
LINE_BATCH: Final = 16
_SEGMENT_HEADER: Final = struct.Struct(">8sH6x")
_SETTLED: Final = struct.Struct(">q")
_PREFIX: Final = "wal-"
_SUFFIX: Final = ".log"
_ERROR_LOG_INTERVAL_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Recovered:
    """What the previous run had read and not settled, as outage-journal records."""

    records: list[JournalRecord]
    batches: int


class WriteAheadLog:
    """See the module docstring."""

    def __init__(
        self, directory: Path, roll_after_s: float = 1.0, segment_bytes: int = 8 << 20
    ) -> None:
        self.directory = directory
        self.roll_after_s = roll_after_s
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._settled_path = directory / "settled"
        self._segments: list[int] = []  # first batch number of each segment, oldest first
        self._fd = -1
        self._opened_at = 0.0
        self._written = 0
        self._next = 1  # the number the next batch gets
        self.settled_through = 0  # set by the forwarder thread
        self._checkpointed = 0
        self._settled_fd = -1
        self._last_error_log = -1e9
        self.write_errors = 0

    # -- start-up -----------------------------------------------------------------

    def recover(self) -> Recovered:
        """Read the previous run's unsettled batches. The caller journals the records
        (and syncs the journal), then calls :meth:`forget_old`, before anything else."""
        settled = self._read_settled()
        records: list[JournalRecord] = []
        batches = 0
        for first, path in self._old_segments():
            try:
                data = path.read_bytes()
            except OSError as exc:
                logger.error("cannot read write-ahead log %s: %s (its lines are lost)", path, exc)
                continue
            number: int | None = first  # None after a damaged stretch: numbers unknown
            for rec in scan_records(data):
                if rec.kind == RecordKind.JOURNAL_CORRUPT:  # torn or damaged: to the DLQ
                    logger.error(
                        "write-ahead log %s: %d byte(s) are not a valid frame: sent to the "
                        "DLQ as journal_corrupt; the batches after them are in doubt",
                        path,
                        len(rec.payload),
                    )
                    records.append(rec)
                    number = None
                    continue
                if number is None or number > settled:
                    batches += 1
                    records.extend(_unbatch(rec))
                if number is not None:
                    number += 1
        return Recovered(records, batches)

    def forget_old(self) -> None:
        """Delete the previous run's files (after :meth:`recover`'s records are safe)."""
        for _, path in self._old_segments():
            path.unlink(missing_ok=True)
        self._settled_path.unlink(missing_ok=True)

    def _old_segments(self) -> list[tuple[int, Path]]:
        found = []
        for p in self.directory.glob(f"{_PREFIX}*{_SUFFIX}"):
            digits = p.name[len(_PREFIX) : -len(_SUFFIX)]
            if digits.isdigit():
                found.append((int(digits), p))
        return sorted(found)

    def _read_settled(self) -> int:
        try:
            data = self._settled_path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            logger.error(
                "cannot read %s (%s): every logged batch is in doubt", self._settled_path, exc
            )
            return 0
        return _SETTLED.unpack(data[: _SETTLED.size])[0] if len(data) >= _SETTLED.size else 0

    # -- the reader thread ----------------------------------------------------------

    def append_lines(self, receive_ts: int, lines: list[bytes]) -> int:
        """Log one batch of quote lines; returns its number."""
        rec = JournalRecord(receive_ts, LINE_BATCH, 0, b"\n".join(lines))
        return self._append(encode_record(rec))

    def append_dlq(self, rec: JournalRecord) -> int:
        return self._append(encode_record(rec))

    def _append(self, frame: bytes) -> int:
        number = self._next
        self._next = number + 1
        try:
            if self._fd < 0 or self._due_to_roll():
                self._roll(number)
            written = os.write(self._fd, frame)
            if written != len(frame):
                raise OSError(errno.ENOSPC, "short write")
            self._written += written
        except OSError as exc:
            self._failed(exc)
        return number

    def _due_to_roll(self) -> bool:
        return (
            self._written >= self.segment_bytes
            or time.monotonic() - self._opened_at >= self.roll_after_s
        )

    def _roll(self, first: int) -> None:
        """Start a segment at batch ``first``; delete the settled ones."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._trim(first)
        path = self.directory / f"{_PREFIX}{first:016d}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        header = _SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION)
        try:
            if os.write(fd, header) != len(header):
                raise OSError(errno.ENOSPC, "short write")
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd, self._opened_at, self._written = fd, time.monotonic(), len(header)
        self._segments.append(first)

    def _trim(self, next_first: int | None = None) -> None:
        """Delete every sealed segment whose batches are all settled (``next_first``:
        the first batch of the segment being opened)."""
        settled = self.settled_through
        end = self._next if next_first is None else next_first
        while self._segments and (len(self._segments) > 1 or self._fd < 0):
            last_of_oldest = (self._segments[1] if len(self._segments) > 1 else end) - 1
            if last_of_oldest > settled:
                return
            first = self._segments.pop(0)
            (self.directory / f"{_PREFIX}{first:016d}{_SUFFIX}").unlink(missing_ok=True)

    def _failed(self, exc: OSError, close_segment: bool = True) -> None:
        """The feed goes on without crash safety for these lines; say so, not per line."""
        self.write_errors += 1
        metrics.WAL_ERRORS.inc()
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            logger.error(
                "cannot write the write-ahead log %s (%s): lines are still forwarded, but "
                "a receiver crash now would lose the ones in memory (%d failed write(s))",
                self.directory,
                exc,
                self.write_errors,
            )
        if close_segment and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- the forwarder thread -------------------------------------------------------

    def settle(self, through: int) -> None:
        """Batches up to ``through`` are settled (one ``pwrite`` when that changed)."""
        self.settled_through = through
        self._checkpoint()

    def _checkpoint(self) -> None:
        through = self.settled_through
        if through == self._checkpointed:
            return
        try:
            if self._settled_fd < 0:
                self._settled_fd = os.open(self._settled_path, os.O_WRONLY | os.O_CREAT, 0o644)
            os.pwrite(self._settled_fd, _SETTLED.pack(through), 0)
            self._checkpointed = through
        except OSError as exc:
            self._failed(exc, close_segment=False)  # the reader thread owns the segment

    # -- shutdown -------------------------------------------------------------------

    def close(self, settled_through: int) -> None:
        """Record what is settled and close; a clean stop (every batch settled) leaves
        no file behind."""
        self.settled_through = settled_through
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if settled_through >= self._next - 1:
            self._trim()
            if self._settled_fd >= 0:
                os.close(self._settled_fd)
                self._settled_fd = -1
            self._settled_path.unlink(missing_ok=True)
            return
        self._checkpoint()
        if self._settled_fd >= 0:
            os.close(self._settled_fd)
            self._settled_fd = -1

    @property
    def last_number(self) -> int:
        """The newest batch's number (0: none yet)."""
        return self._next - 1

    @property
    def segments(self) -> int:
        return len(self._segments)


class Unsettled:
    """Which logged batches are not settled yet, and so the newest number up to which
    all are (forwarder thread only). A batch counts its records; it is settled when
    each was acknowledged by Kafka, journaled or counted as dropped."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._order: collections.deque[int] = collections.deque()
        self._last_taken = 0

    def take(self, number: int, records: int) -> None:
        """A batch leaves the queue (again, when it was put back: counted once)."""
        if number > self._last_taken:
            self._last_taken = number
            self._counts[number] = records
            self._order.append(number)

    def settle(self, number: int, records: int = 1) -> None:
        left = self._counts.get(number)
        if left is None:
            return
        if left > records:
            self._counts[number] = left - records
        else:
            del self._counts[number]

    def through(self) -> int:
        """The newest number up to which every batch taken is settled."""
        order, counts = self._order, self._counts
        while order and order[0] not in counts:
            order.popleft()
        return order[0] - 1 if order else self._last_taken


def newest_line_read(directory: Path) -> bytes | None:
    """The last quote line a (stopped) receiver's write-ahead log holds: the newest it
    read. Everything its feed sent after this line it never read."""
    segments = sorted(directory.glob(f"{_PREFIX}*{_SUFFIX}"))
    for path in reversed(segments):
        batches = [r for r in scan_records(path.read_bytes()) if r.kind == LINE_BATCH]
        if batches:
            return batches[-1].payload.rsplit(b"\n", 1)[-1]
    return None


def _unbatch(rec: JournalRecord) -> list[JournalRecord]:
    """A logged batch as the outage journal's records (one per line or DLQ record)."""
    if rec.kind != LINE_BATCH:
        return [rec]
    out = []
    for line in rec.payload.split(b"\n"):
        kind = protocol.classify(line)
        if kind in ("sse_szse", "bse_json"):
            out.append(JournalRecord(rec.receive_ts, RecordKind.of_line(kind), DlqCause.NONE, line))
    return out
