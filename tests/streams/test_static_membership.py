"""Static members on a real broker: a clean stop leaves at once, a replacement takes over at once.

The session timeout here is 30 s, so a hand-over within :data:`AT_ONCE_S` can
only come from the LeaveGroup (a clean stop) or from the instance id (a
replacement), never from the coordinator expiring the member.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.group_coordinator import GroupCoordinator

from streams import static_membership
from tests.conftest import KafkaEndpoint

pytestmark = pytest.mark.integration

SESSION_MS = 30_000
AT_ONCE_S = 10.0  # a third of the session timeout
PARTITIONS = 4


@pytest.fixture(autouse=True)
def _installed(monkeypatch: pytest.MonkeyPatch) -> None:
    # undone after the test: install() patches aiokafka for the whole process
    monkeypatch.setattr(GroupCoordinator, "_maybe_leave_group", GroupCoordinator._maybe_leave_group)
    static_membership.install()


def consumer(kafka: KafkaEndpoint, topic: str, group: str, instance: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, group_id=group,
                            group_instance_id=instance, session_timeout_ms=SESSION_MS,
                            heartbeat_interval_ms=500, enable_auto_commit=False)  # fmt: skip


@asynccontextmanager
async def member(c: AIOKafkaConsumer) -> AsyncIterator[AIOKafkaConsumer]:
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def holds(c: AIOKafkaConsumer, n: int, timeout: float) -> float:
    """Seconds until ``c`` holds ``n`` partitions (polling, so it heartbeats and rejoins)."""
    started = time.monotonic()
    while len(c.assignment()) != n:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"holds {sorted(tp.partition for tp in c.assignment())} "
                                 f"after {timeout} s, not {n} partitions")  # fmt: skip
        await c.getmany(timeout_ms=100)
    return time.monotonic() - started


def test_a_static_member_that_stops_cleanly_hands_its_partitions_over_at_once(
    kafka: KafkaEndpoint,
) -> None:
    topic, group = kafka.topic("static", PARTITIONS), kafka.group("static")

    async def scenario() -> float:
        async with member(consumer(kafka, topic, group, "a")) as a:
            await holds(a, PARTITIONS, 60)
            async with member(consumer(kafka, topic, group, "b")) as b:
                await asyncio.gather(holds(a, PARTITIONS // 2, 60), holds(b, PARTITIONS // 2, 60))
            return await holds(a, PARTITIONS, AT_ONCE_S)

    assert asyncio.run(scenario()) < AT_ONCE_S  # b left: a did not wait for b's session


JOIN_AND_HANG = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer
async def main():
    c = AIOKafkaConsumer(sys.argv[2], bootstrap_servers=sys.argv[1], group_id=sys.argv[3],
                         group_instance_id="a", session_timeout_ms=30000,
                         heartbeat_interval_ms=500, enable_auto_commit=False)
    await c.start()
    while not c.assignment():
        await c.getmany(timeout_ms=100)
    print("joined", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def test_a_replacement_with_the_same_instance_id_takes_over_at_once(kafka: KafkaEndpoint) -> None:
    """The killed member's session has 30 s to run; its replacement joins in its place."""
    topic, group = kafka.topic("static", PARTITIONS), kafka.group("static")
    killed = subprocess.Popen([sys.executable, "-c", JOIN_AND_HANG, kafka.bootstrap, topic, group],
                              stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        assert killed.stdout is not None and killed.stdout.readline() == b"joined\n"

        async def scenario() -> float:
            async with member(consumer(kafka, topic, group, "b")) as b:
                await holds(b, PARTITIONS // 2, 60)
                os.killpg(killed.pid, signal.SIGKILL)
                killed.wait(10)
                async with member(consumer(kafka, topic, group, "a")) as replacement:
                    took = await holds(replacement, PARTITIONS // 2, AT_ONCE_S)
                    assert len(b.assignment()) == PARTITIONS // 2  # b kept its own
                    return took

        assert asyncio.run(scenario()) < AT_ONCE_S
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait(10)
