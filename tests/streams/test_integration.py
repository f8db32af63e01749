"""Stream workers as real processes on real Kafka and Redis.

Raw lines (producers.sample_feed: SH/SZ ``$`` lines and BJ JSON, with bad
records of known reasons) are produced to a uuid-prefixed ``hq.ticks.raw``;
``hqstream streams`` workers run as subprocesses (``streams.cli.streams``).
Checks: every valid record's newest quote is in Redis, every bad one is in
the DLQ with its reason, market statistics equal a recomputation from
scratch, a SIGKILLed and restarted worker leaves Redis identical to an
uninterrupted run, and 1 and 3 workers give identical Redis states.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from hqcore.redis_client import async_client, sync_client
from hqstream.local_runner import create_topics
from hqstream.stack_checks import quotes_at_newest
from producers.sample_feed import RawLine, generate, session_start_ms
from schemas import dlq
from schemas import redis_keys as rk
from schemas.serde import make_codec
from schemas.topics import DLQ, H_RECEIVE_TS, NORMALIZED, QUOTES_LATEST, RAW, topic_specs
from streams.errors import BadRecord
from streams.parse import parse_record
from tests.conftest import KafkaEndpoint, RedisEndpoint
from tests.feed_lines import bse_line, sh_line, sse_line
from tests.streams.redis_state import canonical_state
from tests.streams.stats_reference import recompute

pytestmark = pytest.mark.integration
PARTITIONS = 3
WORKER = "import typer; from streams.cli import streams; typer.run(streams)"


@dataclass
class Stack:
    kafka: KafkaEndpoint
    redis_server: RedisEndpoint
    tmp: Path
    prefix: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def topic(self, base: str) -> str:
        return self.prefix + base

    def twin(self) -> Stack:
        """A stack on the same broker and Redis with topics of its own, for a reference run.

        Two groups that share output topics are not independent: a worker
        starting on an empty Redis rebuilds it from the outputs
        (streams/state_rebuild.py), and would read the other group's, written
        up to wherever that group had got. Feed both the same lines.
        """
        prefix = f"{self.kafka.group('twin')}."
        create_topics(self.kafka.bootstrap, topic_specs(PARTITIONS), prefix=prefix)
        return Stack(self.kafka, self.redis_server, self.tmp, prefix, self.procs)

    def produce(self, lines: list[RawLine]) -> None:
        # idempotent: a produce retried (a topic created a moment ago) would
        # otherwise land after records sent behind it, and a stock's ticks
        # would reach the workers out of order (the older ones refused as stale)
        p = Producer({"bootstrap.servers": self.kafka.bootstrap, "linger.ms": 5,
                      "partitioner": "murmur2_random", "enable.idempotence": True})  # fmt: skip
        for key, value, headers in lines:
            p.produce(self.topic(RAW), value, key, headers=cast(Any, headers))
            p.poll(0)
        assert p.flush(30) == 0

    def worker(
        self,
        group: str,
        redis_url: str,
        name: str,
        *,
        extra_env: dict[str, str] | None = None,
        code: str = WORKER,
    ) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "HQ_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "HQ_REDIS_URL": redis_url,
            "HQ_TOPIC_PREFIX": self.prefix,
            "HQ_PARTITIONS": str(PARTITIONS),
            "HQ_STREAMS_GROUP_ID": group,
            "HQ_STREAMS_WORKER_ID": name,
            "HQ_STREAMS_METRICS_PORT": "0",
            "HQ_STREAMS_DATADIR": str(self.tmp / "faust"),
            "HQ_STREAMS_STATS_INTERVAL_S": "0.5",
            "HQ_STREAMS_PARTIAL_TTL_S": "3",
            "HQ_STREAMS_BATCH_MAX": "200",
            # candles close on the exchange clock only: the wall clock (a day
            # after the generated session) would close them at a time that
            # depends on how fast the test runs
            "HQ_STREAMS_CANDLE_QUIET_S": "3600",
            **(extra_env or {}),
        }
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def stack(kafka: KafkaEndpoint, redis_server: RedisEndpoint, tmp_path: Path) -> Iterator[Stack]:
    prefix = f"{kafka.group('it')}."
    create_topics(kafka.bootstrap, topic_specs(PARTITIONS), prefix=prefix)
    s = Stack(kafka, redis_server, tmp_path, prefix)
    yield s
    s.stop_all()


def valid_quotes(lines: list[RawLine]) -> tuple[list[dict[str, Any]], Counter[str]]:
    good: list[dict[str, Any]] = []
    bad: Counter[str] = Counter()
    for _, value, _ in lines:
        try:
            good.append(parse_record(value, 0, 0))
        except BadRecord as exc:
            bad[exc.reason] += 1
    return good, bad


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def committed_all(stack: Stack, group: str) -> Callable[[], bool]:
    topic = stack.topic(RAW)
    consumer = Consumer({"bootstrap.servers": stack.kafka.bootstrap, "group.id": group})
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]

    def check() -> bool:
        done = consumer.committed(tps, timeout=10)
        return [tp.offset for tp in done] == ends

    return check


def latest_in_redis(url: str, quotes: list[dict[str, Any]]) -> Callable[[], bool]:
    newest: dict[str, int] = {}
    for q in quotes:
        newest[q["code"]] = max(newest.get(q["code"], 0), q["exchange_ts"])
    return quotes_at_newest(url, newest)


def stats_match(url: str, quotes: list[dict[str, Any]]) -> Callable[[], bool]:
    expected = recompute(quotes, 10, now_ms=0)
    client = sync_client(url)

    def check() -> bool:
        for market, record in expected.items():
            raw = client.hget(rk.market_summary(market), "data")  # type: ignore[arg-type]
            if raw is None:
                return False
            got = orjson.loads(raw)
            if {**got, "ts": 0} != {**record, "ts": 0}:
                return False
        return True

    return check


def state(url: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        client = async_client(url)
        try:
            return await canonical_state(client)
        finally:
            await client.aclose()

    return asyncio.run(read())


def assert_same_state(url: str, reference_url: str, timeout: float = 30.0) -> None:
    """The two Redis databases hold the same state, or come to within ``timeout``.

    Market statistics are merged from every worker's partial, and a partial
    that was not refreshed within HQ_STREAMS_PARTIAL_TTL_S (a worker starved of
    CPU for that long) drops out of the merge until it is: one published record
    may then differ for a second. A real difference stays, and is reported.
    """
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}

    def same() -> bool:
        nonlocal a, b
        a, b = state(url), state(reference_url)
        return a == b

    with contextlib.suppress(AssertionError):
        wait_for(same, timeout, "the same state in both Redis databases")
        return
    differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    raise AssertionError(f"{len(differing)} keys differ, e.g. {differing[:5]}; "
                         f"{_difference(a.get(differing[0]), b.get(differing[0]))}")  # fmt: skip


def _difference(value: Any, reference: Any) -> str:
    """Where one key's value departs from the reference's (lists: what only one holds)."""
    if isinstance(value, list) and isinstance(reference, list):
        only = [v for v in value if v not in reference]
        missing = [v for v in reference if v not in value]
        return f"only here: {only[:5]}, only in the reference: {missing[:5]}"
    if isinstance(value, dict) and isinstance(reference, dict):
        keys = value.keys() | reference.keys()
        fields = sorted(k for k in keys if value.get(k) != reference.get(k))
        return "; ".join(f"{k}: {_difference(value.get(k), reference.get(k))}" for k in fields[:3])
    here, there = str(value), str(reference)
    at = next((i for i, (a, b) in enumerate(zip(here, there, strict=False)) if a != b),
              min(len(here), len(there)))  # fmt: skip
    start = max(0, at - 80)
    return f"here ...{here[start : at + 160]}, in the reference ...{there[start : at + 160]}"


def run_to_end(stack: Stack, group: str, url: str, quotes: list[dict[str, Any]]) -> None:
    wait_for(latest_in_redis(url, quotes), 90, "the newest quotes in redis")
    wait_for(committed_all(stack, group), 60, "offsets committed to the end")
    wait_for(stats_match(url, quotes), 30, "market stats equal to a recomputation")


def dlq_reasons(stack: Stack, expected: int) -> Counter[str]:
    consumer = Consumer({"bootstrap.servers": stack.kafka.bootstrap,
                         "group.id": stack.kafka.group("dlq"),
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([stack.topic(DLQ)])
    reasons: Counter[str] = Counter()
    deadline = time.monotonic() + 30
    try:
        while sum(reasons.values()) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            headers = dict(msg.headers() or [])
            assert headers[dlq.STAGE] == b"streams"
            assert headers[dlq.SOURCE_TOPIC] == stack.topic(RAW).encode()
            reason = headers[dlq.REASON]
            assert isinstance(reason, bytes)
            reasons[reason.decode()] += 1
    finally:
        consumer.close()
    return reasons


def last_per_key(stack: Stack, base: str) -> dict[bytes, bytes]:
    """The last record of each key in the topic (what its compaction keeps)."""
    consumer = Consumer({"bootstrap.servers": stack.kafka.bootstrap, "group.id": "last",
                         "enable.auto.commit": False})  # fmt: skip
    topic = stack.topic(base)
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts}  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    last: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 30
    at = dict.fromkeys(parts, 0)
    try:
        while any(at[p] < ends[p] for p in parts) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            last[cast(bytes, msg.key())] = cast(bytes, msg.value())
            at[msg.partition()] = cast(int, msg.offset()) + 1
    finally:
        consumer.close()
    return last


def topic_count(stack: Stack, base: str) -> int:
    consumer = Consumer({"bootstrap.servers": stack.kafka.bootstrap, "group.id": "count"})
    topic = stack.topic(base)
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts)  # fmt: skip
    consumer.close()
    return int(total)


def test_worker_materializes_everything_and_dead_letters_bad_records(stack: Stack) -> None:
    lines, bad = generate(400, 3, bad_fraction=0.03, seed=11)
    quotes, bad_parsed = valid_quotes(lines)
    assert bad_parsed == Counter(bad) and sum(bad.values()) > 10
    stack.produce(lines)
    url = stack.redis_server.next_url()
    group = stack.kafka.group("w")
    stack.worker(group, url, "w1")
    run_to_end(stack, group, url, quotes)
    assert dlq_reasons(stack, sum(bad.values())) == Counter(bad)
    assert topic_count(stack, NORMALIZED) == len(quotes)  # no crash: exactly once each
    # hq.quotes.latest: each stock's newest quote last (sent once a second, the last
    # ones by the timer: no batch came after them)
    codec = make_codec("quote")
    newest: dict[str, int] = {}
    for q in quotes:
        newest[q["code"]] = max(newest.get(q["code"], 0), q["exchange_ts"])
    wait_for(lambda: {k.decode(): codec.decode(v)["exchange_ts"]
                      for k, v in last_per_key(stack, QUOTES_LATEST).items()} == newest,
             30, "every stock's newest quote last in hq.quotes.latest")  # fmt: skip
    client = sync_client(url)
    codes = {q["code"] for q in quotes}
    assert sum(int(client.xlen(rk.ticks(c))) for c in codes) == len(quotes)


def test_sigkill_mid_stream_and_restart_equals_an_uninterrupted_run(stack: Stack) -> None:
    lines, _ = generate(600, 6, bad_fraction=0.01, seed=12)
    quotes, _ = valid_quotes(lines)
    half = len(lines) // 2
    reference = stack.twin()
    reference.produce(lines)
    stack.produce(lines[:half])
    killed_url, clean_url = stack.redis_server.next_url(), stack.redis_server.next_url()
    group = stack.kafka.group("kill")
    victim = stack.worker(group, killed_url, "victim")
    wait_for(latest_in_redis(killed_url, quotes[: half // 4]), 60, "the victim's first writes")
    stack.produce(lines[half:])
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    stack.worker(group, killed_url, "restarted")
    clean_group = stack.kafka.group("clean")
    reference.worker(clean_group, clean_url, "clean")
    run_to_end(stack, group, killed_url, quotes)
    run_to_end(reference, clean_group, clean_url, quotes)
    assert_same_state(killed_url, clean_url)


def test_one_and_three_workers_give_identical_redis(stack: Stack) -> None:
    lines, _ = generate(500, 4, bad_fraction=0.01, seed=13)
    quotes, _ = valid_quotes(lines)
    solo = stack.twin()
    stack.produce(lines)
    solo.produce(lines)
    one_url, three_url = stack.redis_server.next_url(), stack.redis_server.next_url()
    one, three = stack.kafka.group("one"), stack.kafka.group("three")
    solo.worker(one, one_url, "solo")
    for i in range(3):
        stack.worker(three, three_url, f"w{i}")
    run_to_end(solo, one, one_url, quotes)
    run_to_end(stack, three, three_url, quotes)
    assert_same_state(three_url, one_url)


def test_workers_joining_mid_stream_lose_nothing(stack: Stack) -> None:
    """Two rebalances while records are in flight: every tick still ends in Redis once.

    Messages fetched before a rebalance must not be acknowledged unprocessed:
    faust commits the first run of consecutive acked offsets, so such an ack
    let a later rebalance resume past records nobody had written (a two-worker
    benchmark lost ~600 ticks that way).
    """
    lines, _ = generate(2500, 24, bad_fraction=0.0, seed=14)
    quotes, _ = valid_quotes(lines)
    reference = stack.twin()
    stack.produce(lines)
    reference.produce(lines)
    joined_url, clean_url = stack.redis_server.next_url(), stack.redis_server.next_url()
    group, clean_group = stack.kafka.group("join"), stack.kafka.group("join-clean")
    stack.worker(group, joined_url, "first")
    wait_for(latest_in_redis(joined_url, quotes[:500]), 60, "the first worker's writes")
    stack.worker(group, joined_url, "second")
    time.sleep(1.0)
    stack.worker(group, joined_url, "third")
    reference.worker(clean_group, clean_url, "clean")
    run_to_end(stack, group, joined_url, quotes)
    run_to_end(reference, clean_group, clean_url, quotes)
    client = sync_client(joined_url)
    codes = {q["code"] for q in quotes}
    assert sum(int(client.xlen(rk.ticks(c))) for c in codes) == len(quotes)
    assert_same_state(joined_url, clean_url)


def test_poison_records_amid_good_ones_are_dead_lettered_and_the_worker_goes_on(
    stack: Stack,
) -> None:
    """Issue 10: records that crashed the agent (a prev_close of 1e27), overflowed
    normalize or the stats (1e308, volumes near 9e18), or came from 2099, and
    the malformed kinds, between good records in every partition: each one is in
    the DLQ with its reason, every good tick in Redis, and the worker processes
    what comes after them."""
    first, _ = generate(300, 2, seed=15)
    later, _ = generate(300, 2, seed=15, start_ms=session_start_ms("2026-11-23", "10:01:00"))
    quotes, _ = valid_quotes(first + later)
    poison = {
        sse_line(symbol="sz000009", prev_close="1000000000000000000000000000.00"): "out_of_range",
        sse_line(symbol="sz000010", price="1e308"): "out_of_range",
        sse_line(symbol="sz000011", amount="1e308"): "out_of_range",
        sh_line("000012").replace(b"$58342100$", b"$9000000000000000000$"): "out_of_range",
        sh_line("000013").replace(b"$58342100$", b"$9000000000000000000$"): "out_of_range",
        sse_line(symbol="sz000014", date="2099-01-01"): "future_timestamp",
        sse_line().rsplit(b"$", 1)[0]: "wrong_field_count",
        sse_line(price="abc"): "not_a_number",
        sse_line(symbol="sx000001"): "bad_symbol",
        sse_line(price="-11.05"): "negative_value",
        bse_line()[:25]: "invalid_json",
        sse_line(date="2026-02-30"): "bad_datetime",
        sse_line(time="25:61:00"): "bad_datetime",
    }
    stamp = [(H_RECEIVE_TS, str(session_start_ms("2026-11-23", "14:59:57")).encode())]
    keys = [key for key, _, _ in first[: len(poison)]]  # spread over the partitions
    bad = [(key, value, stamp) for key, value in zip(keys, poison, strict=True)]
    middle = len(first) // 2
    stack.produce(first[:middle] + bad + first[middle:])
    url = stack.redis_server.next_url()
    group = stack.kafka.group("poison")
    worker = stack.worker(group, url, "poisoned")
    wait_for(committed_all(stack, group), 60, "the poisoned records committed past")
    assert dlq_reasons(stack, len(poison)) == Counter(poison.values())
    stack.produce(later)  # after the poison: still processed
    run_to_end(stack, group, url, quotes)
    assert worker.poll() is None, (stack.tmp / "poisoned.log").read_text()[-3000:]
    assert topic_count(stack, DLQ) == len(poison)
    assert topic_count(stack, NORMALIZED) == len(quotes)
    client = sync_client(url)
    codes = {q["code"] for q in quotes}
    assert sum(int(client.xlen(rk.ticks(c))) for c in codes) == len(quotes)
    log = (stack.tmp / "poisoned.log").read_text()
    assert "Crashed" not in log  # faust's word for an agent that died
