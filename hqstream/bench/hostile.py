"""The hostile client of ``hqstream bench fanout --abuse``: one connection at a time, all bad.

It cycles through three attacks until told to stop, reconnecting whenever the
gateway closes it:

1. **oversized frames**: a 16 MiB ``ping`` whose ``id`` is zeros, sent
   permessage-deflate compressed (about 16 KiB on the wire), three times;
2. **binary frames**: ``\\x00\\x01`` a few times, then a ping;
3. **subscribe_all without reading**: the socket stops reading and sends
   ``{"type":"subscribe_all"}`` every few milliseconds (each asks for a
   snapshot of the whole market) until the gateway closes it.

:class:`Abuse` counts connections, the close codes and the error codes the
gateway answered with. :func:`hostile_process` runs it in a process of its
own, so its work (building and inflating megabytes) never delays the normal
clients' event loop, whose latencies are measured. Benchmark use only;
loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as ProcessEvent

import orjson

from hqstream import wsclient

logger = logging.getLogger(__name__)

OVERSIZED = 16 << 20
SUBSCRIBE_ALL = b'{"type":"subscribe_all"}'


@dataclass
class Abuse:
    """What the hostile client did and what it got back."""

    connections: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Abuse) -> None:
        self.connections += other.connections
        self.sent.update(other.sent)
        self.closes.update(other.closes)
        self.errors.update(other.errors)

    def on_message(self, data: bytes) -> None:
        if data.startswith(b'{"type":"error"'):
            self.errors[orjson.loads(data)["code"]] += 1

    def summary(self) -> str:
        closes = ", ".join(f"{code}: {n}" for code, n in sorted(self.closes.items()))
        return (
            f"{self.connections} connections; sent {dict(self.sent)}; "
            f"closed by code {{{closes}}}; errors {dict(self.errors)}"
        )


def _deflated(message: bytes) -> bytes:
    """``message`` as a permessage-deflate payload (RFC 7692: sync-flush tail removed)."""
    z = zlib.compressobj(6, zlib.DEFLATED, -12)  # the window uvicorn negotiates
    return (z.compress(message) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def _closed_within(client: wsclient.LightClient, seconds: float) -> int | None:
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(asyncio.shield(client.closed), seconds)
    return None


async def _oversized(port: int, abuse: Abuse, bomb: bytes) -> None:
    client = await wsclient.connect("127.0.0.1", port, "/api/realtime/ws", abuse.on_message, True)
    abuse.connections += 1
    assert client.transport is not None
    for _ in range(3):
        if client.closed.done():
            break
        client.transport.write(wsclient.client_frame(0x1, bomb, compressed=True))
        abuse.sent["oversized"] += 1
        await asyncio.sleep(0.05)
    code = await _closed_within(client, 5)
    client.close()
    abuse.closes[code or 0] += 1


async def _binary(port: int, abuse: Abuse) -> None:
    client = await wsclient.connect("127.0.0.1", port, "/api/realtime/ws", abuse.on_message, True)
    abuse.connections += 1
    assert client.transport is not None
    for _ in range(5):
        client.transport.write(wsclient.client_frame(0x2, b"\x00\x01"))
        abuse.sent["binary"] += 1
    client.send_text(b'{"type":"ping","id":1}')
    code = await _closed_within(client, 0.5)
    client.close()
    if code is not None:
        abuse.closes[code] += 1


async def _subscribe_all_unread(port: int, abuse: Abuse, stop: asyncio.Event) -> None:
    client = await wsclient.connect("127.0.0.1", port, "/api/realtime/ws", abuse.on_message, True)
    abuse.connections += 1
    assert client.transport is not None
    client.transport.pause_reading()
    deadline = asyncio.get_running_loop().time() + 15
    while not client.closed.done() and not stop.is_set():
        if client.transport.is_closing() or asyncio.get_running_loop().time() > deadline:
            break
        client.send_text(SUBSCRIBE_ALL)
        abuse.sent["subscribe_all"] += 1
        await asyncio.sleep(0.005)
    client.transport.resume_reading()  # read what is left, to see the close code
    code = await _closed_within(client, 10)
    client.close()
    abuse.closes[code or 0] += 1


async def run_hostile(port: int, abuse: Abuse, stop: asyncio.Event) -> None:
    """Attack the gateway on ``port`` until ``stop`` is set."""
    bomb = _deflated(b'{"type":"ping","id":"' + b"0" * OVERSIZED + b'"}')
    while not stop.is_set():
        for attack in ("oversized", "binary", "subscribe_all"):
            try:
                if attack == "oversized":
                    await _oversized(port, abuse, bomb)
                elif attack == "binary":
                    await _binary(port, abuse)
                else:
                    await _subscribe_all_unread(port, abuse, stop)
            except (OSError, ConnectionError) as exc:
                abuse.closes[-1] += 1
                logger.debug("hostile connection failed: %r", exc)
            if stop.is_set():
                return


def hostile_process(port: int, stop: ProcessEvent, results: Queue[Abuse]) -> None:
    """Process target: attack until ``stop`` is set, then put the :class:`Abuse` tally."""

    async def main() -> Abuse:
        abuse = Abuse()
        stopping = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.1)
            stopping.set()

        watcher = asyncio.create_task(watch())
        await run_hostile(port, abuse, stopping)
        await watcher
        return abuse

    results.put(asyncio.run(main()))
