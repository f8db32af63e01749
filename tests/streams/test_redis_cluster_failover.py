"""A Redis Cluster master SIGKILLed while a stream worker writes: no tick lost, none regressed.

A real 3-master, 3-replica cluster of this test's own (``cluster-node-timeout``
2 s), a real broker and a ``hqstream streams`` worker process. The feed runs
on while a master is killed: the worker's batches fail until the replica is
promoted, are retried (newer-wins makes the retry harmless) and go on. Each
batch waits for a replica's ack (WAIT) before its offsets are committed, so
no write acknowledged to the worker dies with the master: at the end every
valid tick is in its stock's ticks stream and every stock's quote is its
newest tick. Prints the seconds until the replica took over and until every
stock was written again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hqcore.redis_client import sync_client
from hqstream.local_cluster import LocalRedisCluster
from producers.sample_feed import generate
from schemas import redis_keys as rk
from schemas.exchange import MARKETS
from tests.streams.test_integration import (
    Stack,
    latest_in_redis,
    run_to_end,
    stack,
    valid_quotes,
    wait_for,
)

__all__ = ["stack"]  # the fixture, shared with test_integration

pytestmark = pytest.mark.integration

STOCKS = 300
SNAPSHOTS = 40
#: feed pacing only (the checks wait on conditions): the failover happens mid-feed
SNAPSHOT_EVERY_S = 0.25


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    cluster = LocalRedisCluster(tmp_path / "redis-cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_master_killed_mid_feed_loses_and_regresses_nothing(
    stack: Stack, own_cluster: LocalRedisCluster
) -> None:
    lines, _ = generate(STOCKS, SNAPSHOTS, seed=31)
    quotes, _ = valid_quotes(lines)
    url = own_cluster.url
    group = stack.kafka.group("failover")
    warm = STOCKS * 4
    stack.produce(lines[:warm])
    stack.worker(group, url, "w1")
    wait_for(latest_in_redis(url, valid_quotes(lines[:warm])[0]), 90, "the first writes")

    def feed() -> None:
        for start in range(warm, len(lines), STOCKS):
            stack.produce(lines[start : start + STOCKS])
            time.sleep(SNAPSHOT_EVERY_S)

    feeder = threading.Thread(target=feed)
    feeder.start()
    client: Any = sync_client(url)
    before = _stored_ts(client)
    killed_at = time.monotonic()
    killed = own_cluster.kill_master()
    own_cluster.wait_promoted(60)
    promoted_s = time.monotonic() - killed_at
    own_cluster.restart(killed)  # as Kubernetes restarts the pod: it rejoins as a replica
    client = sync_client(url)  # a fresh view of the slots
    wait_for(lambda: _all_newer(client, before), 90, "every stock written after the kill")
    written_again_s = time.monotonic() - killed_at
    print(f"redis master killed: replica promoted after {promoted_s:.1f}s, "
          f"every stock written again after {written_again_s:.1f}s")  # fmt: skip
    feeder.join(120)

    run_to_end(stack, group, url, quotes)
    expected: dict[str, set[str]] = {}
    for q in quotes:
        expected.setdefault(q["code"], set()).add(f"{q['exchange_ts']}-0")
    for code, ids in expected.items():
        stored = {i.decode() for i, _ in client.xrange(rk.ticks(code))}
        assert stored == ids, f"{code}: ticks lost {sorted(ids - stored)[:5]}"


def _stored_ts(client: Any) -> dict[str, int]:
    codes = sorted(m.decode() for market in MARKETS for m in client.smembers(rk.codes(market)))
    pipe = client.pipeline(transaction=False)
    for code in codes:
        pipe.hget(rk.quote(code), "ts")
    return {code: int(ts) for code, ts in zip(codes, pipe.execute(), strict=True) if ts}


def _all_newer(client: Any, before: dict[str, int]) -> bool:
    try:
        now = _stored_ts(client)
    except Exception:  # the cluster's slot map is still moving
        return False
    return all(now.get(code, 0) > ts for code, ts in before.items())
