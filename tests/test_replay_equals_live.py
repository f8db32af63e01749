"""A day replayed from the archive gives the same candles and statistics as live did (issue 17).

Live: simulator (a fixed past day, 10 minutes of it) -> receiver -> Kafka ->
stream worker (candles topic, market statistics in Redis), and the archiver
archiving the normalized ticks, each a process of its own. Then
``hqstream replay`` publishes the archived day into a separate prefix at 600x,
and the replayed ticks go through the stream code that made the live
outputs (:class:`streams.pipeline.Processor`: the worker's candle builder and
market statistics). Its candles and statistics must equal the live run's,
field for field (the statistics' ``ts``, the wall-clock time they were
published at, aside).

Why 600x proves 1x too: the replay publishes the same records in the same
order at every speed (checked here: 1x and 600x on a clock that moves only
when slept on publish the identical sequence, with every pause 600 times
longer at 1x), and the stream code's candles and statistics are functions of
each stock's sequence of ticks, never of when they arrive (see
docs/archive.md, "Replaying a past day").
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from archive.archiver import Archiver
from archive.replay import Replay
from hqcore.parquet_archive.reader import Pacer
from hqstream.local_runner import create_topics
from schemas import topics
from schemas.exchange import MARKETS_AND_ALL
from schemas.redis_keys import candles as candle_key
from schemas.redis_keys import market_summary
from schemas.serde import make_codec
from streams.pipeline import Processor
from streams.settings import StreamsSettings
from tests.archive.fakes import FakeClock, feed, record_messages, settings
from tests.archive.records import trading_day
from tests.archive.test_integration import _archived
from tests.archive.test_replay import VirtualTime
from tests.conftest import KafkaEndpoint
from tests.kafka_utils import consume_all
from tests.stack_procs import pipeline_env, process, run_to_exit, wait_until

pytestmark = pytest.mark.integration

DATE = "2026-06-17"
SNAPSHOTS = 200  # 3 s apart: 10 minutes of the exchange's day
STOCKS = 20
SPEED = 600.0


Candles = dict[tuple[str, int], dict[str, Any]]


def _without(record: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != field}


def _recomputed(bootstrap: str, topic: str, expected: int) -> tuple[Candles, dict[str, Any]]:
    """Candles and statistics of the replayed ticks, by the stream worker's own code."""
    codec = make_codec("quote")
    processor = Processor(StreamsSettings(), publish_normalized=False)  # type: ignore[call-arg]
    quotes = [
        (codec.decode(m.value() or b""), m.partition())
        for m in consume_all(bootstrap, topic, expected)
    ]
    assert len(quotes) == expected
    minutes, _, _ = processor.derive(quotes)  # type: ignore[arg-type]
    # the closed minutes with their indicators, as the worker stores them
    closed = [bar for bar in processor.close_bars(minutes) if bar["tf"] == "1m"]
    opened = map(processor.candles.current, {q["code"] for q, _ in quotes})
    current = [c.as_record() for c in opened if c is not None]
    candles = {(c["code"], c["minute_ts"]): _without(c, "closed") for c in closed + current}
    stats: dict[str, Any] = {m: _without(s, "ts") for m, s in processor.snapshots(now_ms=0).items()}
    return candles, stats


def _live(r: redis.Redis, codes: set[str]) -> tuple[Candles, dict[str, Any]]:
    """The live run's candles (every minute, the open one too) and statistics, from Redis."""
    candles: Candles = {}
    for code in codes:
        for raw in r.hvals(candle_key(code, DATE)):  # type: ignore[union-attr]
            c = json.loads(raw)
            candles[(c["code"], c["minute_ts"])] = _without(c, "closed")
    stats: dict[str, Any] = {}
    for market in MARKETS_AND_ALL:
        data: Any = r.hget(market_summary(market), "data")
        if data is not None:
            stats[market] = _without(json.loads(data), "ts")
    return candles, stats


def _differences(live: Candles, replayed: Candles) -> list[object]:
    missing = sorted(set(live) ^ set(replayed))
    fields = [
        (key, {f: (live[key].get(f), c[f]) for f in c if c[f] != live[key].get(f)})
        for key, c in replayed.items()
        if key in live and c != live[key]
    ]
    return [*missing[:5], *fields[:5]]


def test_a_replayed_day_gives_the_live_candles_and_statistics(
    kafka: KafkaEndpoint, redis_url: str, tmp_path: Path
) -> None:
    live, replayed = f"lv{uuid.uuid4().hex[:8]}.", f"rp{uuid.uuid4().hex[:8]}."
    env, (_, metrics_port, _) = pipeline_env(kafka, redis_url, tmp_path, live)
    root = tmp_path / "archive"
    env |= {
        "HQ_ARCHIVE_GROUP_ID": f"{live}archive",
        "HQ_ARCHIVE_ROLL_SECONDS": "0.5",
        "HQ_ARCHIVE_DATASETS": "ticks",
        "HQ_ARCHIVE_METRICS_PORT": "0",
        # The day is in the past: after this long without a tick the worker's candle clock
        # would be today's wall clock and close every open candle at once (a stall of a
        # loaded machine would then cut a live candle short). Never during this test.
        "HQ_STREAMS_CANDLE_QUIET_S": "3600",
    }
    simulate = ["simulate", "--stocks", str(STOCKS), "--interval", "3", "--rate", "40",
                "--start", f"{DATE}T09:30:00", "--snapshots", str(SNAPSHOTS),
                "--seed", "11"]  # fmt: skip
    sim_log = tmp_path / "simulate.log"
    r = redis.Redis.from_url(redis_url)
    with (
        process("streams", ["streams"], env, tmp_path),
        process("produce", ["produce", "--metrics-port", str(metrics_port)], env, tmp_path),
        process("archive", ["archive", "--root", str(root)], env, tmp_path),
        process("simulate", simulate, env, tmp_path),
    ):
        wait_until(lambda: "pushed" in sim_log.read_text(), 240, "the simulator's day")
        lines = int(re.findall(r"pushed \d+ snapshots \((\d+) lines\)", sim_log.read_text())[0])
        wait_until(
            lambda: len(_archived(root, "ticks", "exchange_ts")) >= lines, 120, "the day archived"
        )
        ticks = _archived(root, "ticks", "exchange_ts")
        assert len(ticks) == len(set(ticks)) == lines  # every tick archived once

        create_topics(kafka.bootstrap, topics.topic_specs(4), prefix=replayed)
        replay = ["replay", "--date", DATE, "--speed", str(SPEED), "--prefix", replayed,
                  "--root", str(root), "--dataset", "ticks"]  # fmt: skip
        done = run_to_exit([sys.executable, "-m", "hqstream.cli", *replay], env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"published {lines} records" in done.stdout
        candles, stats = _recomputed(kafka.bootstrap, replayed + topics.NORMALIZED, lines)
        assert {(code, ts // 60_000 * 60_000) for code, ts in ticks} == set(candles)

        codes = {code for code, _ in ticks}
        # the live worker's last writes (statistics are published once a second)
        try:
            wait_until(lambda: _live(r, codes) == (candles, stats), 60, "the live outputs")
        except AssertionError:
            live_candles, live_stats = _live(r, codes)
            raise AssertionError(
                f"candles (live, replayed): {_differences(live_candles, candles)}; "
                f"statistics equal: {live_stats == stats}"
            ) from None
    r.close()


def test_the_replay_publishes_the_same_sequence_at_1x_and_at_600x(tmp_path: Path) -> None:
    """Speed only scales the pauses: the records and their order are the same."""
    day = "2026-11-23"
    archiver = Archiver(settings(str(tmp_path), roll_bytes=20_000), clock=FakeClock())
    feed(archiver, record_messages(topics.NORMALIZED, "quote", trading_day(day, 100).quotes))
    archiver.flush_due(force=True)
    played = {}
    for speed in (1.0, SPEED):
        job = Replay.open(settings(str(tmp_path)), day, ["ticks"], "rp.", speed)
        vt = VirtualTime()
        out: list[Any] = []
        job.play(lambda _, row: out.append(row), Pacer(speed, None, vt.clock, vt.sleep))  # noqa: B023
        played[speed] = (out, vt.sleeps)
    assert played[1.0][0] == played[SPEED][0]
    assert played[1.0][1] == pytest.approx([s * SPEED for s in played[SPEED][1]])
