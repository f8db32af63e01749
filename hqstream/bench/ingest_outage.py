"""``hqstream bench ingest --outage``: the journal's cost, spool then drain.

The broker is down for the whole feed: the simulator (max rate, its own
process) pushes every snapshot, the receiver (production code, in this
process) spools every line to the journal; then the broker starts and the
journal is replayed to Kafka. Prints lines/s spooled (with the fsync policy
given) and drained, and checks every line against the simulator's log.
Always runs a broker of its own (it has to kill it); loopback only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import typer
from pydantic import SecretStr
from rich.console import Console

from hqcore.signals import on_stop_signals
from hqstream.bench.common import calibration_row, machine
from hqstream.bench.ingest import _create, _digest_counter, _read_back, simulator
from hqstream.local_runner import LocalKafka
from producers.forwarder import Forwarder
from producers.journal import Journal
from producers.receiver import Receiver
from producers.settings import ReceiverSettings

console = Console()


class Stopped(Exception):
    """SIGINT or SIGTERM arrived while spooling or draining."""


@dataclass
class _Figures:
    spool_s: float = 0.0
    journal_bytes: int = 0
    fsyncs: int = 0
    fsync_s: float = 0.0
    broker_start_s: float = 0.0
    drain_s: float = 0.0
    dropped: int = 0
    dlq: int = 0


async def _spool_then_drain(
    settings: ReceiverSettings, expected: int, broker: LocalKafka
) -> _Figures:
    """Spool ``expected`` lines with the broker down, then start it and drain.

    SIGINT/SIGTERM stop it as they stop the receiver command: the receiver and
    the forwarder stop, and :class:`Stopped` is raised.
    """
    fig = _Figures()
    journal = Journal.from_settings(settings)
    forwarder = Forwarder(settings, journal)
    forwarder.start()
    receiver = Receiver(settings, forwarder)
    task = asyncio.create_task(receiver.run())
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    restore_handlers = on_stop_signals(lambda _signum: stopping.set(), loop)
    try:
        first = 0.0
        deadline = time.monotonic() + 600
        while journal.records_written + forwarder.dropped < expected:
            if stopping.is_set():
                raise Stopped
            if not first and receiver.stats.lines:
                first = time.perf_counter()
            if time.monotonic() > deadline or task.done() or forwarder.failure:
                raise RuntimeError(
                    f"spooling stalled at {journal.records_written:,} of {expected:,} lines"
                )
            await asyncio.sleep(0.01)
        fig.spool_s = time.perf_counter() - first
        fig.journal_bytes = journal.size_bytes
        fig.fsyncs = journal.fsyncs
        fig.fsync_s = journal.fsync_seconds
        fig.dropped = forwarder.dropped
        console.print(f"spooled {expected:,} lines in {fig.spool_s:.1f}s; starting the broker ...")
        started = time.perf_counter()
        await loop.run_in_executor(None, broker.restart)
        up = time.perf_counter()
        fig.broker_start_s = up - started
        while forwarder.spooling or forwarder.acked(settings.raw_topic) < expected:
            if stopping.is_set():
                raise Stopped
            if time.monotonic() > deadline + 600 or forwarder.failure:
                raise RuntimeError("the journal did not drain")
            await asyncio.sleep(0.01)
        fig.drain_s = time.perf_counter() - up
        fig.dlq = receiver.stats.dlq
    finally:
        receiver.stop()
        await task
        await loop.run_in_executor(None, forwarder.stop)
        restore_handlers()
    return fig


def outage_bench(stocks: int, snapshots: int, partitions: int, fsync_ms: int | None) -> None:
    expected = stocks * snapshots
    tmp_root = os.environ.get("HQ_BENCH_TMP")  # where the journal goes (its disk matters)
    with tempfile.TemporaryDirectory(prefix="hqoutage-", dir=tmp_root) as tmp_name:
        tmp = Path(tmp_name)
        broker = LocalKafka(tmp)
        broker.start()
        try:
            raw = _create(broker.bootstrap, partitions)
            broker.kill()  # the outage: nothing answers on the bootstrap port
            settings = ReceiverSettings(journal_dir=tmp / "journal")
            if fsync_ms is not None:
                settings = settings.model_copy(update={"journal_fsync_ms": fsync_ms})
            console.print(
                f"[bold]bench ingest --outage[/]: {stocks} stocks x {snapshots} snapshots = "
                f"{expected:,} lines; HQ_JOURNAL_FSYNC_MS={settings.journal_fsync_ms}; "
                f"journal on {_fs_of(tmp)}; machine: {machine()}; "
                f"load average {os.getloadavg()[0]:.2f}"
            )
            with simulator(tmp, stocks, snapshots) as (port, token, sent_log):
                settings = settings.model_copy(
                    update={
                        "kafka_bootstrap": broker.bootstrap,
                        "feed_addr": f"127.0.0.1:{port}",
                        "feed_token": SecretStr(token),
                        "raw_topic": raw,
                        "dlq_topic": raw,
                    }
                )
                try:
                    fig = asyncio.run(_spool_then_drain(settings, expected, broker))
                except Stopped:
                    console.print("stopped by a signal: nothing measured")
                    raise typer.Exit(130) from None
            sent = [line for line in sent_log.read_bytes().split(b"\n") if line]
            got = _read_back(broker.bootstrap, raw, expected)
            want = _digest_counter(sent)
            lost = sum((want - got).values())
            dup = sum((got - want).values())
            load = os.getloadavg()[0]
        finally:
            broker.stop()
    print()  # plain print: table rows must not wrap at the terminal width
    print("| measure | value |\n|---|---|")
    print(f"| lines sent by the simulator | {len(sent):,} |")
    print(f"| lines in hq.ticks.raw | {sum(got.values()):,} |")
    print(f"| lost / duplicated | {lost} / {dup} |")
    print(
        f"| spooled to the journal (broker down) | **{expected / fig.spool_s:,.0f} lines/s** "
        f"({fig.spool_s:.1f} s, {fig.journal_bytes / 1e6:.0f} MB) |"
    )
    print(
        f"| fdatasync while spooling | {fig.fsyncs:,} calls, {fig.fsync_s:.2f} s in all "
        f"({fig.fsync_s / max(1, fig.fsyncs) * 1000:.1f} ms each, "
        f"{fig.fsync_s / fig.spool_s:.0%} of the spool time) |"
    )
    print(f"| broker start | {fig.broker_start_s:.1f} s |")
    print(
        f"| drained to Kafka (replay) | **{expected / fig.drain_s:,.0f} lines/s** "
        f"({fig.drain_s:.1f} s) |"
    )
    print(f"| dead-lettered / dropped | {fig.dlq} / {fig.dropped} |")
    print(f"| load average after the run | {load:.2f} |")
    print(calibration_row())
    if lost or dup or fig.dropped:
        raise typer.Exit(1)


def _fs_of(path: Path) -> str:
    usage = shutil.disk_usage(path)
    best = ("?", "")
    with open("/proc/mounts") as fh:
        for line in fh:
            _dev, mnt, fstype, *_ = line.split()
            if str(path.resolve()).startswith(mnt) and len(mnt) >= len(best[1]):
                best = (fstype, mnt)
    return f"{best[0]} ({best[1]}, {usage.free / 1e9:.0f} GB free)"
