"""The archiver as users run it, against a real broker: killed mid-day, restarted.

Quotes, candles and alerts go to a uuid-prefixed namespace; the archiver runs
as its own process with tiny batches (a file per partition every 0.3 s) and is
SIGKILLed once part of the first half is archived, then the second half is
produced and a new archiver started. The archive must then hold every record
exactly once (by code + exchange time), and the replay of the archived day
into another prefix must publish the same records.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from archive.replay import Replay
from archive.settings import ArchiveSettings
from hqstream.local_runner import create_topics
from schemas import topics
from schemas.serde import make_codec
from tests.archive.records import trading_day
from tests.conftest import KafkaEndpoint
from tests.kafka_utils import consume_all

pytestmark = pytest.mark.integration

DATE = "2026-11-23"


def _produce(bootstrap: str, topic: str, schema: str, records: list[dict[str, Any]]) -> None:
    codec = make_codec(schema)  # type: ignore[arg-type]
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "enable.idempotence": True,
        }
    )
    for r in records:
        producer.produce(topic, codec.encode(r), key=r["code"].encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def _archived(root: Path, dataset: str, time_column: str) -> list[tuple[str, int]]:
    """(code, time) of every row in the dataset's published files (retries a vanished file)."""
    for _ in range(50):
        try:
            out: list[tuple[str, int]] = []
            for path in sorted((root / dataset).rglob("*.parquet")):
                t = pq.ParquetFile(path).read(columns=["code", time_column])
                out += zip(t["code"].to_pylist(), t[time_column].to_pylist(), strict=True)
            return out
        except FileNotFoundError:  # deleted by recovery between listing and reading
            time.sleep(0.05)
    raise AssertionError("the archive kept changing under the reader")


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def _archiver(env: dict[str, str], root: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hqstream.cli", "archive", "--root", str(root)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_archive_after_sigkill_holds_every_record_once_and_replays(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    prefix = f"ar{uuid.uuid4().hex[:8]}."
    create_topics(kafka.bootstrap, topics.topic_specs(4), prefix=prefix)
    day = trading_day(DATE, 300)
    root, log = tmp_path / "archive", tmp_path / "archive.log"
    env = {
        **os.environ,
        "HQ_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "HQ_TOPIC_PREFIX": prefix,
        "HQ_ARCHIVE_GROUP_ID": f"{prefix}archive",
        "HQ_ARCHIVE_ROLL_SECONDS": "0.3",
        "HQ_ARCHIVE_ROLL_BYTES": "30000",
        "HQ_ARCHIVE_STATS_INTERVAL_S": "1",
        "HQ_ARCHIVE_METRICS_PORT": "0",
        "HQ_ARCHIVE_INSTANCE_ID": f"{prefix}archive-0",
    }
    half = len(day.quotes) // 2
    _produce(kafka.bootstrap, prefix + topics.NORMALIZED, "quote", day.quotes[:half])
    with _archiver(env, root, log) as first:
        _wait(lambda: len(_archived(root, "ticks", "exchange_ts")) >= half // 3, "first files")
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    killed_with = len(_archived(root, "ticks", "exchange_ts"))
    _produce(kafka.bootstrap, prefix + topics.NORMALIZED, "quote", day.quotes[half:])
    _produce(kafka.bootstrap, prefix + topics.CANDLES_1M, "candle", day.candles)
    _produce(kafka.bootstrap, prefix + topics.ALERTS, "alert", day.alerts)
    with _archiver(env, root, log) as second:
        _wait(
            lambda: (
                len(_archived(root, "ticks", "exchange_ts")) >= len(day.quotes)
                and len(_archived(root, "candles", "minute_ts")) >= len(day.candles)
                and len(_archived(root, "alerts", "exchange_ts")) >= len(day.alerts)
            ),
            f"every record archived (see {log})",
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]

    assert 0 < killed_with < len(day.quotes)
    ticks = _archived(root, "ticks", "exchange_ts")
    assert len(ticks) == len(set(ticks)) == len(day.quotes)
    assert set(ticks) == {(q["code"], q["exchange_ts"]) for q in day.quotes}
    candles = _archived(root, "candles", "minute_ts")
    assert sorted(candles) == sorted((c["code"], c["minute_ts"]) for c in day.candles)
    alerts = _archived(root, "alerts", "exchange_ts")
    assert sorted(alerts) == sorted((a["code"], a["exchange_ts"]) for a in day.alerts)
    assert "archive:" in log.read_text()  # the live figures line

    # replay the archived day, as fast as possible, into a new namespace
    replay_prefix = f"rp{uuid.uuid4().hex[:8]}."
    create_topics(kafka.bootstrap, topics.topic_specs(4), prefix=replay_prefix)
    settings = ArchiveSettings(root=str(root), kafka_bootstrap=kafka.bootstrap, metrics_port=0)
    job = Replay.open(settings, DATE, ["ticks", "candles", "alerts"], replay_prefix, speed=0)
    assert job.total == len(day.quotes) + len(day.candles) + len(day.alerts)
    replay = subprocess.run(
        [sys.executable, "-m", "hqstream.cli", "replay", "--date", DATE, "--speed", "0",
         "--prefix", replay_prefix, "--root", str(root)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert f"published {job.total} records of {DATE}" in replay.stdout
    codec = make_codec("quote")
    replayed = consume_all(
        kafka.bootstrap, replay_prefix + topics.NORMALIZED, expected=len(day.quotes), idle=1.0
    )
    got = [codec.decode(m.value()) for m in replayed]  # type: ignore[arg-type]
    assert sorted(got, key=_key) == sorted(day.quotes, key=_key)
    for m, q in zip(replayed, got, strict=True):
        assert m.key() == q["code"].encode()
    # one stock's quotes stay in exchange-time order in its partition
    by_code: dict[str, list[int]] = {}
    for q in got:
        by_code.setdefault(q["code"], []).append(q["exchange_ts"])
    assert all(ts == sorted(ts) for ts in by_code.values())
    candle_codec = make_codec("candle")
    replayed_candles = consume_all(
        kafka.bootstrap, replay_prefix + topics.CANDLES_1M, expected=len(day.candles), idle=1.0
    )
    assert sorted(
        (candle_codec.decode(m.value()) for m in replayed_candles),  # type: ignore[arg-type]
        key=lambda c: (c["code"], c["minute_ts"]),
    ) == sorted(day.candles, key=lambda c: (c["code"], c["minute_ts"]))


def _key(q: dict[str, Any]) -> tuple[str, int]:
    return q["code"], q["exchange_ts"]
