"""Many single-slot commands to a Redis Cluster: one plain pipeline per master, all at once.

The sink sends each master its share of a batch (script calls that touch
the keys of several of its slots). redis-py's ``ClusterPipeline`` refuses
such calls (it routes every command by its own keys' slot) and resolves each
command on its own; here the calls are grouped by the master that serves
the slot their caller named (the cluster client's slot map) and each group
goes over a plain ``redis.asyncio`` pipeline of its own: one connection, so
a ``WAIT`` at its end covers exactly its writes.

A MOVED/ASK answer, a script's "non local key" error (a slot moved
meanwhile) or an unreachable node (a failover) refreshes the slot map; the
caller raises and retries the batch, which the newer-wins scripts make
harmless. Never retries by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import AskError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from hqcore.redis_client import with_fast_packing

logger = logging.getLogger(__name__)

Command = tuple[Any, ...]  # the command's words, as for execute_command

#: WAIT of a master whose last WAIT saw no replica: long enough for a replica
#: back on a LAN to answer (the master then gets the full wait again)
UNREPLICATED_WAIT_MS = 10


class NodePipelines:
    """Plain pipelines to the masters of ``cluster``, by hash slot."""

    def __init__(self, cluster: aioredis.RedisCluster, node_options: dict[str, Any]) -> None:
        self.cluster = cluster
        self.node_options = node_options  # credentials, TLS, timeouts of a node's client
        self._clients: dict[str, aioredis.Redis] = {}
        self._unreplicated: set[str] = set()  # masters whose last WAIT saw no replica

    async def learn_slots(self) -> None:
        """Fetch the slot map unless the cluster client knows it already."""
        if self.cluster._initialize:  # the client's own "slot map unknown" flag
            await self.cluster.initialize()

    def node_of(self, slot: int) -> str:
        """The name (``host:port``) of the master serving ``slot`` (after :meth:`learn_slots`)."""
        return str(self.cluster.nodes_manager.get_node_from_slot(slot).name)

    async def execute(
        self, commands: Sequence[tuple[int, Command]], wait_ms: int = 0
    ) -> tuple[list[Any], list[int]]:
        """Run ``(slot, command)`` pairs; their results in order (errors as exceptions),
        and, with ``wait_ms``, each written master's ``WAIT 1 wait_ms`` answer."""
        await self.learn_slots()
        by_node: dict[str, list[int]] = {}
        for i, (slot, _) in enumerate(commands):
            by_node.setdefault(self.node_of(slot), []).append(i)
        names = list(by_node)
        try:
            sends = [
                self._node_pipeline(
                    name, [commands[i][1] for i in by_node[name]], self._wait_ms(name, wait_ms)
                )
                for name in names
            ]
            answers = await asyncio.gather(*sends)
        except (RedisError, OSError):
            await self._refresh()
            raise
        results: list[Any] = [None] * len(commands)
        waits: list[Any] = []
        for name, answer in zip(names, answers, strict=True):
            if wait_ms:
                waits.append(answer.pop())
            for i, result in zip(by_node[name], answer, strict=True):
                results[i] = result
        moved = next((r for r in [*results, *waits] if _slot_moved(r)), None)
        if moved is not None:
            await self._refresh()
            raise SlotMapChanged(f"redis cluster slots moved under the batch: {moved}")
        _raise_first_error(waits)
        acks = [int(acked) for acked in waits]
        for name, acked in zip(names if wait_ms else [], acks, strict=True):
            if acked < 1:
                self._unreplicated.add(name)
            else:
                self._unreplicated.discard(name)
        return results, acks

    def _wait_ms(self, name: str, wait_ms: int) -> int:
        """How long ``name``'s WAIT may block: briefly while it has shown no replica
        (its replica down after a failover), lest every batch stall that long."""
        return min(wait_ms, UNREPLICATED_WAIT_MS) if name in self._unreplicated else wait_ms

    async def _node_pipeline(self, name: str, commands: list[Command], wait_ms: int) -> list[Any]:
        client = self._clients.get(name)
        if client is None:
            host, _, port = name.rpartition(":")
            client = self._clients[name] = with_fast_packing(
                aioredis.Redis(host=host, port=int(port), **self.node_options)
            )
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        if wait_ms:
            pipe.execute_command("WAIT", 1, wait_ms)
        return list(await pipe.execute(raise_on_error=False))

    async def _refresh(self) -> None:
        """Learn the slot map again (and forget the clients of nodes that left)."""
        try:
            await self.cluster.nodes_manager.initialize()
        except (RedisError, OSError) as exc:  # the failover is still under way
            logger.debug("redis cluster slot map not refreshed yet: %r", exc)
            return
        known = {node.name for node in self.cluster.get_nodes()}
        for name in [n for n in self._clients if n not in known]:
            await self._clients.pop(name).aclose()

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


class SlotMapChanged(RedisConnectionError):
    """A master lost slots while a batch was sent (a failover, a resharding): retry it.

    A connection error to the caller (:func:`streams.redis_sink.is_redis_error`):
    the batch is retried with backoff once the slot map is fresh, never skipped.
    """


def _slot_moved(answer: object) -> bool:
    """MOVED/ASK, a script's non local key, or a master turned replica (READONLY, WAIT)."""
    if not isinstance(answer, ResponseError):
        return False
    text = str(answer)
    return (
        isinstance(answer, AskError)  # MOVED is an AskError too
        or non_local_key(answer)
        or text.startswith("READONLY")
        or "replica" in text
    )


def _raise_first_error(answers: list[Any]) -> None:
    for answer in answers:
        if isinstance(answer, Exception):
            raise answer


def non_local_key(error: object) -> bool:
    """A cross-slot script touched a key its master no longer serves (a slot moved)."""
    return isinstance(error, ResponseError) and "non local key" in str(error)
