"""``hqstream bench produce-shapes``: what one way of producing the receiver's records costs
the broker and the producer, per 1,000 records, side by side on one broker.

The receiver's steady shape: ``--rate`` records a second in slices every 5 ms
(as the simulator's ``--spread``), random stock codes as keys over the tick
topic's partitions, ~250-byte values. Each way runs for ``--seconds`` per
slice, alternating (A B B A ...) after a warm-up of the broker's JIT:

* ``librdkafka``: the receiver's producer (5 ms linger, idempotent,
  ``acks=all``, LZ4): one produce request per partition batch
  (librdkafka#1700);
* ``librdkafka-none``: the same without compression;
* ``aiokafka-batches``: every slice's records appended to one record batch
  per partition and sent at once, one produce request per slice (as the
  workers' :class:`streams.outbox.BatchOutbox`): what a receiver built on
  aiokafka would cost.

The broker's CPU is read from /proc (its process group: the local runner
starts it in a session of its own); the producer's from ``getrusage`` of
this process (librdkafka's threads included).
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from collections.abc import Callable
from typing import Annotated

import typer
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from confluent_kafka import KafkaError, Message, Producer

from hqstream.bench.common import bench_env, calibration_row, console, machine
from hqstream.bench.proc_cpu import group_cpu_s
from hqstream.local_runner import create_topics
from schemas.topics import RAW, topic_specs
from streams.outbox import use_fast_lz4

SLICE_S = 0.005
WAYS = ("librdkafka", "librdkafka-none", "aiokafka-batches")
CODES = [b"%06d" % c for c in (*range(600000, 602500), *range(1, 2500))]


def _value(code: bytes, rng: random.Random) -> bytes:
    """A line-like value: the code, 60 random hex bytes and repeated numbers (~250 bytes)."""
    return b"sh" + code + b"$" + rng.randbytes(60).hex().encode() + b"$12.34$5678" * 9


def slices(rate: int, seconds: float) -> list[int]:
    """Records per 5 ms slice: ``rate`` a second, spread evenly."""
    per, carry, counts = rate * SLICE_S, 0.0, []
    for _ in range(round(seconds / SLICE_S)):
        carry += per
        counts.append(int(carry))
        carry -= int(carry)
    return counts


def _paced(counts: list[int], produce: Callable[[int], None]) -> None:
    next_at = time.monotonic()
    for count in counts:
        produce(count)
        next_at += SLICE_S
        if (wait := next_at - time.monotonic()) > 0:
            time.sleep(wait)


def _run_librdkafka(
    bootstrap: str, topic: str, counts: list[int], compression: str
) -> tuple[int, int]:
    producer = Producer({
        "bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
        "enable.idempotence": True, "compression.type": compression,
        "partitioner": "murmur2_random", "socket.nagle.disable": True,
    })  # fmt: skip
    rng, sent, acked = random.Random(1), 0, 0

    def delivered(err: KafkaError | None, msg: Message) -> None:
        nonlocal acked
        acked += err is None

    def produce(count: int) -> None:
        nonlocal sent
        for code in rng.choices(CODES, k=count):
            producer.produce(topic, value=_value(code, rng), key=code, on_delivery=delivered)
        sent += count
        producer.poll(0)

    _paced(counts, produce)
    producer.flush(30)
    return sent, acked


async def _run_batches(bootstrap: str, topic: str, counts: list[int]) -> tuple[int, int]:
    use_fast_lz4()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                compression_type="lz4", linger_ms=0)  # fmt: skip
    await producer.start()
    rng, sent = random.Random(1), 0
    pending: list[tuple[asyncio.Future[object], int]] = []  # a batch's delivery, its records
    try:
        partitions = len(await producer.partitions_for(topic))
        next_at = time.monotonic()
        for count in counts:
            batches: dict[int, BatchBuilder] = {}
            for code in rng.choices(CODES, k=count):
                partition = (murmur2(code) & 0x7FFFFFFF) % partitions
                if (batch := batches.get(partition)) is None:
                    batch = batches[partition] = producer.create_batch()
                batch.append(timestamp=None, key=code, value=_value(code, rng), headers=[])
            for partition, batch in batches.items():  # no yield: one request
                delivery = await producer.send_batch(batch, topic, partition=partition)
                pending.append((delivery, batch.record_count()))
            sent += count
            next_at += SLICE_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        results = await asyncio.gather(*(d for d, _ in pending), return_exceptions=True)
    finally:
        await producer.stop()
    failed = sum(n for r, (_, n) in zip(results, pending, strict=True) if isinstance(r, Exception))
    return sent, sent - failed


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_way(way: str, bootstrap: str, topic: str, counts: list[int]) -> tuple[int, int]:
    """Produce ``counts`` records per 5 ms slice one ``way``; (sent, acknowledged)."""
    if way == "aiokafka-batches":
        return asyncio.run(_run_batches(bootstrap, topic, counts))
    compression = "none" if way == "librdkafka-none" else "lz4"
    return _run_librdkafka(bootstrap, topic, counts, compression)


def produce_shapes_bench(
    ways: Annotated[str, typer.Option(help="comma-separated: " + ", ".join(WAYS))] = (
        "librdkafka,aiokafka-batches"
    ),
    rate: Annotated[int, typer.Option(min=1, help="records a second")] = 1667,
    seconds: Annotated[float, typer.Option(min=1, help="measured seconds per slice")] = 25.0,
    rounds: Annotated[int, typer.Option(min=1, help="slices per way, alternating")] = 2,
    warmup: Annotated[float, typer.Option(min=0, help="seconds of each way first")] = 40.0,
    partitions: Annotated[int, typer.Option(min=1, help="partitions of the topic")] = 12,
) -> None:
    """Broker and producer CPU per 1,000 records for ways of producing the receiver's shape."""
    chosen = [w.strip() for w in ways.split(",") if w.strip()]
    if not chosen or any(w not in WAYS for w in chosen):
        raise typer.BadParameter(f"--ways: choose from {', '.join(WAYS)}")
    console.print(f"bench produce-shapes: {rate:,} records/s in 5 ms slices over {partitions} "
                  f"partitions, {seconds:.0f} s per slice; machine: {machine()}")  # fmt: skip
    with bench_env() as env:
        broker = env.pids.get("broker")
        if broker is None:
            raise typer.BadParameter(
                "needs the bench's own local broker (unset HQ_KAFKA_BOOTSTRAP)"
            )
        create_topics(env.bootstrap, tuple(s for s in topic_specs(partitions) if s.name == RAW))
        for way in chosen:
            console.print(f"warming the broker with {way}: {warmup:.0f} s")
            run_way(way, env.bootstrap, RAW, slices(rate, warmup))
        figures: dict[str, list[tuple[float, float, float]]] = {w: [] for w in chosen}
        order = [w for r in range(rounds) for w in (chosen if r % 2 == 0 else chosen[::-1])]
        for n, way in enumerate(order, 1):
            broker0, own0, started = group_cpu_s(broker), _own_cpu_s(), time.monotonic()
            sent, acked = run_way(way, env.bootstrap, RAW, slices(rate, seconds))
            elapsed = time.monotonic() - started
            if acked != sent:
                console.print(f"[red]{way}: {sent - acked} of {sent} records not acknowledged")
                raise typer.Exit(1)
            b, own = group_cpu_s(broker) - broker0, _own_cpu_s() - own0
            figures[way].append((sent / elapsed, 1e6 * b / sent, 1e6 * own / sent))
            console.print(f"slice {n}/{len(order)} {way}: {sent / elapsed:,.0f} records/s, broker "
                          f"{1e6 * b / sent:.1f} and producer {1e6 * own / sent:.1f} CPU-ms per "
                          f"1,000 records")  # fmt: skip
    print(f"\n{rate:,} records/s, {partitions} partitions; CPU-ms per 1,000 records, "
          "one figure per slice\n")  # fmt: skip
    print("| way | records/s | broker | producer | broker + producer |")
    print("|---|---:|---:|---:|---:|")
    for way, rows in figures.items():
        cells = [" / ".join(f"{row[i]:.1f}" for row in rows) for i in (1, 2)]
        total = " / ".join(f"{row[1] + row[2]:.1f}" for row in rows)
        print(f"| {way} | {rows[0][0]:,.0f} | {cells[0]} | {cells[1]} | {total} |")
    print(calibration_row(5))
