"""Issue 21: a lost Redis is rebuilt from the workers' Kafka outputs, by the workers themselves.

Real Kafka, real Redis, ``hqstream streams`` workers as processes (the
:class:`tests.streams.test_integration.Stack`). A worker processes a few
minutes of ticks from two feeds; then Redis is flushed and the whole
canonical state must come back, by itself, equal to what the worker had
written (quotes at their newest tick, ticks streams, rankings, candles of
every timeframe, open ones included, bar series and indicator state, feed
winners, alerts, market statistics), without a raw record being read again
or any record being produced.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import pytest
import redis

from hqcore.redis_client import sync_client
from hqstream.local_runner import free_port
from hqstream.stack_checks import worker_metric
from producers.sample_feed import RawLine, generate
from schemas import redis_keys as rk
from schemas.topics import (
    ALERTS,
    BARS_STATE,
    CANDLES,
    DLQ,
    FEED_WINNERS,
    H_SOURCE,
    NORMALIZED,
    QUOTES_LATEST,
)
from tests.conftest import ON_BOTH_REDIS
from tests.stack_procs import run_to_exit
from tests.streams.test_integration import (
    PARTITIONS,
    WORKER,
    Stack,
    committed_all,
    run_to_end,
    stack,
    state,
    topic_count,
    valid_quotes,
    wait_for,
)

__all__ = ["stack"]  # the fixture, shared with test_integration

pytestmark = pytest.mark.integration
#: the outputs of records (hq.market.stats is published every second whatever comes)
OUTPUTS = (NORMALIZED, DLQ, *CANDLES.values(), ALERTS, QUOTES_LATEST, BARS_STATE, FEED_WINNERS)
#: every tick of the test is within the restored window; the last minute's candles stay
#: open (no wall-clock close of a quiet feed), so the state is still once the ticks are in
REBUILD_ENV = {"HQ_STREAMS_REBUILD_TICKS_S": "86400", "HQ_STREAMS_CANDLE_QUIET_S": "3600"}


def wait_for_state(url: str, before: dict[str, Any], timeout: float) -> None:
    """Wait until Redis holds ``before`` again; on a timeout, say which keys differ."""
    try:
        wait_for(lambda: state(url) == before, timeout, "the state before the flush")
    except AssertionError:
        after = state(url)
        differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        sample = {k: (before.get(k), after.get(k)) for k in differ[:1]}
        raise AssertionError(f"{len(differ)} keys differ, e.g. {differ[:10]}: {sample}") from None


def rebuilding(port: int) -> bool:
    return worker_metric(port, "hq_streams_rebuild_running") == 1


def two_feeds(lines: list[RawLine]) -> list[RawLine]:
    """Each line from feed ``a``, then its copy from feed ``b`` (the arbiter drops the copies)."""
    out: list[RawLine] = []
    for key, value, headers in lines:
        for source in (b"a", b"b"):
            out.append((key, value, [(k, source if k == H_SOURCE else v) for k, v in headers]))
    return out


def processed_day(
    stack: Stack, url: str, group: str, port: int, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """A worker processes 6 minutes of 300 stocks from two feeds (closed 1m and 5m bars,
    indicators, alerts, feed winners); returns the quotes."""
    lines, _ = generate(300, 18, bad_fraction=0.01, seed=21, interval_ms=20_000)
    quotes, _ = valid_quotes(lines)
    env = {**REBUILD_ENV, "HQ_STREAMS_METRICS_PORT": str(port), **(env or {})}
    stack.worker(group, url, "first", extra_env=env)
    # its first rebuild (of an empty Redis, from empty topics) is over before any tick
    wait_for(lambda: worker_metric(port, "hq_streams_rebuilds_total") >= 1, 60, "a rebuild")
    stack.produce(two_feeds(lines))
    run_to_end(stack, group, url, quotes)
    client: Any = sync_client(url)
    wait_for(lambda: bool(client.keys("hq:candles:*")), 30, "candles in redis")
    return quotes


def output_counts(stack: Stack) -> dict[str, int]:
    return {base: topic_count(stack, base) for base in OUTPUTS}


@ON_BOTH_REDIS
def test_flushdb_then_the_running_worker_rebuilds_everything_by_itself(
    stack: Stack, redis_url: str
) -> None:
    """On one server, then on a cluster (FLUSHDB on every master)."""
    url = redis_url
    group = stack.kafka.group("flush")
    port = free_port()
    quotes = processed_day(stack, url, group, port)
    before = state(url)
    assert any(k.startswith("hq:candles:") for k in before) and rk.ALERTS in before
    assert any(k.startswith("hq:bars:") for k in before)
    assert any(k.startswith("hq:feeds:winners:") for k in before)
    assert any(":5m:" in k for k in before)
    assert before[rk.STATE_READY] == ["market", "p0", "p1", "p2"]
    outputs = output_counts(stack)
    records_in = worker_metric(port, "hq_streams_records_in_total")

    sync_client(url).flushdb()
    wait_for(lambda: worker_metric(port, "hq_streams_rebuilds_total") >= 2, 60, "a rebuild")
    run_to_end(stack, group, url, quotes)
    wait_for_state(url, before, 30)

    assert output_counts(stack) == outputs  # nothing produced again
    assert worker_metric(port, "hq_streams_records_in_total") == records_in  # no raw record reread
    assert committed_all(stack, group)()


def test_with_the_indicators_off_the_rebuild_makes_no_bar_series(stack: Stack) -> None:
    """No series on Kafka and none in Redis: the rebuild folds no 1-minute candle into one."""
    url = stack.redis_server.next_url()
    group = stack.kafka.group("off")
    port = free_port()
    quotes = processed_day(stack, url, group, port, {"HQ_STREAMS_INDICATORS": "false"})
    before = state(url)
    assert any(k.startswith("hq:candles:") for k in before)
    assert not any(k.startswith("hq:bars:") for k in before)
    sync_client(url).flushdb()
    wait_for(lambda: worker_metric(port, "hq_streams_rebuilds_total") >= 2, 60, "a rebuild")
    run_to_end(stack, group, url, quotes)
    wait_for_state(url, before, 30)


def test_a_worker_killed_mid_rebuild_leaves_it_to_the_next_one(stack: Stack) -> None:
    url = stack.redis_server.next_url()
    group = stack.kafka.group("killed")
    quotes = processed_day(stack, url, group, free_port())
    before = state(url)
    outputs = output_counts(stack)
    stack.stop_all()

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.client_pause(120_000, all=False)  # the rebuild cannot finish
    try:
        port = free_port()
        victim = stack.worker(
            group, url, "victim", extra_env={**REBUILD_ENV, "HQ_STREAMS_METRICS_PORT": str(port)}
        )
        wait_for(
            lambda: worker_metric(port, "hq_streams_rebuild_running") == 1, 60, "rebuild started"
        )
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    finally:
        client.client_unpause()
    assert not client.exists(rk.STATE_READY)

    stack.worker(group, url, "successor", extra_env=REBUILD_ENV)
    run_to_end(stack, group, url, quotes)
    wait_for_state(url, before, 60)
    assert output_counts(stack) == outputs


def test_the_command_rebuilds_by_hand_with_a_progress_bar(stack: Stack) -> None:
    """``hqstream streams --rebuild`` (workers that never rebuild by themselves)."""
    url = stack.redis_server.next_url()
    group = stack.kafka.group("by-hand")
    lines, _ = generate(200, 6, seed=23, interval_ms=20_000)
    quotes, _ = valid_quotes(lines)
    stack.produce(lines)
    stack.worker(group, url, "manual", extra_env={"HQ_STREAMS_AUTO_REBUILD": "false"})
    run_to_end(stack, group, url, quotes)
    stack.stop_all()
    before = state(url)
    assert rk.STATE_READY not in before  # no worker marked anything
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.set("other:key", "kept")
    env = {
        **os.environ, "HQ_KAFKA_BOOTSTRAP": stack.kafka.bootstrap, "HQ_REDIS_URL": url,
        "HQ_TOPIC_PREFIX": stack.prefix, "HQ_PARTITIONS": str(PARTITIONS),
        "HQ_STREAMS_METRICS_PORT": "0", **REBUILD_ENV,
    }  # fmt: skip
    done = run_to_exit([sys.executable, "-c", WORKER, "--rebuild"], env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "state rebuilt" in done.stdout and "rebuild" in done.stdout
    after = state(url)
    assert after.pop(rk.STATE_READY) == ["market", "p0", "p1", "p2"]
    assert after == before
    assert client.get("other:key") == b"kept"
