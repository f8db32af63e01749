"""HQ_REDIS_URL: one server or a Redis Cluster (hqcore.redis_client)."""

from __future__ import annotations

import pytest

from hqcore.redis_client import ClusterAddress, is_cluster_url, parse_cluster_url, redacted


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
