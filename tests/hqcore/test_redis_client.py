"""HQ_REDIS_URL: one server or a Redis Cluster; commands packed by hiredis (hqcore.redis_client)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from hqcore.redis_client import (
    ClusterAddress,
    async_client,
    fast_packing,
    is_cluster_url,
    parse_cluster_url,
    redacted,
)


def test_standalone_urls_are_not_clusters() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://h:6380/1", "unix:///run/redis.sock"):
        assert not is_cluster_url(url)
    assert is_cluster_url("redis+cluster://h:7000") and is_cluster_url("REDISS+CLUSTER://h:7000")


def test_cluster_url_names_seeds_credentials_and_tls() -> None:
    url = "rediss+cluster://streams:p%40ss@redis-0.h:6379,redis-1.h:6379,[::1]:7000/0"
    assert parse_cluster_url(url) == ClusterAddress(
        (("redis-0.h", 6379), ("redis-1.h", 6379), ("::1", 7000)), "streams", "p@ss", True
    )
    assert parse_cluster_url("redis+cluster://a:1") == ClusterAddress((("a", 1),))


@pytest.mark.parametrize(
    "url", ["redis+cluster://a:1/3", "redis+cluster://a", "redis+cluster://a:x", "redis://a:1"]
)
def test_malformed_cluster_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_cluster_url(url)


def test_redacted_drops_the_credentials() -> None:
    assert redacted("redis+cluster://u:secret@a:1,b:2") == "redis+cluster://a:1,b:2"
    assert redacted("redis://:secret@h:6379/0") == "redis://h:6379/0"
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"


ARGS: list[tuple[object, ...]] = [
    ("SET", "hq:quote:600000", b"\x00\xffbinary", "EX", 172_800),
    ("ZADD", "hq:rank:SH:pct", 0.1, "600000", -1e-7, "600001", 1.5e300, "x", float("inf"), "y"),
    ("SCRIPT LOAD", "return 1"),
    (b"CLIENT SETNAME", "worker-1"),
    ("HSET", "k", "名称", "浦发银行", "n", 10**20, "empty", b""),
    ("SET", "view", memoryview(b"abc")),
    ("SET", "buffer", bytearray(b"abc")),  # not for hiredis: redis-py packs it
]


@pytest.mark.parametrize("args", ARGS)
def test_hiredis_packing_writes_the_bytes_redis_py_writes(args: tuple[object, ...]) -> None:
    plain = aioredis.Connection()
    packed = fast_packing(aioredis.Connection)()
    assert b"".join(packed.pack_command(*args)) == b"".join(plain.pack_command(*args))


def test_what_redis_py_refuses_is_still_refused() -> None:
    packed = fast_packing(aioredis.Connection)()
    for bad in (None, True):
        with pytest.raises(DataError):
            packed.pack_command("SET", "k", bad)


def test_a_client_of_one_server_packs_with_hiredis_and_keeps_its_scheme() -> None:
    assert fast_packing(aioredis.Connection) is fast_packing(aioredis.Connection)
    for url, base in (
        ("redis://127.0.0.1:6379/0", aioredis.Connection),
        ("rediss://127.0.0.1:6380/0", aioredis.SSLConnection),
        ("unix:///run/redis.sock", aioredis.UnixDomainSocketConnection),
    ):
        pool = async_client(url).connection_pool
        assert issubclass(pool.connection_class, base), url
        assert pool.connection_class.__name__ == f"HiredisPacked{base.__name__}"


@pytest.mark.integration
async def test_a_packed_client_round_trips_on_a_real_server(redis_url: str) -> None:
    client = async_client(redis_url)
    try:
        sha = await client.script_load("return {KEYS[1], ARGV[1], ARGV[2]}")
        assert await client.evalsha(sha, 1, "k", "v", 0.25) == [b"k", b"v", b"0.25"]
        pipe = client.pipeline(transaction=False)
        pipe.hset("hq:test:packed", mapping={"名称": "浦发银行", "n": 10**20})
        pipe.hgetall("hq:test:packed")
        pipe.delete("hq:test:packed")
        _, stored, _ = await pipe.execute()
        assert stored == {"名称".encode(): "浦发银行".encode(), b"n": b"100000000000000000000"}
    finally:
        await client.aclose()
