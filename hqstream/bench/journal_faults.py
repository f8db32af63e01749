"""Faults of the receiver's journal, as reusable checks: each returns one row.

* :func:`receiver_kill_while_spooling`: SIGKILL the receiver process while it
  spools (broker down), restart it, bring Kafka up, find every accepted line.
* :func:`receiver_kill_in_flight`: SIGKILL the receiver with lines read and not
  acknowledged (and again with acknowledged lines whose checkpoint was lost);
  the write-ahead log brings every line to Kafka exactly once.
* :func:`journal_corruption`: flip a kind byte, a length, tear the tail; every
  good record reaches Kafka in order, the damaged bytes reach the DLQ.
* :func:`disk_full`: a 1 MiB tmpfs (or a fake ENOSPC) under the journal; every
  line is journaled or counted as dropped, the forwarder keeps going.
* :func:`broker_pause`: SIGSTOP the broker under a steady feed; seconds until
  records reach the journal, then every line in Kafka, in order per key.

Used by the tests (tests/bench/test_journal_faults.py) and by
``hqstream bench journal-faults``; the feed stand-in and the tally live in
hqstream/bench/fault_plumbing.py. Loopback only; every process it starts it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from hqstream.bench.fault_plumbing import (
    LineFeed,
    create_topics,
    metric,
    quote_line,
    read_topic,
    tally,
    wait_for,
)
from hqstream.local_runner import ROOT, LocalKafka, free_port
from producers.forwarder import Forwarder
from producers.journal import Journal, JournalRecord, encode_record
from producers.receiver import Receiver
from producers.settings import ReceiverSettings
from schemas import dlq


@dataclass(frozen=True)
class FaultResult:
    """One row: ``lost`` counts lines accepted by the receiver that never reached Kafka."""

    fault: str
    sent: int
    in_kafka: int
    lost: int
    duplicated: int
    out_of_order: int
    dropped_counted: int = 0
    dlq: int = 0
    seconds: float = 0.0
    note: str = ""


# -- 1. SIGKILL of the receiver while it spools ------------------------------------------


@contextlib.contextmanager
def _receiver_process(
    env: dict[str, str], log: Path, root: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hqstream.cli", "produce"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,  # `python -m` puts the cwd first on sys.path: this tree's code runs
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def _receiver_env(
    bootstrap: str, feed: LineFeed, token: str, topics: tuple[str, str], work: Path, port: int
) -> dict[str, str]:
    """A ``hqstream produce`` process's environment: ``feed`` on loopback, the raw and
    DLQ ``topics``, its journal under ``work``, metrics on ``port``."""
    raw, dead = topics
    return {
        **os.environ,
        "HQ_KAFKA_BOOTSTRAP": bootstrap,
        "HQ_FEED_ADDR": f"127.0.0.1:{feed.port}",
        "HQ_FEED_TOKEN": token,
        "HQ_RAW_TOPIC": raw,
        "HQ_DLQ_TOPIC": dead,
        "HQ_JOURNAL_DIR": str(work / "journal"),
        "HQ_METRICS_PORT": str(port),
        "HQ_HEARTBEAT_TIMEOUT_S": "600",
        "HQ_BACKOFF_INITIAL_S": "0.1",
        "HQ_BACKOFF_MAX_S": "0.5",
        "HQ_LOG_LEVEL": "INFO",
    }


def receiver_kill_while_spooling(
    broker: LocalKafka, work: Path, lines: int = 6000, receiver_root: Path = ROOT
) -> FaultResult:
    """Broker down; the receiver journals ``lines`` lines and is SIGKILLed mid-stream while
    more arrive; restarted, it journals ``lines`` more; the broker comes back. Every line
    it had accepted (journaled) must be in Kafka, in order per key; of the lines that
    arrived around the kill only a tail may be missing (never accepted), never a hole.
    ``receiver_root``: the source tree the receiver runs from (another checkout, to
    compare)."""
    work.mkdir(parents=True, exist_ok=True)
    raw, dead = create_topics(broker.bootstrap)
    broker.kill()
    token = secrets.token_urlsafe(12)
    feed = LineFeed(token)
    port = free_port()
    env = _receiver_env(broker.bootstrap, feed, token, (raw, dead), work, port)
    seq = 0
    accepted: list[bytes] = []
    around_kill: list[bytes] = []

    def batch(n: int) -> list[bytes]:
        nonlocal seq
        out = [quote_line(seq + i) for i in range(n)]
        seq += n
        return out

    try:
        with _receiver_process(env, work / "receiver-1.log", receiver_root) as first:
            feed.wait_client()
            for _ in range(lines // 200):
                chunk = batch(200)
                feed.send_surely(chunk)
                accepted.extend(chunk)
            wait_for(lambda: metric(port, "hq_receiver_journaled_total") >= len(accepted), 60,
                  "the first lines to be journaled")  # fmt: skip
            stop = threading.Event()

            def pump() -> None:
                while not stop.is_set():
                    chunk = batch(50)
                    if not feed.send(chunk):
                        return
                    around_kill.extend(chunk)
                    time.sleep(0.002)

            pumper = threading.Thread(target=pump)
            pumper.start()
            time.sleep(0.5)
            first.send_signal(signal.SIGKILL)  # mid-stream
            first.wait(10)
            stop.set()
            pumper.join(10)
            feed.drop_client()
        with _receiver_process(env, work / "receiver-2.log", receiver_root):
            feed.wait_client()
            later: list[bytes] = []
            for _ in range(lines // 200):
                chunk = batch(200)
                feed.send_surely(chunk)
                later.extend(chunk)
            wait_for(lambda: metric(port, "hq_receiver_journaled_total") >= len(later), 60,
                  "the lines after the restart to be journaled")  # fmt: skip
            accepted.extend(later)
            broker.restart()
            wait_for(
                lambda: (
                    metric(port, "hq_receiver_journal_bytes") == 0
                    and metric(port, "hq_receiver_kafka_up") == 1
                ),
                180,
                "the journal to be replayed",
            )
    finally:
        feed.close()
    got = [m.value() or b"" for m in read_topic(broker.bootstrap, raw)]
    t = tally(accepted, got, optional=frozenset(around_kill))
    got_set = set(got)
    arrived = [line in got_set for line in around_kill]
    kept = arrived.index(False) if False in arrived else len(arrived)
    holes = sum(arrived[kept:])
    return FaultResult(
        "receiver SIGKILL while spooling",
        len(accepted) + len(around_kill),
        len(got_set),
        t.lost + holes,
        t.duplicated,
        t.out_of_order,
        note=f"{kept} of {len(around_kill)} lines sent around the kill were accepted first",
    )


# -- 1b. SIGKILL of the receiver with lines in memory -------------------------------------


def receiver_kill_in_flight(bootstrap: str, work: Path, lines: int = 2000) -> FaultResult:
    """The write-ahead log (producers/wal.py), against a live broker, three receivers:

    1. lingers a minute (``HQ_LINGER_MS``): reads ``lines`` lines, none acked, SIGKILL;
    2. finds them in the write-ahead log and sends them; reads ``lines`` more, all
       acked; SIGKILL; then its ``settled`` file is deleted (a crash between the acks
       and their checkpoint, at its worst: every logged batch is in doubt);
    3. finds the second batch in doubt, every line already in Kafka (skipped), and
       reads ``lines`` more.

    Every line must be on the raw topic exactly once."""
    work.mkdir(parents=True, exist_ok=True)
    raw, dead = create_topics(bootstrap)
    token = secrets.token_urlsafe(12)
    feed = LineFeed(token)
    port = free_port()
    env = _receiver_env(bootstrap, feed, token, (raw, dead), work, port)
    lingering = {**env, "HQ_LINGER_MS": "60000", "HQ_PRODUCER_DELIVERY_TIMEOUT_S": "120"}
    sent: list[bytes] = []
    figures: dict[str, float] = {}

    def feed_lines(what: str) -> None:
        batch = [quote_line(len(sent) + i) for i in range(lines)]
        for i in range(0, lines, 100):
            feed.send_surely(batch[i : i + 100])
        sent.extend(batch)
        wait_for(lambda: metric(port, "hq_receiver_lines_total") >= lines, 60, what)

    def kill(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        feed.drop_client()

    def caught_up(total: float) -> bool:
        """Kafka holds ``total`` lines of this receiver (skipped ones count as acked)."""
        return (
            metric(port, "hq_receiver_produced_total") >= total
            and metric(port, "hq_receiver_journal_bytes") == 0
        )

    started = time.monotonic()
    try:
        with _receiver_process(lingering, work / "receiver-1.log", ROOT) as first:
            feed.wait_client()
            feed_lines("the first receiver to read its lines")
            figures["acked before kill 1"] = metric(port, "hq_receiver_produced_total")
            kill(first)
        with _receiver_process(env, work / "receiver-2.log", ROOT) as second:
            feed.wait_client()
            wait_for(lambda: caught_up(lines), 60, "the recovered lines to reach Kafka")
            figures["recovered 2"] = metric(port, "hq_receiver_wal_recovered_total")
            feed_lines("the second receiver to read its lines")
            wait_for(lambda: caught_up(2 * lines), 60, "the second lines to be acked")
            kill(second)
        (work / "journal" / "wal" / "settled").unlink(missing_ok=True)
        with _receiver_process(env, work / "receiver-3.log", ROOT):
            feed.wait_client()
            # counted before the metrics are served
            wait_for(lambda: metric(port, "hq_receiver_connected") == 1, 60, "the third receiver")
            figures["recovered 3"] = metric(port, "hq_receiver_wal_recovered_total")
            wait_for(lambda: caught_up(figures["recovered 3"]), 60, "the replay")
            figures["skipped 3"] = metric(port, "hq_receiver_replay_skipped_total")
            feed_lines("the third receiver to read its lines")
            wait_for(lambda: caught_up(figures["recovered 3"] + lines), 60, "the last acks")
    finally:
        feed.close()
    got = [m.value() or b"" for m in read_topic(bootstrap, raw)]
    t = tally(sent, got)
    return FaultResult(
        "receiver SIGKILL with lines in memory (twice)",
        len(sent),
        len(set(got)),
        t.lost,
        t.duplicated,
        t.out_of_order,
        seconds=time.monotonic() - started,
        note=(
            f"kill 1: {figures['acked before kill 1']:.0f} acked, "
            f"{figures['recovered 2']:.0f} recovered; kill 2 (checkpoint lost): "
            f"{figures['recovered 3']:.0f} in doubt, {figures['skipped 3']:.0f} found in "
            "Kafka and skipped"
        ),
    )


# -- 2. corruption of the journal --------------------------------------------------------


def journal_corruption(bootstrap: str, work: Path, lines: int = 3000) -> FaultResult:
    """A journal with a flipped kind byte, a corrupt length and a torn tail, replayed by
    a forwarder to a live broker."""
    work.mkdir(parents=True, exist_ok=True)
    raw, dead = create_topics(bootstrap)
    directory = work / "journal-corrupt"
    journal = Journal(directory, 1 << 30, 64 * 1024)
    sent = [quote_line(i) for i in range(lines)]
    journal.append_many([JournalRecord(1_700_000_000_000, 0, 0, line) for line in sent])
    journal.close()
    segments = sorted(directory.glob("journal-*.log"))
    frame = len(encode_record(JournalRecord(0, 0, 0, sent[0])))
    if len(segments) < 3:
        raise ValueError(f"{lines} lines make {len(segments)} segment(s); 3 are needed")
    damaged: list[bytes] = []  # lines whose record is damaged
    expect_in_dlq: list[bytes] = []  # the bytes the DLQ must get for them
    for seg, what, offset in [
        (segments[0], "kind", 20),
        (segments[1], "length", 8),
        (segments[-1], "tail", 0),
    ]:
        data = bytearray(seg.read_bytes())
        records = (len(data) - 16) // frame
        pos = 16 + (records // 2 if what != "tail" else records - 1) * frame
        damaged.append(_line_in(bytes(data[pos : pos + frame])))
        if what == "tail":
            data = data[: pos + frame // 2]  # a torn last record
        else:
            data[pos + offset] ^= 0x5A
        expect_in_dlq.append(bytes(data[pos : pos + frame]))
        seg.write_bytes(bytes(data))
    settings = ReceiverSettings(
        kafka_bootstrap=bootstrap, raw_topic=raw, dlq_topic=dead, journal_dir=directory
    )
    journal = Journal.from_settings(settings)  # cuts the torn tail off at start
    forwarder = Forwarder(settings, journal)
    forwarder.start()
    try:
        wait_for(lambda: not forwarder.spooling or forwarder.failure is not None, 120, "replay")
    finally:
        forwarder.stop()
    if forwarder.failure is not None:
        raise RuntimeError(f"the forwarder failed on its own journal: {forwarder.failure}")
    got = [m.value() or b"" for m in read_topic(bootstrap, raw)]
    dead_values = [
        m.value() or b""
        for m in read_topic(bootstrap, dead)
        if dict(m.headers() or []).get(dlq.REASON) == b"journal_corrupt"
    ]
    in_dlq = sum(1 for chunk in expect_in_dlq if chunk in dead_values)
    good = [line for line in sent if line not in set(damaged)]
    t = tally(good, got)
    return FaultResult(
        "journal corruption (kind byte, length, torn tail)",
        lines,
        len(set(got)),
        t.lost + len(damaged) - in_dlq,
        t.duplicated,
        t.out_of_order,
        dlq=len(dead_values),
        note=f"{in_dlq} of {len(damaged)} damaged records' bytes found in the DLQ; "
        f"{len(segments)} segments released: {not list(directory.glob('journal-*.log'))}",
    )


def _line_in(frame: bytes) -> bytes:
    start = frame.find(b"sh6")
    end = frame.find(b"$x", start)
    return frame[start : end + 2]


# -- 3. disk full ------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(work: Path, size: str = "1m") -> Iterator[Path | None]:
    """A tmpfs of ``size`` (needs root); None when it cannot be mounted."""
    mnt = work / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir(parents=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
    )
    if res.returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def disk_full(work: Path, journal_dir: Path | None = None, lines: int = 30_000) -> FaultResult:
    """Kafka unreachable, the journal's disk fills up: every line submitted is journaled
    or counted in hq_receiver_dropped_total{reason="disk_full"}; the forwarder keeps
    taking lines; at most one error line per 10 s. ``journal_dir`` None: a fake ENOSPC
    after 1 MiB of journal writes."""
    directory = journal_dir or work / "journal-enospc"
    settings = ReceiverSettings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",  # nothing listens: Kafka is down
        raw_topic="unused",
        dlq_topic="unused",
        journal_dir=directory,
        journal_segment_bytes=256 * 1024,
        journal_fsync_ms=0,
    )
    restore = _fake_enospc(1 << 20) if journal_dir is None else None
    errors = _ErrorCounter()
    logging.getLogger("producers.forwarder").addHandler(errors)
    forwarder = Forwarder(settings, Journal.from_settings(settings))
    forwarder.start()
    started = time.monotonic()
    try:
        for i in range(0, lines, 100):
            forwarder.submit(
                1_700_000_000_000, [("sse_szse", quote_line(j)) for j in range(i, i + 100)]
            )
            time.sleep(0.001)
        wait_for(
            lambda: (
                forwarder.queue_bytes == 0
                and forwarder.journal.records_written + forwarder.dropped >= lines
            ),
            60,
            "every line to be journaled or counted",
        )
        alive = forwarder.running and forwarder.failure is None
    finally:
        forwarder.stop(timeout=1)
        logging.getLogger("producers.forwarder").removeHandler(errors)
        if restore is not None:
            restore()
    seconds = time.monotonic() - started
    written = forwarder.journal.records_written
    unaccounted = lines - written - forwarder.dropped
    readable = Journal(directory, 1 << 40, 1 << 30)
    back = 0
    while (seq := readable.oldest_segment()) is not None:
        back += sum(1 for _ in readable.read_segment(seq))
        readable.release(seq)
    return FaultResult(
        f"disk full ({'1 MiB tmpfs' if journal_dir else 'fake ENOSPC after 1 MiB'})",
        lines,
        0,
        unaccounted + (written - back),
        0,
        0,
        dropped_counted=forwarder.dropped,
        seconds=seconds,
        note=f"journaled {written}, read back {back}; forwarder alive: {alive}; "
        f"{errors.count} 'LOST' error line(s) in {seconds:.1f}s",
    )


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "LOST" in record.getMessage():
            self.count += 1


def _fake_enospc(budget: int) -> Any:
    import producers.journal as journal_mod

    real = os.write
    left = [budget]

    def write(fd: int, data: Any) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data[: left[0]]))
        left[0] -= n
        return n

    journal_mod.os.write = write  # type: ignore[attr-defined]

    def restore() -> None:
        journal_mod.os.write = real  # type: ignore[attr-defined]

    return restore


# -- 4. broker pause ---------------------------------------------------------------------


def broker_pause(
    broker: LocalKafka,
    work: Path,
    rate: int = 2000,
    pause_s: float = 20.0,
    delivery_timeout_s: float = 10.0,
) -> FaultResult:
    """A steady feed of ``rate`` lines/s; the broker is SIGSTOPped for ``pause_s``.
    ``seconds``: pause -> first record in the journal. Then every line must be in Kafka,
    in order per key."""
    work.mkdir(parents=True, exist_ok=True)
    raw, dead = create_topics(broker.bootstrap)
    token = secrets.token_urlsafe(12)
    feed = LineFeed(token)
    settings = ReceiverSettings(
        kafka_bootstrap=broker.bootstrap,
        feed_addr=f"127.0.0.1:{feed.port}",
        feed_token=SecretStr(token),
        raw_topic=raw,
        dlq_topic=dead,
        journal_dir=work / "journal-pause",
        producer_delivery_timeout_s=delivery_timeout_s,
        heartbeat_timeout_s=600,
    )
    sent: list[bytes] = []
    marks: dict[str, float] = {}

    async def run() -> Forwarder:
        forwarder = Forwarder(settings, Journal.from_settings(settings))
        forwarder.start()
        receiver = Receiver(settings, forwarder)
        task = asyncio.create_task(receiver.run())
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, feed.wait_client)

            async def pump(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    chunk = [quote_line(len(sent) + i) for i in range(rate // 20)]
                    feed.send(chunk)
                    sent.extend(chunk)
                    if (
                        "paused" in marks
                        and "journal" not in marks
                        and forwarder.journal.records_written
                    ):
                        marks["journal"] = time.monotonic()
                    await asyncio.sleep(0.05)

            await pump(3)
            broker.pause()
            marks["paused"] = time.monotonic()
            await pump(pause_s)
            marks.setdefault("journal", float("inf"))
            broker.resume()
            await pump(3)
            deadline = time.monotonic() + 120
            while forwarder.acked(raw) < len(sent) or forwarder.spooling:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        finally:
            receiver.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            await loop.run_in_executor(None, forwarder.stop)
        return forwarder

    try:
        forwarder = asyncio.run(run())
    finally:
        broker.resume()
        feed.close()
    got = [m.value() or b"" for m in read_topic(broker.bootstrap, raw)]
    t = tally(sent, got)
    handoff = marks["journal"] - marks["paused"]
    return FaultResult(
        f"broker SIGSTOP {pause_s:.0f}s (delivery timeout {delivery_timeout_s:g}s)",
        len(sent),
        len(set(got)),
        t.lost,
        t.duplicated,
        t.out_of_order,
        dropped_counted=forwarder.dropped,
        seconds=handoff,
        note=f"pause -> first record in the journal: {handoff:.1f}s; "
        f"journaled {forwarder.journal.records_written}",
    )


# -- the command -------------------------------------------------------------------------


def journal_faults_bench(
    pause_s: float = 20.0, delivery_timeout_s: float = 10.0, rate: int = 2000
) -> list[FaultResult]:
    """Every check above against a broker of its own; prints one markdown table."""
    import tempfile

    from rich.console import Console

    from hqstream.bench.common import calibration_row, machine

    console = Console()
    console.print(f"[bold]bench journal-faults[/]; machine: {machine()}")
    print(  # plain print: a markdown table must not be wrapped at the terminal width
        "\n| fault | sent | in Kafka | lost | dup | out of order | dropped (counted) "
        "| seconds | note |\n|---|---:|---:|---:|---:|---:|---:|---:|---|",
        flush=True,
    )
    rows: list[FaultResult] = []

    def add(r: FaultResult) -> None:
        rows.append(r)
        print(
            f"| {r.fault} | {r.sent:,} | {r.in_kafka:,} | {r.lost} | {r.duplicated} | "
            f"{r.out_of_order} | {r.dropped_counted:,} | {r.seconds:.1f} | {r.note} |",
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="hqfaults-") as tmp_name:
        tmp = Path(tmp_name)
        broker = LocalKafka(tmp / "broker")
        broker.start()
        try:
            add(journal_corruption(broker.bootstrap, tmp / "corrupt"))
            add(disk_full(tmp / "enospc"))
            with small_disk(tmp) as mnt:
                if mnt is not None:
                    add(disk_full(tmp / "tmpfs", journal_dir=mnt))
            add(
                broker_pause(
                    broker, tmp / "pause", rate, pause_s, delivery_timeout_s=delivery_timeout_s
                )
            )
            add(receiver_kill_while_spooling(broker, tmp / "kill"))
            add(receiver_kill_in_flight(broker.bootstrap, tmp / "in-flight"))
        finally:
            broker.stop()
    print(calibration_row(9))
    console.print(f"load average after the run: {os.getloadavg()[0]:.2f}")
    return rows
