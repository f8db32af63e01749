"""``hqstream bench ingest``: feed simulator (max rate) -> receiver -> Kafka.

Measures the sustained lines/s the receiver gets into ``hq.ticks.raw`` with
zero loss (every line the simulator logged as sent is read back from Kafka,
as a multiset), and in the same run the ceiling of a bare confluent-kafka
producer sending the same bytes with the same producer settings, so the
receiver's cost is a ratio. The simulator runs as its own process (it is the
vendor); the receiver runs in this process, exactly the production code.
Loopback only; bounded by --snapshots.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr
from rich.console import Console
from rich.live import Live

from hqcore.logs import configure_logging
from hqstream.bench.common import bench_env, calibration_row, machine
from hqstream.local_runner import free_port, port_open
from producers.forwarder import Forwarder, producer_config
from producers.journal import Journal
from producers.protocol import code_of
from producers.receiver import Receiver
from producers.settings import ReceiverSettings
from producers.wal import WriteAheadLog
from schemas.topics import LineKind, raw_headers

console = Console()


def _create(bootstrap: str, partitions: int) -> str:
    name = f"bench.raw.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def _digest_counter(values: list[bytes]) -> collections.Counter[bytes]:
    return collections.Counter(hashlib.blake2b(v, digest_size=12).digest() for v in values)


def _read_back(bootstrap: str, topic: str, expected: int) -> collections.Counter[bytes]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 << 20,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    counter: collections.Counter[bytes] = collections.Counter()
    done: set[int] = {p for p, end in ends.items() if end == 0}
    deadline = time.monotonic() + 300
    while len(done) < len(parts) and time.monotonic() < deadline:
        for msg in consumer.consume(50_000, timeout=1.0):
            if msg.error() is not None:
                continue
            counter[hashlib.blake2b(msg.value() or b"", digest_size=12).digest()] += 1
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if offset + 1 >= ends[partition]:
                done.add(partition)
    consumer.close()
    return counter


def _bare_producer(
    bootstrap: str, topic: str, lines: list[bytes], settings: ReceiverSettings
) -> float:
    """lines/s of a bare confluent-kafka producer on the same bytes and settings."""
    producer = Producer(producer_config(settings.model_copy(update={"kafka_bootstrap": bootstrap})))
    ts = str(time.time_ns() // 1_000_000).encode()
    started = time.perf_counter()
    for line in lines:
        fmt: LineKind = "bse_json" if line[:1] == b"{" else "sse_szse"
        while True:
            try:
                producer.produce(
                    topic,
                    value=line,
                    key=code_of(line, fmt),
                    headers=raw_headers(fmt, ts, b"bench"),
                )
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - started
    del producer  # librdkafka closes its connections now, not after the broker is gone
    if remaining:
        raise RuntimeError(f"bare producer: {remaining} records not delivered")
    return len(lines) / elapsed


async def _run_pipeline(
    settings: ReceiverSettings, expected: int, wal: bool = True
) -> tuple[float, float, Receiver, Forwarder]:
    journal = Journal.from_settings(settings)
    log = WriteAheadLog(settings.journal_dir / "wal") if wal else None
    forwarder = Forwarder(settings, journal, log)
    forwarder.start()
    receiver = Receiver(settings, forwarder)
    task = asyncio.create_task(receiver.run())
    first = done = 0.0
    last_print = 0.0
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            await asyncio.sleep(0.02)
            now = time.perf_counter()
            if not first and receiver.stats.lines:
                first = now
            acked = forwarder.acked(settings.raw_topic)
            if now - last_print > 0.25:
                rate = acked / (now - first) if first and now > first else 0.0
                live.update(
                    f"received {receiver.stats.lines:,} / {expected:,} lines   "
                    f"acked {acked:,}   {rate:,.0f} lines/s   "
                    f"queue {forwarder.queue_bytes / 1e6:.1f} MB"
                )
                last_print = now
            if acked >= expected:
                done = now
                break
            if task.done():
                task.result()
                raise RuntimeError("receiver stopped before every line was acked")
    receiver.stop()
    await task
    await asyncio.get_running_loop().run_in_executor(None, forwarder.stop)
    return first, done, receiver, forwarder


@contextlib.contextmanager
def simulator(tmp: Path, stocks: int, snapshots: int) -> Iterator[tuple[int, str, Path]]:
    """The feed simulator at max rate as its own process: (port, token, sent log)."""
    token = secrets.token_urlsafe(16)
    port = free_port()
    sent_log = tmp / "sent.log"
    sim_env = {**os.environ, "HQ_FEED_TOKEN": token}
    with open(tmp / "sim.log", "w") as sim_log:
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hqstream.cli",
                "simulate",
                "--addr",
                f"127.0.0.1:{port}",
                "--stocks",
                str(stocks),
                "--max-rate",
                "--snapshots",
                str(snapshots),
                "--sent-log",
                str(sent_log),
            ],
            env=sim_env,
            stdout=subprocess.DEVNULL,
            stderr=sim_log,
        )
    try:
        deadline = time.monotonic() + 180  # pre-rendering 5,000 stocks on a loaded machine
        while not port_open(port):
            if time.monotonic() > deadline or sim.poll() is not None:
                raise RuntimeError(f"simulator did not start: {(tmp / 'sim.log').read_text()}")
            time.sleep(0.1)
        yield port, token, sent_log
    finally:
        sim.terminate()
        sim.wait(30)


def ingest(
    stocks: Annotated[int, typer.Option(help="stocks per snapshot")] = 5000,
    snapshots: Annotated[int, typer.Option(help="snapshots the simulator sends")] = 100,
    partitions: Annotated[int, typer.Option(help="partitions of the bench topic")] = 12,
    outage: Annotated[
        bool,
        typer.Option(
            help="broker down for the whole feed: everything is spooled to the journal, "
            "then the broker starts and the journal drains (always a broker of its own)"
        ),
    ] = False,
    fsync_ms: Annotated[
        int | None, typer.Option(help="HQ_JOURNAL_FSYNC_MS for this run (0: every batch)")
    ] = None,
    wal: Annotated[
        bool, typer.Option(help="the receiver's write-ahead log (off: to measure its cost)")
    ] = True,
) -> None:
    """Simulator at max rate -> receiver -> Kafka; zero-loss check; bare-producer baseline."""
    configure_logging("WARNING", "bench")
    if outage:
        from hqstream.bench.ingest_outage import outage_bench

        outage_bench(stocks, snapshots, partitions, fsync_ms)
        return
    expected = stocks * snapshots
    console.print(
        f"[bold]bench ingest[/]: {stocks} stocks x {snapshots} snapshots = "
        f"{expected:,} lines; machine: {machine()}"
    )
    with (
        bench_env() as env,
        tempfile.TemporaryDirectory(prefix="hqingest-") as tmp,
    ):
        with simulator(Path(tmp), stocks, snapshots) as (port, token, sent_log):
            raw = _create(env.bootstrap, partitions)
            settings = ReceiverSettings(
                kafka_bootstrap=env.bootstrap,
                feed_addr=f"127.0.0.1:{port}",
                feed_token=SecretStr(token),
                raw_topic=raw,
                dlq_topic=raw,
                journal_dir=Path(tmp) / "journal",
            )
            if fsync_ms is not None:
                settings = settings.model_copy(update={"journal_fsync_ms": fsync_ms})
            first, done, receiver, forwarder = asyncio.run(_run_pipeline(settings, expected, wal))
        pipeline_rate = expected / (done - first)
        console.print("\nverifying: reading every line back from Kafka ...")
        sent = [line for line in sent_log.read_bytes().split(b"\n") if line]
        got = _read_back(env.bootstrap, raw, expected)
        want = _digest_counter(sent)
        lost = sum((want - got).values())
        dup = sum((got - want).values())
        console.print("baseline: bare confluent-kafka producer on the same bytes ...")
        base_topic = _create(env.bootstrap, partitions)
        bare_rate = _bare_producer(env.bootstrap, base_topic, sent, settings)
    console.print()
    console.print("| measure | value |\n|---|---|")
    console.print(f"| lines sent by the simulator | {len(sent):,} |")
    console.print(f"| lines in hq.ticks.raw | {sum(got.values()):,} |")
    console.print(f"| lost / duplicated | {lost} / {dup} |")
    console.print(f"| receiver -> Kafka sustained | {pipeline_rate:,.0f} lines/s |")
    console.print(f"| write-ahead log | {'on' if wal else 'off'} |")
    console.print(f"| bare confluent-kafka producer, same bytes | {bare_rate:,.0f} lines/s |")
    console.print(f"| ratio receiver / bare | {pipeline_rate / bare_rate:.2f} |")
    console.print(f"| vs full-market rate (1,667 lines/s) | {pipeline_rate / 1667:.0f}x |")
    console.print(f"| dead-lettered / dropped | {receiver.stats.dlq} / {forwarder.dropped} |")
    console.print(calibration_row())
    if lost or dup or forwarder.dropped:
        raise typer.Exit(1)
