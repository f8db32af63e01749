"""``hqstream bench archive``: archiver throughput (rows/s into Parquet) on a preloaded topic.

Preloads ``--records`` normalized quotes (``--stocks`` per snapshot, 3 s
apart on one trade date) into a fresh prefixed topic, then runs the archiver
in this process into a temporary directory and times it from its first
record to the last row durably written; checks the archive holds every quote
once. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from typing import Any

import pyarrow.parquet as pq
import typer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from archive.archiver import Archiver
from archive.settings import ArchiveSettings
from hqstream.bench.common import bench_env, calibration_row, console
from hqstream.local_runner import create_topics
from schemas.serde import make_codec
from schemas.topics import NORMALIZED, topic_specs

OPEN_MS = 1_795_397_400_000  # 2026-11-23 09:30:00 Asia/Shanghai


def _quote(code: str, ts: int, price: float, volume: int) -> dict[str, Any]:
    market = "SH" if code.startswith("6") else "SZ"
    return {
        "symbol": f"{market.lower()}{code}", "code": code, "market": market, "board": "MAIN",
        "name": f"S{code}", "is_st": False, "exchange_ts": ts, "trade_date": "2026-11-23",
        "open": 10.0, "prev_close": 10.0, "price": price, "high": 11.0, "low": 9.5,
        "bid": price, "ask": price + 0.01, "volume": volume, "amount": volume * price,
        "bid_prices": [price] * 5, "bid_volumes": [100] * 5, "ask_prices": [price + 0.01] * 5,
        "ask_volumes": [100] * 5, "change": round(price - 10, 2),
        "change_pct": round((price - 10) * 10, 2), "limit_up": 11.0, "limit_down": 9.0,
        "traded": True, "suspended": False, "at_limit_up": False, "at_limit_down": False,
        "receive_ts": ts, "process_ts": ts, "limit_free": False, "not_traded_yet": False,
        "phase": "continuous", "avg_price": price, "amplitude": 1.5, "order_imbalance": 0.0,
    }  # fmt: skip


def archive_bench(
    records: int = typer.Option(300_000, help="Normalized quotes to preload."),
    stocks: int = typer.Option(5000, help="Stocks per snapshot."),
    partitions: int = typer.Option(4, help="Partitions of the bench topics."),
    bootstrap: str = typer.Option(
        "", help="Kafka bootstrap (default HQ_KAFKA_BOOTSTRAP; unset: a local broker)."
    ),
) -> None:
    """Archiver rows/s: Kafka -> decode -> Arrow -> zstd Parquet, durably renamed, committed."""
    with bench_env(bootstrap=bootstrap) as env:
        _bench(env.bootstrap, records, stocks, partitions)


def _bench(bootstrap: str, records: int, stocks: int, partitions: int) -> None:
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    created = create_topics(bootstrap, topic_specs(partitions), prefix=prefix)
    codec = make_codec("quote")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "compression.type": "lz4", "partitioner": "murmur2_random",
                         "enable.idempotence": True})  # fmt: skip
    codes = [f"{600000 + i:06d}" if i % 2 else f"{i:06d}" for i in range(stocks)]
    for n in range(records):
        code = codes[n % stocks]
        snap = n // stocks
        value = codec.encode(_quote(code, OPEN_MS + snap * 3000, 10 + (n % 97) / 100, snap * 100))
        while True:
            try:
                producer.produce(prefix + NORMALIZED, value, code.encode())
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)
    console.print(f"preloaded {records:,} quotes into {prefix}{NORMALIZED}")
    try:
        with tempfile.TemporaryDirectory(prefix="hqbench-archive-") as root:
            settings = ArchiveSettings(
                kafka_bootstrap=bootstrap, topic_prefix=prefix, root=root, datasets="ticks",
                group_id=f"{prefix}archive", roll_seconds=0.5, roll_bytes=16 << 20, metrics_port=0,
                stats_interval_s=1.0,
            )  # fmt: skip
            archiver = Archiver(settings)
            first: list[float] = []
            add = archiver.add

            def timed_add(msg: Any) -> None:
                if not first:
                    first.append(time.perf_counter())
                add(msg)

            archiver.add = timed_add  # type: ignore[method-assign]
            thread = threading.Thread(target=archiver.run, name="archiver")
            thread.start()
            deadline = time.monotonic() + 600
            while archiver.figures.rows < records and time.monotonic() < deadline:
                time.sleep(0.01)
            done = time.perf_counter()
            archiver.stop.set()
            thread.join(60)
            files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
            size = sum(os.path.getsize(f) for f in files)
    finally:
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics(created)
    seconds = done - first[0]
    # the time includes the roll (0.5 s) of the last batches: a lower bound of the rate
    print(f"| archive (ticks, {partitions} partitions, 1 process) | {records:,} | "
          f"{seconds:.1f} | {records / seconds:,.0f} | {len(files)} | {size / records:.0f} | "
          f"{rows - records} |")  # fmt: skip
    print(f"rows archived {rows:,} of {records:,} ({os.cpu_count()} cpus)")
    console.print(calibration_row())
