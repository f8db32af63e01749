"""The fan-out's direct-write path: frame headers, and the hub's flush timer on a real server.

Under uvicorn's sans-I/O WebSocket implementation sessions get a writer
(:mod:`api.wire`) and no sender task; the hub flushes only sessions with
something pending. Real uvicorn, Kafka and Redis; ``websockets`` clients with
and without permessage-deflate (the deflate client decodes the shared
compressor's frames with its own, standard decompressor).
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib

import pytest
import websockets
from websockets.frames import Frame, Opcode

from api.wire import SansIOWriter, SharedDeflate, text_header
from api.ws_session import Batch
from tests.api import helpers as h
from tests.api.conftest import push_settings
from tests.api.server import run_gateway
from tests.api.test_ws_push import QuoteProducer, _recv, _until, now_ms
from tests.api.vclock import VirtualClock
from tests.conftest import KafkaEndpoint


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_header_matches_websockets_framing(size: int) -> None:
    payload = b"x" * size
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_header(size) + payload == expected


@pytest.mark.integration
async def test_direct_writes_with_and_without_deflate(kafka: KafkaEndpoint, redis_url: str) -> None:
    settings = push_settings(kafka, redis_url, flush_interval_ms=20)
    producer = QuoteProducer(settings)
    t0 = now_ms()
    with run_gateway(settings) as gw:
        hub = gw.app.state.hub
        async with (
            websockets.connect(gw.ws_url, compression=None) as plain,
            websockets.connect(gw.ws_url) as deflated,
            websockets.connect(gw.ws_url) as idle,
        ):
            for ws, code in ((plain, "000001"), (deflated, "000001"), (idle, "000999")):
                await ws.send(json.dumps({"type": "subscribe_stock", "stock_code": code}))
                assert (await _recv(ws))["type"] == "ack"
                assert (await _recv(ws))["type"] == "snapshot"
            sessions = list(hub.sessions.values())
            assert len(sessions) == 3
            assert all(isinstance(s._writer, SansIOWriter) and s._task is None for s in sessions)
            # the deflate client's frames come from the shared compressor, the plain one's not
            assert sorted(s._writer._deflate is not None for s in sessions) == [False, True, True]
            idle_session = next(s for s in sessions if "000999" in s.stocks)
            frames_before = hub.frames_sent
            for i in range(1, 21):
                producer.send(h.quote("000001", t0 + i, receive_ts=now_ms(), name="y" * 300))
                producer.flush()
                await asyncio.sleep(0.01)
            for ws in (plain, deflated):
                stamps: list[int] = []
                while not stamps or stamps[-1] < t0 + 20:
                    msg = await _until(ws, "quotes")
                    stamps += [q["exchange_ts"] for q in msg["data"]]
                assert stamps == sorted(set(stamps)) and stamps[-1] == t0 + 20
            # The idle client was never flushed: nothing pending, nothing sent.
            assert idle_session.send_started is None and not idle_session._quotes
            with pytest.raises(TimeoutError):
                await _recv(idle, timeout=0.3)
            assert hub.frames_sent - frames_before >= 2
            # Control messages still go out in order through the writer (compressed or not).
            for ws in (plain, deflated):
                await ws.send(json.dumps({"type": "ping", "id": 7}))
                pong = await _until(ws, "pong")
                assert pong["id"] == 7 and abs(pong["ts"] - time.time() * 1000) < 5000


@pytest.mark.integration
async def test_snapshot_reads_of_one_tick_share_a_pipeline(redis_url: str) -> None:
    import redis

    from api.snapshots import SnapshotReads
    from api.store import Store

    r = redis.Redis.from_url(redis_url)
    t0 = now_ms()
    h.write_quote(r, h.quote("000001", t0, price=10.1))
    h.write_quote(r, h.quote("600519", t0 + 1, price=20.2))
    r.close()
    store = Store(redis_url)
    reads = SnapshotReads(store)
    try:
        wanted = [["000001"], ["600519", "000001"], ["000404"], ["600519"]]
        got = await asyncio.gather(*(reads.quote_events(codes) for codes in wanted))
        assert reads.pipelines == 1
        stamps = [[q.ts if q is not None else None for q in rows] for rows in got]
        assert stamps == [[t0], [t0 + 1, t0], [None], [t0 + 1]]
        assert await reads.quote_events([]) == []
    finally:
        await store.close()


def test_shared_deflate_messages_decode_in_one_client_context() -> None:
    """RFC 7692: each payload + 00 00 ff ff inflates, in order, in one decompressor."""
    shared = SharedDeflate(max_cached=3)
    quotes = [json.dumps({"code": f"{i:06d}", "name": "平安银行" * i}).encode() for i in range(8)]
    messages: list[bytes | Batch] = [
        Batch(b'{"type":"quotes","data":[', quotes[:5]),
        b'{"type":"ack","subscriptions":{"stocks":["000001"]}}',
        Batch(b'{"type":"quotes","data":[', quotes[3:]),  # cached pieces, then a cache clear
        Batch(b'{"type":"quotes","data":[', []),
        b"x" * 100_000,  # longer than the window: back-references stay within the piece
    ]
    client = zlib.decompressobj(-15)  # the client's context, kept across messages
    for message in messages:
        if isinstance(message, Batch):
            payload, expected = shared.batch_payload(message), message.joined()
        else:
            payload, expected = shared.message_payload(message), message
        assert not payload.endswith(b"\x00\x00\xff\xff")
        assert client.decompress(payload + b"\x00\x00\xff\xff") == expected


def test_compressed_text_header_sets_rsv1() -> None:
    for size in (0, 125, 126, 65535, 65536):  # same length encoding, RSV1 set
        assert text_header(size, compressed=True) == b"\xc1" + text_header(size)[1:]


class MemoryWriter:
    """A FrameWriter over a list (the socket side is tested with real uvicorn above)."""

    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []
        self.open = True
        self.aborted = False

    def writable(self) -> bool:
        return self.open

    def write(self, message: bytes) -> None:
        self.frames.append(json.loads(message))

    def write_batch(self, batch: Batch) -> None:
        self.write(batch.joined())

    def abort(self) -> None:
        self.aborted = True


async def test_hub_flush_leading_edge_then_once_per_interval_and_blocked_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from api.hub import Event, Hub
    from api.ws_session import QuoteEvent, Session

    clock = VirtualClock(monkeypatch)

    def quote(ts: int) -> Event:
        q = QuoteEvent("000001", "SZ", ts, json.dumps({"exchange_ts": ts}).encode())
        return Event("quote", q.raw, quote=q)

    async def never(*_: object) -> None:
        raise AssertionError("the ASGI path must not be used with a writer")

    hub = Hub(flush_interval_s=0.1)
    writer = MemoryWriter()
    s = Session(1, "k", never, never, flush_interval_s=0.1, max_pending_quotes=10)
    hub.attach_writer(s, writer)
    hub.add(s)
    s.start()
    hub.subscribe_stock(s, "000001")
    hub.dispatch([quote(1)])
    await clock.run()  # idle session: written right after the dispatch, no time passing
    assert [f["type"] for f in writer.frames] == ["quotes"]
    hub.dispatch([quote(2)])
    hub.dispatch([quote(3)])
    await clock.advance(0.09)  # within the interval: conflated, not yet written
    assert len(writer.frames) == 1 and s.conflated == 1
    await clock.advance(0.02)  # the interval is over
    assert [[q["exchange_ts"] for q in f["data"]] for f in writer.frames] == [[1], [3]]  # type: ignore[attr-defined]
    # A paused transport: nothing written, the session counts as blocked, retried.
    writer.open = False
    hub.dispatch([quote(4)])
    await clock.advance(0.15)
    assert len(writer.frames) == 2 and s.send_started is not None
    assert s.stalled_for(clock.now + 1) > 1
    writer.open = True
    await clock.advance(0.15)
    assert writer.frames[-1]["data"] == [{"exchange_ts": 4}] and s.send_started is None
    assert hub.frames_sent == 3


async def test_gc_keeper_freezes_then_collects_frozen_cycles_after_churn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc
    import weakref

    from api.app import keep_gc_off_live_objects
    from api.hub import Hub

    class Node:
        def __init__(self) -> None:
            self.me = self

    clock = VirtualClock(monkeypatch)
    hub = Hub()
    cycle = Node()
    alive = weakref.ref(cycle)
    keeper = asyncio.get_running_loop().create_task(keep_gc_off_live_objects(hub, 0.02, 5))
    try:
        await clock.advance(0.1)
        assert gc.get_freeze_count() > 0
        del cycle
        gc.collect()
        assert alive() is not None  # frozen: the collector does not see it
        hub.removed += 5  # five connections closed: the next tick collects everything
        await clock.advance(0.1)
        assert alive() is None
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    assert gc.get_freeze_count() == 0
