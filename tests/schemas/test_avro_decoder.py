"""schemas.avro_decoder: compiled decoders read exactly what fastavro reads."""

from __future__ import annotations

import io
import random
import struct
from typing import Any

import fastavro
import pytest

from schemas.avro_decoder import compile_decoder
from schemas.serde import SerdeError, SingleObjectCodec, schema_json
from tests.schemas.test_avro_compiler import COMPILED, fastavro_bytes, random_value


def fastavro_record(schema: dict[str, Any], body: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(schema), None)


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_decoder_equals_fastavro_for_random_records(name: str) -> None:
    schema = schema_json(name)  # type: ignore[arg-type]
    decode = compile_decoder(schema)
    assert decode is not None, f"{name} should compile"
    rng = random.Random(name)
    for _ in range(2000):
        record = {f["name"]: random_value(f["type"], rng) for f in schema["fields"]}
        body = b"HEAD" + fastavro_bytes(schema, record)
        got = decode(body, 4)
        assert got == fastavro_record(schema, body[4:]) == record
        assert list(got) == [f["name"] for f in schema["fields"]]  # field order kept


def test_nullable_nested_records_decode_as_fastavro() -> None:
    """Candle v2: the ``indicators`` union of null and a record of nullable doubles."""
    schema = schema_json("candle")
    decode = compile_decoder(schema)
    assert decode is not None
    indicators = schema["fields"][-1]["type"][1]["fields"]
    rng = random.Random(16)
    for i in range(2000):
        record = {f["name"]: random_value(f["type"], rng) for f in schema["fields"][:-1]}
        record["indicators"] = None if i % 5 == 0 else {
            f["name"]: None if rng.random() < 0.3 else rng.uniform(-1e6, 1e6) for f in indicators
        }  # fmt: skip
        body = b"HEAD" + fastavro_bytes(schema, record)
        assert decode(body, 4) == fastavro_record(schema, body[4:]) == record
    no_indicators = fastavro_bytes(schema, {**record, "indicators": None})
    assert no_indicators[-1:] == b"\x00"  # the union's branch: null
    with pytest.raises(ValueError, match="union branch"):
        decode(no_indicators[:-1] + b"\x04", 0)  # a third branch


def test_arrays_in_several_blocks_and_with_byte_sizes() -> None:
    """Writers may split an array into blocks, and give a block's size (negative count)."""
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "long"}},
        {"name": "ds", "type": {"type": "array", "items": "double"}},
    ]}  # fmt: skip
    decode = compile_decoder(schema)
    assert decode is not None
    # blocks [1, 2] and [3] (count -1, then its size: 1 byte), end
    longs = b"\x04" + b"\x02\x04" + b"\x01" + b"\x02" + b"\x06" + b"\x00"
    doubles = b"\x02" + struct.pack("<d", 1.5) + b"\x00"
    assert decode(longs + doubles, 0) == {"xs": [1, 2, 3], "ds": [1.5]}


def test_varints_of_every_length_in_fields_and_arrays() -> None:
    """The decoder inlines one- to three-byte varints in arrays and every length in
    fields: values at each byte-length boundary read as fastavro reads them."""
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "x", "type": "long"},
        {"name": "xs", "type": {"type": "array", "items": "long"}},
        {"name": "s", "type": "string"},
    ]}  # fmt: skip
    decode = compile_decoder(schema)
    assert decode is not None
    edges = [0]
    for bits in (6, 13, 20, 27, 34, 62):  # zig-zag: 2**bits needs one more byte than 2**bits - 1
        edges += [2**bits - 1, 2**bits, -(2**bits), -(2**bits) - 1]
    edges += [2**63 - 1, -(2**63)]
    for x in edges:
        record = {"x": x, "xs": edges, "s": "浦发银行" * (x % 50 if x > 0 else 1)}
        body = fastavro_bytes(schema, record)
        assert decode(body, 0) == fastavro_record(schema, body) == record


def test_not_compiled_schemas_return_none() -> None:
    assert compile_decoder(schema_json("market_stats")) is None  # arrays of records


def test_the_codec_answers_as_fastavro_did_for_damaged_payloads() -> None:
    codec = SingleObjectCodec("alert")
    record = {"code": "600000", "name": "浦发银行", "market": "SH", "kind": "FAST_MOVE",
              "exchange_ts": 1, "price": 1.0, "change_pct": 5.0, "value": 5.0,
              "message": "m"}  # fmt: skip
    payload = codec.encode(record)
    assert codec.decode(payload) == record
    with pytest.raises(SerdeError):
        codec.decode(payload[:-3])
    assert codec.decode(payload + b"\x00\x01") == record  # fastavro ignores trailing bytes
