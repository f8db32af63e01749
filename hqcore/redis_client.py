"""Redis clients built from ``HQ_REDIS_URL``: one standalone server or a Redis Cluster.

* ``redis://host:port/db``, ``rediss://...``, ``unix://...``: one server
  (the default; redis-py's own URL syntax);
* ``redis+cluster://[user:password@]host:port[,host:port...]`` (TLS:
  ``rediss+cluster://``): a Redis Cluster, reached through any of the listed
  seed nodes; the client learns the slot map from them and follows
  MOVED/ASK and failovers. A cluster has database 0 only.

Every process builds its clients here, so the URL is parsed in one place.
This module opens no connection by itself.

The asyncio clients of one server pack their commands with hiredis
(:func:`fast_packing`): redis-py's blocking clients do that already, its
asyncio ones build each command in a Python loop, which costs the workers'
long ``EVALSHA`` calls and the rebuild's writes about five times as much.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode

CLUSTER_SCHEMES: Final = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS

AnyRedis = redis.Redis | redis.RedisCluster
AnyAsyncRedis = aioredis.Redis | aioredis.RedisCluster
C = TypeVar("C", bound=aioredis.connection.AbstractConnection)


_PACKED: dict[type, type] = {}


def fast_packing(connection_class: type[C]) -> type[C]:
    """``connection_class`` with ``pack_command`` done by hiredis: the same bytes.

    hiredis takes str, bytes, int and float (formatted as redis-py formats
    them); anything else goes to redis-py's own packer, which raises the
    error it always raised. One subclass per class, made once.
    """
    made = _PACKED.get(connection_class)
    if made is not None:
        return made

    class Packed(connection_class):  # type: ignore[valid-type,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            first = args[0]
            if isinstance(first, str) or (
                isinstance(first, bytes) and b" " in first
            ):  # "SCRIPT LOAD": the server wants two arguments
                args = (*first.split(), *args[1:])
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                return list(super().pack_command(*args))

    Packed.__name__ = Packed.__qualname__ = f"HiredisPacked{connection_class.__name__}"
    _PACKED[connection_class] = Packed
    return Packed


def with_fast_packing(client: aioredis.Redis) -> aioredis.Redis:
    """``client`` (one server), its new connections packing with hiredis."""
    pool = client.connection_pool
    pool.connection_class = fast_packing(pool.connection_class)
    return client


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    """Where a Redis Cluster is: its seed nodes and credentials."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def options(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password, "ssl": self.tls}


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterAddress:
    """The seed nodes and credentials of a ``redis+cluster://`` URL (ValueError if malformed)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError(f"not a Redis Cluster URL (redis+cluster://...): scheme {scheme!r}")
    parts = urlsplit(f"//{rest}")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = []
    for node in hosts.split(","):
        host, sep, port = node.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"Redis Cluster node {node!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterAddress(
        tuple(nodes),
        unquote(username) or None,
        unquote(password) or None,
        CLUSTER_SCHEMES[scheme.lower()],
    )


def sync_client(url: str, **options: Any) -> AnyRedis:
    """A blocking client of ``url`` (``options``: redis-py connection options)."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    address = parse_cluster_url(url)
    return redis.RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],  # type: ignore[no-untyped-call]
        **address.options(),
        **options,
    )


def async_client(url: str, **options: Any) -> AnyAsyncRedis:
    """An asyncio client of ``url`` (``options``: redis-py connection options).

    On one server a command that finds its pooled connection closed by the
    server (Redis restarted since it was last used) reconnects and is sent
    once more at once; redis-py's clients made from a URL would raise
    instead, once per stale connection, right after every restart. Every
    caller's writes are idempotent (the workers' are newer-wins); a timeout
    is not retried, and a real outage still raises at once.
    """
    if not is_cluster_url(url):
        reconnect_once = Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
        options = {"retry": reconnect_once, **options}
        return with_fast_packing(aioredis.Redis.from_url(url, **options))
    address = parse_cluster_url(url)
    return aioredis.RedisCluster(
        startup_nodes=[AsyncClusterNode(host, port) for host, port in address.nodes],
        **address.options(),
        **options,
    )


def redacted(url: str) -> str:
    """``url`` without its credentials, for logs."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"
