"""api.kafka_feed: the compiled writer of quotes' JSON gives the Python path's exact bytes, or None.

The Python path is ``dumps(codec.decode(payload))`` (:func:`api.kafka_feed.to_event`).
Every payload the writer answers must give the same JSON byte for byte and
the same routing fields; a payload the codec cannot decode must get None.
Like tests/streams/test_native_parse.py, a missing extension fails these
tests under ``make test`` (``HQ_TEST_REQUIRE_NATIVE=1``).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from api.hub import Hub
from api.kafka_feed import KafkaFeed, QuoteJson, quote_json_writer, to_event
from api.settings import GatewaySettings
from schemas.serde import SingleObjectCodec, make_codec, schema_json
from tests.schemas.test_avro_compiler import random_value
from tests.streams.test_native_parse import DAYS, day_lines, python_path

REQUIRED = os.environ.get("HQ_TEST_REQUIRE_NATIVE") == "1"
CODEC = SingleObjectCodec("quote")


@pytest.fixture(scope="module")
def write() -> QuoteJson:
    writer = quote_json_writer(CODEC, enabled=True)
    if writer is None:
        if REQUIRED:
            pytest.fail("HQ_TEST_REQUIRE_NATIVE=1 but hqstream_native is not usable")
        pytest.skip("hqstream_native is not usable")
    return writer


def test_off_and_the_registry_codec_take_the_python_path() -> None:
    assert quote_json_writer(CODEC, enabled=False) is None
    registry = make_codec("quote", "mock://native-json", "hq.quotes.normalized")
    assert quote_json_writer(registry, enabled=True) is None


def same_or_none(write: QuoteJson, payload: bytes) -> bool:
    """Asserts the writer's answer is None or the Python path's; True when it answered."""
    got = write(payload)
    if got is None:
        return False
    rec = CODEC.decode(payload)  # raises if the writer accepted what Python cannot read
    event = to_event("quote", rec)
    assert event.quote is not None
    assert got == (event.quote.code, event.quote.market, event.quote.ts, event.raw), payload
    return True


def simulated_payloads() -> Iterator[bytes]:
    for n, day in enumerate(DAYS):
        for raw in day_lines(day, seed=21 + n, interval_s=600.0):
            parsed = python_path(raw)
            if not isinstance(parsed, Exception):
                yield parsed[1]


def test_simulated_days_are_identical(write: QuoteJson) -> None:
    payloads = list(simulated_payloads())
    assert len(payloads) > 10_000
    assert all(same_or_none(write, p) for p in payloads)  # every real quote: compiled


def random_double(rng: random.Random) -> float:
    """Any finite double, prices and amounts, ties of the shortest form, powers of two."""
    kind = rng.choices(range(6), weights=(20, 40, 1, 5, 1, 33))[0]
    if kind == 0:
        x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        return x if math.isfinite(x) else 0.0
    if kind == 1:
        return rng.randrange(-(10**17), 10**17) / rng.choice((1, 4, 100, 1000, 10**6))
    if kind == 2:
        return math.ldexp(1.0, rng.randrange(-1074, 1024)) * rng.choice((1, -1))
    if kind == 3:
        return rng.choice((0.0, -0.0, 1e-5, 9.99e-6, 1e16, 9999999999999998.0, 1e9, 999999999.999))
    if kind == 4:
        return -1929313307185278.2  # two shortest forms equally near: Python takes the even
    return rng.uniform(-1e6, 1e6)


def random_payloads(rng: random.Random, n: int) -> Iterator[bytes]:
    fields = schema_json("quote")["fields"]
    for _ in range(n):
        rec: dict[str, Any] = {f["name"]: random_value(f["type"], rng) for f in fields}
        for name, value in rec.items():
            if type(value) is float:
                rec[name] = random_double(rng)
            elif type(value) is list and value and type(value[0]) is float:
                rec[name] = [random_double(rng) for _ in value]
        yield CODEC.encode(rec)


def test_random_records_are_identical_or_refused(write: QuoteJson) -> None:
    rng = random.Random(11)
    answered = sum(same_or_none(write, p) for p in random_payloads(rng, 20_000))
    assert answered > 5_000


def test_damaged_payloads_are_identical_or_refused(write: QuoteJson) -> None:
    rng = random.Random(12)
    good = list(random_payloads(rng, 300)) + list(simulated_payloads())[:300]
    for payload in good:
        damaged = [payload[: rng.randrange(len(payload))], payload + b"\x00", payload[:10]]
        for _ in range(5):
            b = bytearray(payload)
            b[rng.randrange(len(b))] = rng.randrange(256)
            damaged.append(bytes(b))
        for p in damaged:
            try:
                CODEC.decode(p)
            except Exception:
                assert write(p) is None, p
            else:
                same_or_none(write, p)
    # another schema version's fingerprint: the Python path resolves versions
    assert write(good[0][:2] + bytes(8) + good[0][10:]) is None


def consumed(kind: str) -> float:
    return REGISTRY.get_sample_value("hq_gateway_consumed_total", {"kind": kind}) or 0.0


def test_the_feed_hands_the_hub_the_same_events(write: QuoteJson) -> None:
    payloads = list(simulated_payloads())[:2000] + list(random_payloads(random.Random(3), 500))
    loop = asyncio.new_event_loop()
    try:
        events = []
        for native in (True, False):
            settings = GatewaySettings(native=native, auth="off")
            feed = KafkaFeed(settings, Hub(), loop)
            assert (feed._quote_json is not None) == native
            before = consumed("quote")
            events.append(feed.decode((settings.normalized_topic, p, None) for p in payloads))
            assert consumed("quote") - before == len(payloads)  # every one counted, either path
    finally:
        loop.close()
    on, off = events
    assert len(on) == len(off) == len(payloads)
    assert [(e.kind, e.raw, e.quote) for e in on] == [(e.kind, e.raw, e.quote) for e in off]
