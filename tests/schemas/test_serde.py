"""schemas.serde: single-object encoding (checked against the Avro spec) and the registry path."""

from __future__ import annotations

import io
import struct
import uuid
from typing import Any

import avro.schema
import fastavro
import pytest

from schemas.indicators import NAMES
from schemas.serde import (
    CONFLUENT_MAGIC,
    CURRENT_VERSION,
    SINGLE_OBJECT_MAGIC,
    SchemaName,
    SerdeError,
    SingleObjectCodec,
    make_codec,
    schema_fingerprint,
    schema_json,
    schema_path,
)

# ---------------------------------------------------------------- CRC-64-AVRO, from the spec
# "Schema Fingerprints" in the Avro specification, transcribed independently of fastavro.
EMPTY64 = 0xC15D213AA4D7A795


def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


FP_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    fp = EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


@pytest.mark.parametrize(
    ("canonical", "signed"),
    [  # Avro's published vectors (share/test/data/schema-tests.txt), as signed longs
        ('"null"', 7195948357588979594),
        ('"boolean"', -6970731678124411036),
        ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    ],
)
def test_crc64_implementation_matches_spec_vectors(canonical: str, signed: int) -> None:
    assert crc64_avro(canonical.encode()) == signed & 0xFFFFFFFFFFFFFFFF


SAMPLES: dict[SchemaName, dict[str, Any]] = {
    "quote": {
        "symbol": "sz000001", "code": "000001", "market": "SZ", "board": "MAIN",
        "name": "平安银行", "is_st": False, "exchange_ts": 1795417197000,
        "trade_date": "2026-11-23", "open": 11.02, "prev_close": 11.0, "price": 11.05,
        "high": 11.1, "low": 10.98, "bid": 11.04, "ask": 11.05, "volume": 58342100,
        "amount": 643981234.5, "bid_prices": [11.04, 11.03, 11.02, 11.01, 11.0],
        "bid_volumes": [1200, 3400, 500, 7800, 9900],
        "ask_prices": [11.05, 11.06, 11.07, 11.08, 11.09],
        "ask_volumes": [1500, 2000, 300, 4100, 600], "change": 0.05, "change_pct": 0.45,
        "limit_up": 12.1, "limit_down": 9.9, "traded": True, "suspended": False,
        "at_limit_up": False, "at_limit_down": False, "receive_ts": 1795417197010,
        "process_ts": 1795417197020, "limit_free": False, "not_traded_yet": False,
        "phase": "continuous", "avg_price": 11.038, "amplitude": 1.09,
        "order_imbalance": 31.33,
    },
    "candle": {
        "code": "600519", "market": "SH", "trade_date": "2026-11-23",
        "minute_ts": 1795417140000, "open": 1510.0, "high": 1512.5, "low": 1509.0,
        "close": 1511.0, "volume": 12300, "amount": 18581300.0, "ticks": 20, "closed": True,
        "tf": "5m", "indicators": {**dict.fromkeys(NAMES), "ma5": 1509.2, "rsi6": 61.5},
    },
    "market_stats": {
        "market": "ALL", "ts": 1795417197500, "stocks": 5123, "advancers": 3001,
        "decliners": 1800, "unchanged": 322, "limit_up": 55, "limit_down": 7, "suspended": 12,
        "volume": 812345678900, "amount": 1.2e12, "avg_change_pct": 0.83,
        "top_gainers": [{"code": "300750", "name": "宁德时代", "price": 300.0,
                         "change_pct": 20.0, "amount": 9.9e9}],
        "top_losers": [],
        "top_turnover": [{"code": "600519", "name": "贵州茅台", "price": 1511.0,
                          "change_pct": 0.73, "amount": 1.5e10}],
        "not_traded_yet": 0,
        "boards": [{"board": "STAR", "stocks": 590, "advancers": 300, "decliners": 250,
                    "unchanged": 30, "suspended": 2, "not_traded_yet": 8, "limit_up": 4,
                    "limit_down": 1}],
    },
    "alert": {
        "code": "300750", "name": "宁德时代", "market": "SZ", "kind": "LIMIT_UP_TOUCH",
        "exchange_ts": 1795417197000, "price": 300.0, "change_pct": 20.0, "value": 20.0,
        "message": "宁德时代 touched limit up 300.00",
    },
}  # fmt: skip


def test_samples_cover_every_schema() -> None:
    assert set(SAMPLES) == set(CURRENT_VERSION)


@pytest.mark.parametrize("name", sorted(CURRENT_VERSION))
def test_single_object_header_is_spec_fingerprint(name: SchemaName) -> None:
    with open(schema_path(name), encoding="utf-8") as fh:
        canonical = avro.schema.parse(fh.read()).canonical_form  # the avro library's PCF
    expected = struct.pack("<Q", crc64_avro(canonical.encode()))
    assert schema_fingerprint(schema_json(name)) == expected
    payload = SingleObjectCodec(name).encode(SAMPLES[name])
    assert payload[:2] == SINGLE_OBJECT_MAGIC == b"\xc3\x01"
    assert payload[2:10] == expected


@pytest.mark.parametrize("name", sorted(CURRENT_VERSION))
def test_single_object_round_trip(name: SchemaName) -> None:
    codec = SingleObjectCodec(name)
    assert codec.decode(codec.encode(SAMPLES[name])) == SAMPLES[name]


def test_unknown_fingerprint() -> None:
    codec = SingleObjectCodec("quote")
    payload = codec.encode(SAMPLES["quote"])
    with pytest.raises(SerdeError, match="unknown schema fingerprint"):
        codec.decode(payload[:2] + b"\x00" * 8 + payload[10:])
    # another schema's payload is an unknown fingerprint for this one
    with pytest.raises(SerdeError, match="unknown schema fingerprint"):
        codec.decode(SingleObjectCodec("alert").encode(SAMPLES["alert"]))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"hello world",
        b"\xc3\x01",
        b"\x00\x00\x00\x00\x01" + b"x" * 20,
        b"\xc3\x02" + b"\0" * 20,
    ],
)
def test_garbage_is_serde_error(payload: bytes) -> None:
    with pytest.raises(SerdeError):
        SingleObjectCodec("quote").decode(payload)


def test_truncated_body_is_serde_error() -> None:
    codec = SingleObjectCodec("candle")
    payload = codec.encode(SAMPLES["candle"])
    with pytest.raises(SerdeError):
        codec.decode(payload[:-5])


def test_encode_rejects_a_wrong_record() -> None:
    bad = {**SAMPLES["quote"], "market": "HK"}
    with pytest.raises(SerdeError):
        SingleObjectCodec("quote").encode(bad)
    missing = {k: v for k, v in SAMPLES["quote"].items() if k != "price"}
    with pytest.raises(SerdeError):
        SingleObjectCodec("quote").encode(missing)


@pytest.mark.parametrize("name", sorted(CURRENT_VERSION))
def test_registry_codec_with_mock_registry(name: SchemaName) -> None:
    topic = f"t.{uuid.uuid4().hex[:12]}"
    codec = make_codec(name, f"mock://{uuid.uuid4().hex[:8]}", topic)
    payload = codec.encode(SAMPLES[name])
    assert payload[:1] == CONFLUENT_MAGIC == b"\x00"
    schema_id = struct.unpack(">I", payload[1:5])[0]
    assert schema_id >= 1
    assert codec.decode(payload) == SAMPLES[name]
    again = codec.encode(SAMPLES[name])
    assert again[1:5] == payload[1:5]  # same schema, same id
    with pytest.raises(SerdeError):
        codec.decode(SingleObjectCodec(name).encode(SAMPLES[name]))


def test_make_codec_without_registry_is_single_object() -> None:
    assert isinstance(make_codec("quote"), SingleObjectCodec)
    assert isinstance(make_codec("quote", None, "x"), SingleObjectCodec)


def test_quote_v1_payloads_decode_with_the_v2_defaults() -> None:
    """Quotes written before v2 (already on the topics) still decode: the new
    fields take their defaults (no limit-free listing, phase unknown)."""
    v1_fields = {f["name"] for f in schema_json("quote", 1)["fields"]}
    v1 = {k: v for k, v in SAMPLES["quote"].items() if k in v1_fields}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema_json("quote", 1)), v1)
    payload = SINGLE_OBJECT_MAGIC + schema_fingerprint(schema_json("quote", 1)) + buf.getvalue()
    decoded = SingleObjectCodec("quote").decode(payload)
    assert decoded == {
        **v1, "limit_free": False, "not_traded_yet": False, "phase": "",
        "avg_price": 0.0, "amplitude": 0.0, "order_imbalance": 0.0,
    }  # fmt: skip
