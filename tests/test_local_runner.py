"""hqstream.local_runner pieces that need no broker."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import redis

from hqstream.local_runner import REDIS_NICE, LocalRedis, LocalStack, kafka_cluster_id


def test_cluster_ids_are_16_byte_uuids_that_never_look_like_an_option() -> None:
    """kafka-storage reads an id starting with '-' as an option: 1 start in 64 failed so."""
    ids = {kafka_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def _nice_of_every_thread(pid: int) -> set[int]:
    """The nice value (field 19 of ``stat``) of each thread of ``pid``."""
    return {
        int(open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()[16])
        for tid in os.listdir(f"/proc/{pid}/task")
    }


def test_redis_runs_below_the_pipeline_s_cpu_priority_when_asked(tmp_path: Path) -> None:
    """`hqstream up` and the speed benchmarks lower their Redis (REDIS_NICE): the server and
    every thread it starts run at that increment above the caller's nice value; it serves."""
    own = os.nice(0)
    server = LocalRedis(tmp_path, nice=REDIS_NICE)
    server.start()
    try:
        assert server.proc is not None
        assert _nice_of_every_thread(server.proc.pid) == {min(19, own + REDIS_NICE)}
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
    finally:
        server.stop()
    assert LocalStack(tmp_path).redis.nice == 0  # the tests' own stacks: the same priority
