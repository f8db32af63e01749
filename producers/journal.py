"""A bounded, append-only, segmented on-disk journal of feed records.

When Kafka is unreachable the forwarder spools every record here, in arrival
order, and replays it in the same order when the broker is back. Single-threaded
use (the forwarder thread owns it). It must never lose a record silently and
never stop the receiver: every refusal is an exception that says how many
records were not written (the caller counts and logs them), and every byte it
cannot read back is handed out as a ``RecordKind.JOURNAL_CORRUPT`` record for
the DLQ.

On-disk format, version 2 (``journal-<seq>.log``):

* a 16-byte segment header: ``HQJRNL\\0\\0``, ``>H`` version, 6 reserved bytes;
* records: ``\\xffJR\\xfe`` magic, ``>I`` CRC32, ``>IqBB`` (payload length,
  receive_ts ms, kind, reason), payload. The CRC (zlib) covers length, ts,
  kind, reason and payload.

Durability: every :meth:`Journal.append_many` is one ``write(2)`` straight to
the file (no userspace buffer), so a SIGKILL or OOM kill loses nothing already
appended; ``fdatasync`` runs at most every ``fsync_interval_ms`` (0: after
every append), which bounds what a node crash can lose.

Reading: a record whose magic, length or CRC is wrong is skipped by scanning
forward to the next offset where magic *and* CRC hold (a corrupt length never
drops the rest of a segment); the skipped bytes come back as
``RecordKind.JOURNAL_CORRUPT`` records. A torn tail (a partial record at the
end of the newest segment after a crash) is cut off at start-up and its bytes
kept as such a record. Version-1 segments (no header, ``>IqBB`` frames, no
checksum) from an older receiver are still read; from the first frame that
does not make sense the rest of such a segment is handed out as corrupt.
Segments of an unknown (newer) version are renamed ``*.log.v<N>`` and left
alone, with an error in the log.
"""

from __future__ import annotations

import bisect
import enum
import errno
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from producers import metrics
from producers.errors import JournalError
from schemas.dlq import DlqReason
from schemas.topics import LineKind

if TYPE_CHECKING:
    from producers.settings import ReceiverSettings

logger = logging.getLogger(__name__)

SEGMENT_MAGIC: Final = b"HQJRNL\x00\x00"
FORMAT_VERSION: Final = 2
_SEGMENT_HEADER: Final = struct.Struct(">8sH6x")
RECORD_MAGIC: Final = b"\xffJR\xfe"  # 0xff/0xfe never occur in UTF-8 text
_RECORD_PREFIX: Final = struct.Struct(">4sI")  # magic, crc32
_RECORD_FIELDS: Final = struct.Struct(">IqBB")  # length, receive_ts, kind, reason
_RECORD_HEADER_SIZE: Final = _RECORD_PREFIX.size + _RECORD_FIELDS.size
_V1_HEADER: Final = struct.Struct(">IqBB")
_V1_KINDS: Final = frozenset({0, 1, 2})
MAX_PAYLOAD: Final = 1 << 20  # lines are <= 64 KiB, DLQ copies <= 256 KiB
CORRUPT_CHUNK: Final = 256 * 1024  # corrupt bytes are handed out in pieces of this size
_PREFIX: Final = "journal-"
_SUFFIX: Final = ".log"

RefusalReason = Literal["journal_full", "disk_full", "journal_error"]


class RecordKind(enum.IntEnum):
    """What a journal record holds (its ``kind`` byte; values are on disk: never renumber)."""

    SSE_SZSE = 0  # a quote line for hq.ticks.raw (LineKind "sse_szse")
    BSE_JSON = 1  # a quote line for hq.ticks.raw (LineKind "bse_json")
    DLQ = 2  # a line the receiver dead-letters; ``reason`` is its DlqCause
    JOURNAL_CORRUPT = 3  # bytes of the journal that were not a valid record

    @classmethod
    def of_line(cls, kind: LineKind) -> RecordKind:
        return cls.BSE_JSON if kind == "bse_json" else cls.SSE_SZSE

    @property
    def line_kind(self) -> LineKind:
        """The raw topic's LineKind of a quote-line record."""
        return "bse_json" if self is RecordKind.BSE_JSON else "sse_szse"


class DlqCause(enum.IntEnum):
    """Why the receiver dead-letters a line (the ``reason`` byte of a DLQ record)."""

    NONE = 0
    LINE_TOO_LONG = 1
    INVALID_UTF8 = 2

    @property
    def reason(self) -> DlqReason:
        return "invalid_utf8" if self is DlqCause.INVALID_UTF8 else "line_too_long"

    @classmethod
    def of(cls, reason_byte: int) -> DlqCause:
        """The cause of a journaled DLQ record (a byte this version does not know:
        ``LINE_TOO_LONG``, as before)."""
        return cls.INVALID_UTF8 if reason_byte == cls.INVALID_UTF8 else cls.LINE_TOO_LONG

    @classmethod
    def of_reason(cls, reason: str) -> DlqCause:
        return cls.INVALID_UTF8 if reason == "invalid_utf8" else cls.LINE_TOO_LONG

    def detail(self, payload: bytes) -> str:
        """The DLQ detail sentence of a line dead-lettered for this cause."""
        if self is DlqCause.INVALID_UTF8:
            return "line is not valid UTF-8"
        return f"line of {len(payload)}+ bytes exceeds the 64 KiB limit"


class CorruptCause(enum.IntEnum):
    """Why bytes of the journal could not be read back (the ``reason`` of a corrupt record)."""

    BAD_RECORD = 0  # magic, length or CRC wrong; skipped up to the next good record
    TORN_TAIL = 1  # a partial record at the end of a segment (crash while writing)
    V1_FRAMING = 2  # a version-1 segment stops making sense from here on


class JournalRefused(JournalError):
    """``not_written`` records (the last ones of the call) were not written."""

    reason: RefusalReason = "journal_error"

    def __init__(self, message: str, not_written: int = 1) -> None:
        super().__init__(message)
        self.not_written = not_written


class JournalFull(JournalRefused):
    """The journal reached its configured size bound."""

    reason: RefusalReason = "journal_full"


class JournalDiskFull(JournalRefused):
    """The file system refused the write (ENOSPC, EDQUOT)."""

    reason: RefusalReason = "disk_full"


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One spooled feed record."""

    receive_ts: int
    kind: int  # a RecordKind (an int: a record of an unknown kind is kept, not lost)
    reason: int
    payload: bytes


def encode_record(rec: JournalRecord) -> bytes:
    """One version-2 frame: magic, CRC32, fields, payload."""
    fields = _RECORD_FIELDS.pack(len(rec.payload), rec.receive_ts, rec.kind, rec.reason)
    crc = zlib.crc32(rec.payload, zlib.crc32(fields))
    return _RECORD_PREFIX.pack(RECORD_MAGIC, crc) + fields + rec.payload


def _decode_at(data: bytes, pos: int) -> tuple[JournalRecord, int] | None:
    """The record at ``pos`` and the offset after it, or None when it does not check out."""
    end = len(data)
    if pos + _RECORD_HEADER_SIZE > end or data[pos : pos + 4] != RECORD_MAGIC:
        return None
    (crc,) = struct.unpack_from(">I", data, pos + 4)
    length, receive_ts, kind, reason = _RECORD_FIELDS.unpack_from(data, pos + 8)
    start = pos + _RECORD_HEADER_SIZE
    if length > MAX_PAYLOAD or start + length > end:
        return None
    payload = data[start : start + length]
    if zlib.crc32(payload, zlib.crc32(data[pos + 8 : start])) != crc:
        return None
    return JournalRecord(receive_ts, kind, reason, payload), start + length


def _next_good(data: bytes, pos: int) -> int:
    """The first offset >= pos where a whole, valid record starts (len(data) if none)."""
    i = data.find(RECORD_MAGIC, pos)
    while i >= 0:
        if _decode_at(data, i) is not None:
            return i
        i = data.find(RECORD_MAGIC, i + 1)
    return len(data)


def _scan_v2(data: bytes) -> Iterator[tuple[int, int, JournalRecord | None]]:
    """(start, end, record) for every good record and (start, end, None) for every
    stretch of bytes between them that is not one; covers the data after the header."""
    pos, end = _SEGMENT_HEADER.size, len(data)
    while pos < end:
        decoded = _decode_at(data, pos)
        if decoded is not None:
            rec, nxt = decoded
            yield pos, nxt, rec
        else:
            nxt = _next_good(data, pos + 1)
            yield pos, nxt, None
        pos = nxt


def scan_records(data: bytes) -> Iterator[JournalRecord]:
    """Every record of a version-2 segment's bytes (header included), in order; each
    stretch that is not a valid record comes out as ``JOURNAL_CORRUPT`` records."""
    for start, end, rec in _scan_v2(data):
        if rec is not None:
            yield rec
        else:
            cause = CorruptCause.TORN_TAIL if end == len(data) else CorruptCause.BAD_RECORD
            yield from Journal._corrupt_records(data[start:end], cause)


def segment_version(head: bytes) -> int:
    """The format version a segment's first bytes say (1 = the headerless old format,
    0 = an empty or torn header: nothing in it)."""
    if len(head) < _SEGMENT_HEADER.size:
        return 0 if SEGMENT_MAGIC.startswith(head[: len(SEGMENT_MAGIC)]) else 1
    magic, version = _SEGMENT_HEADER.unpack_from(head)
    return int(version) if magic == SEGMENT_MAGIC else 1


class Journal:
    """Segment files ``journal-<seq>.log`` in one directory; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int,
        fsync_interval_ms: int = 200,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_ms / 1000
        directory.mkdir(parents=True, exist_ok=True)
        self._segments: list[int] = self._find_segments()
        self._size = sum(self._path(s).stat().st_size for s in self._segments)
        self._fd = -1
        self._writer_seq = -1
        self._writer_pos = 0
        self._dirty = False
        self._last_sync = time.monotonic()
        self._fully_read: set[int] = set()
        self._corrupt_seen: set[tuple[int, int]] = set()
        self.records_written = 0
        self.corrupt_records = 0
        self.fsyncs = 0
        self.fsync_seconds = 0.0  # time spent in fdatasync: the durability policy's cost
        if self._segments:
            logger.warning(
                "journal %s holds %d segment(s), %d bytes from an earlier run: they will be "
                "replayed to Kafka first",
                directory,
                len(self._segments),
                self._size,
            )
            self._cut_torn_tail(self._segments[-1])

    @classmethod
    def from_settings(cls, settings: ReceiverSettings) -> Journal:
        return cls(
            settings.journal_dir,
            settings.journal_max_bytes,
            settings.journal_segment_bytes,
            settings.journal_fsync_ms,
        )

    # -- opening ------------------------------------------------------------------

    def _find_segments(self) -> list[int]:
        found: list[int] = []
        for p in self.directory.glob(f"{_PREFIX}*{_SUFFIX}"):
            digits = p.name[len(_PREFIX) : -len(_SUFFIX)]
            if not digits.isdigit():
                logger.warning("journal %s: ignoring stray file %s", self.directory, p.name)
                continue
            try:
                with p.open("rb") as fh:
                    version = segment_version(fh.read(_SEGMENT_HEADER.size))
            except OSError as exc:
                logger.error("cannot read journal segment %s: %s", p, exc)
                version = FORMAT_VERSION  # listed; the replay moves it aside if unreadable
            if version > FORMAT_VERSION:
                aside = p.with_name(f"{p.name}.v{version}")
                try:
                    p.rename(aside)
                except OSError as exc:
                    logger.error("cannot move %s aside: %s", p, exc)
                logger.error(
                    "journal segment %s has format version %d; this receiver reads 1-%d. "
                    "Moved aside to %s, not replayed and not deleted: replay it with a newer "
                    "receiver.",
                    p,
                    version,
                    FORMAT_VERSION,
                    aside.name,
                )
                continue
            found.append(int(digits))
        return sorted(found)

    def _cut_torn_tail(self, seq: int) -> None:
        """Cut a partial last record off the newest segment of the previous run; keep its
        bytes as corrupt records (in a new segment) so they still reach the DLQ."""
        path = self._path(seq)
        try:
            data = path.read_bytes()
        except OSError as exc:  # the replay moves it aside if it stays unreadable
            logger.error("cannot read journal segment %s: %s", path, exc)
            return
        if segment_version(data[: _SEGMENT_HEADER.size]) != FORMAT_VERSION:
            return
        last: tuple[int, int, JournalRecord | None] | None = None
        for last in _scan_v2(data):  # noqa: B007 - only the last stretch matters
            pass
        if last is None or last[2] is not None:
            return
        start = last[0]
        tail = data[start:]
        logger.warning(
            "journal segment %s ends with a torn record (%d bytes at offset %d): cut off, "
            "its bytes go to the DLQ (journal_corrupt)",
            path,
            len(tail),
            start,
        )
        try:
            self.append_many(self._corrupt_records(tail, CorruptCause.TORN_TAIL))
            self.sync()
        except JournalRefused as exc:
            logger.error("cannot keep the torn tail of %s (%s): left for the reader", path, exc)
            return
        self._corrupt_seen.add((seq, start))
        self._count_corrupt(len(tail))
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, start)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # the reader skips the tail again (not counted twice)
            logger.error("cannot cut the torn tail off %s: %s", path, exc)
            return
        self._size -= len(tail)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{_PREFIX}{seq:012d}{_SUFFIX}"

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def empty(self) -> bool:
        return self._size == 0 and not self._segments

    # -- writing ------------------------------------------------------------------

    def append(self, rec: JournalRecord) -> None:
        self.append_many([rec])

    def append_many(self, records: list[JournalRecord]) -> None:
        """Append records in order with one write per segment touched, then fsync if due.

        Raises a :class:`JournalRefused` subclass when some were not written: the
        records before the failure are written (whole), ``not_written`` counts the rest.
        """
        i = 0
        try:
            while i < len(records):
                i = self._append_chunk(records, i)
        finally:
            self.sync_if_due()

    def _append_chunk(self, records: list[JournalRecord], first: int) -> int:
        """Write records[first:] up to the end of the current segment; returns the index
        of the first record not written."""
        try:
            fd = self._current_writer()
        except JournalRefused as exc:
            exc.not_written = len(records) - first
            raise
        room = self.segment_bytes - self._writer_pos
        buf = bytearray()
        ends: list[int] = []
        i = first
        while i < len(records):
            frame = encode_record(records[i])
            if self._size + len(buf) + len(frame) > self.max_bytes:
                break
            if len(buf) + len(frame) > room and (buf or self._writer_pos > _SEGMENT_HEADER.size):
                break
            buf += frame
            ends.append(len(buf))
            i += 1
        if buf:
            try:
                self._write(fd, buf, ends)
            except JournalRefused as exc:
                exc.not_written = len(records) - first - exc.not_written
                raise
        if i < len(records):
            frame_len = _RECORD_HEADER_SIZE + len(records[i].payload)
            if self._size + frame_len > self.max_bytes:
                raise JournalFull(
                    f"{len(records) - i} record(s) not journaled: journal at {self._size} "
                    f"of {self.max_bytes} bytes",
                    len(records) - i,
                )
            self._seal()  # segment full: the next round opens a new one
        return i

    def _write(self, fd: int, buf: bytearray, ends: list[int]) -> None:
        """Write ``buf`` (frames ending at ``ends``) at the end of the segment. On an error,
        cut the file back to the last whole frame and raise with ``not_written`` set to
        the number of frames that *were* written (the caller turns it around)."""
        view = memoryview(buf)
        done = 0
        try:
            while done < len(buf):
                n = os.write(fd, view[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, "short write")
                done += n
        except OSError as exc:
            whole = bisect.bisect_right(ends, done)
            keep = ends[whole - 1] if whole else 0
            if keep < done:
                try:
                    os.ftruncate(fd, self._writer_pos + keep)
                except OSError as trunc_exc:  # the reader's resync copes with the torn bytes
                    logger.error("cannot cut a torn journal write back: %s", trunc_exc)
            self._writer_pos += keep
            self._size += keep
            self.records_written += whole
            self._dirty = self._dirty or keep > 0
            cls: type[JournalRefused] = (
                JournalDiskFull if exc.errno in (errno.ENOSPC, errno.EDQUOT) else JournalRefused
            )
            raise cls(f"cannot write journal {self.directory}: {exc}", whole) from exc
        self._writer_pos += len(buf)
        self._size += len(buf)
        self.records_written += len(ends)
        self._dirty = True

    def _current_writer(self) -> int:
        if self._fd >= 0:
            return self._fd
        seq = (self._segments[-1] + 1) if self._segments else 1
        path = self._path(seq)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        except OSError as exc:
            cls = JournalDiskFull if exc.errno in (errno.ENOSPC, errno.EDQUOT) else JournalRefused
            raise cls(f"cannot create journal segment {path}: {exc}") from exc
        header = _SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION)
        try:
            if os.write(fd, header) != len(header):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
            self._fsync_directory()
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            cls = JournalDiskFull if exc.errno in (errno.ENOSPC, errno.EDQUOT) else JournalRefused
            raise cls(f"cannot start journal segment {path}: {exc}") from exc
        self._segments.append(seq)
        self._fd, self._writer_seq, self._writer_pos = fd, seq, len(header)
        self._size += len(header)
        return fd

    def _fsync_directory(self) -> None:
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def sync_if_due(self) -> None:
        """fdatasync the open segment if it has unsynced data older than the interval."""
        if self._dirty and time.monotonic() - self._last_sync >= self.fsync_interval_s:
            self.sync()

    def sync(self) -> None:
        if self._fd >= 0 and self._dirty:
            started = time.monotonic()
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                logger.error("fdatasync of journal segment %d failed: %s", self._writer_seq, exc)
                return
            self.fsyncs += 1
            self.fsync_seconds += time.monotonic() - started
        self._dirty = False
        self._last_sync = time.monotonic()

    def _seal(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd, self._writer_seq, self._writer_pos = -1, -1, 0

    def flush(self) -> None:
        """Everything appended is already in the OS; make it durable now."""
        self.sync()

    # -- reading ------------------------------------------------------------------

    def oldest_segment(self) -> int | None:
        """The oldest segment, sealed first if it is still being written."""
        if not self._segments:
            return None
        if self._segments[0] == self._writer_seq:
            self._seal()
        return self._segments[0]

    def read_segment(self, seq: int) -> Iterator[JournalRecord]:
        """Every record of a sealed segment, in order; bytes that are not a valid record
        come out as ``RecordKind.JOURNAL_CORRUPT`` records (counted, logged), never
        silently skipped."""
        path = self._path(seq)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise JournalError(f"cannot read journal segment {path}: {exc}") from exc
        self._fully_read.discard(seq)
        version = segment_version(data[: _SEGMENT_HEADER.size])
        if version == 1:
            yield from self._read_v1(seq, data)
        elif version == FORMAT_VERSION:
            for start, end, rec in _scan_v2(data):
                if rec is not None:
                    yield rec
                    continue
                cause = CorruptCause.TORN_TAIL if end == len(data) else CorruptCause.BAD_RECORD
                self._report_corrupt(seq, start, end, cause)
                yield from self._corrupt_records(data[start:end], cause)
        self._fully_read.add(seq)

    def _read_v1(self, seq: int, data: bytes) -> Iterator[JournalRecord]:
        pos, end = 0, len(data)
        while pos < end:
            ok = pos + _V1_HEADER.size <= end
            if ok:
                length, receive_ts, kind, reason = _V1_HEADER.unpack_from(data, pos)
                start = pos + _V1_HEADER.size
                ok = kind in _V1_KINDS and length <= MAX_PAYLOAD and start + length <= end
            if not ok:
                self._report_corrupt(seq, pos, end, CorruptCause.V1_FRAMING)
                yield from self._corrupt_records(data[pos:], CorruptCause.V1_FRAMING)
                return
            yield JournalRecord(receive_ts, kind, reason, data[start : start + length])
            pos = start + length

    def _report_corrupt(self, seq: int, start: int, end: int, cause: CorruptCause) -> None:
        logger.error(
            "journal segment %s: %d byte(s) at offset %d are not a valid record (%s): "
            "skipped, sent to the DLQ as journal_corrupt",
            self._path(seq),
            end - start,
            start,
            cause.name.lower(),
        )
        if (seq, start) not in self._corrupt_seen:  # a segment read twice counts once
            self._corrupt_seen.add((seq, start))
            self._count_corrupt(end - start)

    def _count_corrupt(self, nbytes: int) -> None:
        pieces = max(1, -(-nbytes // CORRUPT_CHUNK))
        self.corrupt_records += pieces
        metrics.JOURNAL_CORRUPT.inc(pieces)

    @staticmethod
    def _corrupt_records(data: bytes, cause: CorruptCause) -> list[JournalRecord]:
        now = time.time_ns() // 1_000_000
        return [
            JournalRecord(now, RecordKind.JOURNAL_CORRUPT, cause, data[i : i + CORRUPT_CHUNK])
            for i in range(0, max(1, len(data)), CORRUPT_CHUNK)
        ]

    def release(self, seq: int) -> None:
        """Delete a segment whose every record Kafka has acknowledged. Refuses
        (JournalError) a segment that was not read to its end since it was sealed."""
        if seq not in self._fully_read:
            raise JournalError(f"journal segment {seq} was not read to the end: not deleted")
        path = self._path(seq)
        size = path.stat().st_size if path.exists() else 0
        path.unlink(missing_ok=True)
        self._segments.remove(seq)
        self._fully_read.discard(seq)
        self._size -= size

    def quarantine(self, seq: int) -> None:
        """Move an unreadable segment aside (``*.log.unreadable``): kept, never replayed."""
        if seq == self._writer_seq:
            self._seal()
        path = self._path(seq)
        size = path.stat().st_size if path.exists() else 0
        try:
            path.rename(path.with_name(path.name + ".unreadable"))
        except OSError as exc:
            logger.error("cannot move journal segment %s aside: %s", path, exc)
        self._segments.remove(seq)
        self._size -= size

    def close(self) -> None:
        self._seal()
