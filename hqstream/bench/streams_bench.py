"""``hqstream bench streams``: sustained throughput of the stream workers.

Preloads N realistic raw lines (producers.sample_feed) into a fresh uuid
``hq.ticks.raw``, then measures, on the same data:

(a) the faust worker (``hqstream streams`` as a subprocess, its own group and
    Redis database; ``--workers N`` for N of them): parse + Avro + produce
    normalized + Redis, timed by its durable-records counter (see
    :func:`run_faust`); batch latency from its ``hq_streams_batch_seconds``
    histogram (scraped from /metrics);
(b) the same work (same Processor, StreamsRuntime, Redis sink, producer) in a
    plain confluent-kafka consumer loop in this process, so Faust's overhead
    is a measured ratio.

CPU per tick is measured too, a fairer figure than ticks/s on a loaded
machine: the faust workers' user + system CPU (/proc, each worker's process
group) over the same window as their rate; the plain loop's, this process's
CPU time (``time.process_time``: its Kafka client threads included) over
the loop. Zero loss is checked for both: the normalized topic and the Redis ticks
streams must hold exactly the valid records. Prints a markdown table.
Redis: the database of ``HQ_REDIS_URL`` (or ``--redis-db``) and the next one,
which must hold no ``hq:*`` keys; afterwards the run deletes the ``hq:*``
keys and the topics it created (``--keep`` keeps them), nothing else.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from hqcore.redis_client import is_cluster_url, sync_client
from hqstream.bench.common import bench_env, machine
from hqstream.bench.proc_cpu import group_cpu_s
from hqstream.local_cluster import LocalRedisCluster
from hqstream.local_runner import create_topics, free_port
from producers.sample_feed import generate
from schemas import redis_keys as rk
from schemas.topics import NORMALIZED, RAW, topic_specs

console = Console()
WORKER = "import typer; from streams.cli import streams; typer.run(streams)"


@dataclass
class Result:
    name: str
    records: int
    seconds: float
    p50_ms: float
    p99_ms: float
    normalized: int
    redis_ticks: int
    cpu_s: float = 0.0  # user + system CPU seconds over the same window as ``seconds``

    @property
    def cpu_ms_per_1k(self) -> float:
        """CPU milliseconds per 1,000 ticks."""
        return self.cpu_s * 1e6 / self.records if self.records else 0.0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(0, tp.offset) for tp in tps)
    finally:
        c.close()


def _progress(port: int) -> tuple[int, int]:
    """A worker's ``(records made durable, raw partitions assigned)``; zeros before it serves."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return 0, 0
    found = {"hq_streams_records_in_total": 0, "hq_streams_assigned_partitions": 0}
    for line in text.decode().splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] = int(float(value))
    return found["hq_streams_records_in_total"], found["hq_streams_assigned_partitions"]


def _count(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            int(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]) for p in parts
        )
    finally:
        c.close()


def _redis_ticks(url: str, codes: set[str]) -> int:
    client = sync_client(url)
    pipe = client.pipeline(transaction=False)
    for code in codes:
        pipe.xlen(rk.ticks(code))
    total = sum(int(n) for n in pipe.execute())
    client.close()
    return total


def _quantiles_from_histogram(text: str, name: str) -> tuple[float, float]:
    """p50/p99 (ms) from a Prometheus histogram's cumulative buckets (linear inside)."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    total = buckets[-1][1] if buckets else 0.0

    def q(frac: float) -> float:
        target, prev_le, prev_n = frac * total, 0.0, 0.0
        for le, n in buckets:
            if n >= target:
                if le == float("inf"):
                    return prev_le * 1000
                span = (target - prev_n) / (n - prev_n) if n > prev_n else 1.0
                return (prev_le + (le - prev_le) * span) * 1000
            prev_le, prev_n = le, n
        return 0.0

    return q(0.5), q(0.99)


def _hq_keys(url: str) -> int:
    client = sync_client(url)
    try:
        return sum(1 for _ in client.scan_iter(match="hq:*", count=1000))
    finally:
        client.close()


def _delete_hq_keys(url: str) -> int:
    """Delete the ``hq:*`` keys the run created (and nothing else)."""
    from streams.redis_sink import RedisSink

    async def run() -> int:
        sink = RedisSink.from_url(url)
        try:
            return await sink.flush_hq()
        finally:
            await sink.close()

    return asyncio.run(run())


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete the topics this run created (and nothing else)."""
    from confluent_kafka.admin import AdminClient

    if names:
        admin = AdminClient({"bootstrap.servers": bootstrap})  # alive until the futures are done
        for fut in admin.delete_topics(names, operation_timeout=30).values():
            fut.result(timeout=60)


def _db_urls(url: str, db: int | None) -> tuple[str, str]:
    """Redis URLs of the faust and plain runs: database ``db`` (default: the URL's) and the next."""
    base, _, tail = url.rpartition("/")
    if not base.startswith("redis") or not tail.isdigit():
        base, tail = url.rstrip("/"), "0"
    first = int(tail) if db is None else db
    return f"{base}/{first}", f"{base}/{first + 1}"


def run_faust(
    bootstrap: str, url: str, prefix: str, records: int, valid: int, codes: set[str],
    partitions: int, batch: int, workers: int = 1,
) -> Result:  # fmt: skip
    """``workers`` faust worker processes in one group.

    Rate: records made durable (the workers' ``hq_streams_records_in_total``,
    polled every 0.25 s) from the first observation after the group is
    stable (every partition assigned, each worker holding some: with several
    workers the first ones take everything until the others join, and that
    rebalance is not the steady state) to the one that sees them all,
    divided by the time between the two. Then
    waits until every offset is committed (a loss check). Batch latency
    quantiles come from the first worker's /metrics.
    """
    group = f"bench-faust-{uuid.uuid4().hex[:8]}"
    ports = [free_port() for _ in range(workers)]
    procs: list[subprocess.Popen[bytes]] = []
    log = Path(f"/tmp/hqstream-bench-{group}.log").open("wb")  # noqa: SIM115 (children's stdout)
    for i, port in enumerate(ports):
        env = {
            **os.environ, "HQ_KAFKA_BOOTSTRAP": bootstrap, "HQ_REDIS_URL": url,
            "HQ_TOPIC_PREFIX": prefix, "HQ_STREAMS_GROUP_ID": group,
            "HQ_STREAMS_WORKER_ID": f"bench-{i}",
            "HQ_STREAMS_METRICS_PORT": str(port), "HQ_STREAMS_BATCH_MAX": str(batch),
            "HQ_STREAMS_DATADIR": f"/tmp/hqstream-bench-{group}", "HQ_LOG_LEVEL": "WARNING",
        }  # fmt: skip
        cmd = [sys.executable, "-c", WORKER]
        # its own process group in this session: local_runner.REDIS_NICE
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      process_group=0))  # fmt: skip
    topic = prefix + RAW
    first = last = cpu_first = cpu_last = 0.0
    seen = seen_first = done = 0
    try:
        with Live(console=console, refresh_per_second=4) as live:
            deadline = time.monotonic() + 900
            while done < records and time.monotonic() < deadline:
                for proc in procs:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"faust worker exited with {proc.returncode}; see {log.name}"
                        )
                if seen < records:
                    progress = [_progress(port) for port in ports]
                    seen = sum(n for n, _ in progress)
                    stable = sum(a for _, a in progress) == partitions and all(
                        a for _, a in progress[:partitions]
                    )
                    now = time.perf_counter()
                    cpu = sum(group_cpu_s(proc.pid) for proc in procs)  # own sessions
                    if seen and stable and not first:
                        first, seen_first, cpu_first = now, seen, cpu
                    last, cpu_last = now, cpu
                else:
                    done = _committed(bootstrap, group, topic, partitions)
                rate = (seen - seen_first) / (last - first) if first and last > first else 0.0
                live.update(f"[bold]faust[/bold] durable {seen:,}/{records:,}  {rate:,.0f}/s, "
                            f"committed {done:,}")  # fmt: skip
                time.sleep(0.25)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/metrics", timeout=5).read()
        p50, p99 = _quantiles_from_histogram(metrics.decode(), "hq_streams_batch_seconds")
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    name = "faust worker" if workers == 1 else f"{workers} faust workers"
    return Result(name, seen - seen_first, last - first, p50, p99,
                  _count(bootstrap, prefix + NORMALIZED), _redis_ticks(url, codes),
                  cpu_last - cpu_first)  # fmt: skip


async def _plain(
    bootstrap: str, url: str, prefix: str, records: int, batch: int, out: str = "plain."
) -> Result:
    """The plain loop on ``prefix``'s raw topic, writing to ``url`` and ``prefix + out`` topics."""
    from streams.outbox import ConfluentOutbox
    from streams.pipeline import Processor
    from streams.rebuild import consume_batches, end_offsets
    from streams.redis_sink import RedisSink
    from streams.runtime import StreamsRuntime, tune_memory
    from streams.settings import StreamsSettings

    settings = StreamsSettings(
        kafka_bootstrap=bootstrap, redis_url=url, topic_prefix=prefix + out,
        metrics_port=0, batch_max=batch,
    )  # fmt: skip
    tune_memory(settings.gc_threshold)
    sink = RedisSink.from_url(
        url, chunk_ticks=settings.redis_chunk_ticks, replica_wait_ms=settings.redis_replica_wait_ms
    )
    outbox = ConfluentOutbox(bootstrap)
    runtime = StreamsRuntime(settings, sink, outbox, "plain", processor=Processor(settings))
    topic = prefix + RAW
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-plain-{uuid.uuid4()}",
                         "enable.auto.commit": False, "queued.min.messages": 200_000})  # fmt: skip
    latencies: list[float] = []
    done = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    with Live(console=console, refresh_per_second=4) as live:

        def on_batch(n: int) -> None:
            nonlocal done
            done += n
            latencies.append(runtime.last_batch_s)
            rate = done / max(1e-6, time.perf_counter() - started)
            live.update(f"[bold]plain[/bold] {done:,}/{records:,}  {rate:,.0f}/s")

        ends = {p: hi for p, (_, hi) in end_offsets(consumer, topic).items()}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        await consume_batches(consumer, runtime, ends, batch, on_batch)
    seconds = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    consumer.close()
    await outbox.close()
    await sink.close()
    qs = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    name = "plain confluent loop" + (", Redis Cluster" if is_cluster_url(url) else "")
    return Result(name, records, seconds, qs[49] * 1000, qs[98] * 1000,
                  _count(bootstrap, settings.topic_names.normalized), 0, cpu_s)  # fmt: skip


def streams_bench(
    records: int = typer.Option(200_000, help="Raw records to preload."),
    stocks: int = typer.Option(5000, help="Stocks per snapshot."),
    partitions: int = typer.Option(4, help="Partitions of the bench topics."),
    batch: int = typer.Option(2000, help="Batch size (noack_take max / consume max)."),
    bootstrap: str = typer.Option(
        "", help="Kafka bootstrap (default HQ_KAFKA_BOOTSTRAP; unset: a local broker)."
    ),
    redis_url: str = typer.Option(
        "", help="Redis URL (default HQ_REDIS_URL; unset: a local Redis)."
    ),
    redis_db: int | None = typer.Option(
        None, help="Database of the faust run (the plain run uses the next); default: the URL's."
    ),
    keep: bool = typer.Option(False, help="Keep the run's hq:* keys and topics."),
    workers: int = typer.Option(1, min=1, help="Faust worker processes (one consumer group)."),
    redis_cluster: bool = typer.Option(
        False,
        "--redis-cluster",
        help="Also run the plain loop on a local Redis Cluster (3 masters, 3 replicas) and "
        "print its throughput over the one-server plain loop's.",
    ),
) -> None:
    """Faust worker vs plain confluent-kafka loop: ticks/s and batch latency, zero loss."""
    with bench_env(need_redis=True, bootstrap=bootstrap, redis_url=redis_url) as env:
        _streams_bench(env.bootstrap, env.redis_url, records, stocks, partitions, batch,
                       redis_db, keep, workers, redis_cluster)  # fmt: skip


def _streams_bench(
    bootstrap: str, redis_url: str, records: int, stocks: int, partitions: int, batch: int,
    redis_db: int | None, keep: bool, workers: int, redis_cluster: bool = False,
) -> None:  # fmt: skip
    console.print(f"machine: {machine()}")  # the calibration, before the run loads it
    faust_url, plain_url = _db_urls(redis_url, redis_db)
    for url in (faust_url, plain_url):
        if _hq_keys(url):
            console.print(f"[red]{url.split('@')[-1]} holds hq:* keys: pick free databases "
                          "with --redis-db[/red]")  # fmt: skip
            raise typer.Exit(2)
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    created = create_topics(bootstrap, topic_specs(partitions), prefix=prefix)
    created += create_topics(bootstrap, topic_specs(partitions), prefix=prefix + "plain.")
    if redis_cluster:
        created += create_topics(bootstrap, topic_specs(partitions), prefix=prefix + "cluster.")
    snapshots = max(1, records // stocks)
    console.print(f"generating {stocks} stocks x {snapshots} snapshots ...")
    lines, bad = generate(stocks, snapshots, bad_fraction=0.001)
    records = len(lines)
    valid = records - sum(bad.values())
    codes = {k.decode() for k, _, _ in lines}
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "compression.type": "lz4", "partitioner": "murmur2_random",
                         "enable.idempotence": True})  # fmt: skip
    for key, value, headers in lines:
        while True:
            try:
                producer.produce(prefix + RAW, value, key, headers=headers)  # type: ignore[arg-type]
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)
    console.print(f"preloaded {records:,} raw records ({valid:,} valid) into {prefix}{RAW}")
    try:
        results = [
            run_faust(
                bootstrap, faust_url, prefix, records, valid, codes, partitions, batch, workers
            ),
            asyncio.run(_plain(bootstrap, plain_url, prefix, records, batch)),
        ]
        results[1].redis_ticks = _redis_ticks(plain_url, codes)
        if redis_cluster:
            results.append(_plain_on_a_cluster(bootstrap, prefix, records, batch, codes))
    finally:
        if not keep:
            for url in (faust_url, plain_url):
                _delete_hq_keys(url)
            _delete_topics(bootstrap, created)
    table = Table(title=f"hqstream bench streams: {records:,} records, {partitions} partitions")
    for col in ("path", "ticks/s", "CPU ms / 1k ticks", "seconds", "batch p50 ms",
                "batch p99 ms", "normalized", "redis ticks", "loss"):  # fmt: skip
        table.add_column(col)
    lines_md = [
        "| path | ticks/s | CPU ms / 1k ticks | seconds | batch p50 ms | batch p99 ms | "
        "normalized out | Redis ticks | lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lost = valid - min(r.normalized, r.redis_ticks)
        row = (r.name, f"{r.rate:,.0f}", f"{r.cpu_ms_per_1k:.1f}", f"{r.seconds:.1f}",
               f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.normalized:,}", f"{r.redis_ticks:,}",
               str(lost))  # fmt: skip
        table.add_row(*row)
        lines_md.append("| " + " | ".join(row) + " |")
    console.print(table)
    ratio = results[0].rate / results[1].rate if results[1].rate else 0.0
    print("\n".join(lines_md))
    who = "faust worker" if workers == 1 else f"{workers} faust workers"
    print(f"\n{who} / one plain loop throughput ratio: {ratio:.2f} "
          f"(batch {batch}, {os.cpu_count()} cpus)")  # fmt: skip
    if redis_cluster:
        on_cluster = results[2].rate / results[1].rate if results[1].rate else 0.0
        print(f"plain loop on a Redis Cluster / on one Redis server throughput ratio: "
              f"{on_cluster:.2f} (3 masters + 3 replicas on this machine, WAIT for a replica "
              f"per batch)")  # fmt: skip
    print(f"machine: {machine()}")


def _plain_on_a_cluster(
    bootstrap: str, prefix: str, records: int, batch: int, codes: set[str]
) -> Result:
    """The plain loop again, on a Redis Cluster of its own (deleted afterwards)."""
    with tempfile.TemporaryDirectory(prefix="hqbench-cluster-") as tmp:
        with console.status("starting a Redis Cluster (3 masters, 3 replicas) ..."):
            cluster = LocalRedisCluster(Path(tmp))
            cluster.start()
        try:
            result = asyncio.run(_plain(bootstrap, cluster.url, prefix, records, batch, "cluster."))
            result.redis_ticks = _redis_ticks(cluster.url, codes)
        finally:
            cluster.stop()
    return result
