"""schemas.avro_compiler: compiled encoders write exactly fastavro's bytes.

Both compilers: the generated Python functions (``compile_encoder``) and the
extension's (``native_encoder``, hqstream_native.RecordEncoder), which the
codecs use when it is installed.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from typing import Any

import fastavro
import pytest

from schemas import avro_compiler
from schemas.avro_compiler import Encoder, compile_encoder, native_encoder, zigzag_varint
from schemas.serde import SerdeError, SingleObjectCodec, schema_json
from tests.native import native_or_skip

# candle v2: a nullable nested record (indicators) of nullable doubles
COMPILED = ("quote", "alert", "candle")
Compiler = Callable[..., Encoder | None]


@pytest.fixture(params=["python", "native"])
def compile_(request: pytest.FixtureRequest) -> Compiler:
    """``compile_encoder``, and the extension's compiler of the same schemas."""
    if request.param == "python":
        return compile_encoder
    native_or_skip()
    return native_encoder


def fastavro_bytes(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


def random_value(schema: Any, rng: random.Random) -> Any:
    """A random valid value of a field schema, edge values included."""
    if isinstance(schema, list):  # a union: a random branch
        return random_value(rng.choice(schema), rng)
    kind = schema if isinstance(schema, str) else schema["type"]
    if kind == "null":
        return None
    if kind == "record":
        return {f["name"]: random_value(f["type"], rng) for f in schema["fields"]}
    if kind == "long":
        return rng.choice([0, -1, 1, 63, -64, 64, 2**63 - 1, -(2**63), rng.getrandbits(62)])
    if kind == "int":
        return rng.choice([0, -1, 2**31 - 1, -(2**31), rng.randrange(-(2**31), 2**31)])
    if kind == "double":
        return rng.choice([0.0, -0.0, 1e-300, 1e300, math.inf, -math.inf, rng.uniform(-1e6, 1e6)])
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "string":
        return rng.choice(["", "平安银行", "*ST中", "a" * 200, "x\x00y", str(rng.random())])
    if kind == "enum":
        return rng.choice(schema["symbols"])
    if kind == "array":
        return [random_value(schema["items"], rng) for _ in range(rng.choice([0, 1, 5, 70]))]
    raise AssertionError(f"no generator for {schema!r}")


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_bytes_equal_fastavro_for_random_records(compile_: Compiler, name: str) -> None:
    schema = schema_json(name)  # type: ignore[arg-type]
    encode = compile_(schema)
    assert encode is not None, f"{name} should compile"
    rng = random.Random(name)
    for _ in range(2000):
        record = {f["name"]: random_value(f["type"], rng) for f in schema["fields"]}
        assert encode(record) == fastavro_bytes(schema, record), record


def test_prefix_is_written_first(compile_: Compiler) -> None:
    schema = schema_json("alert")
    encode = compile_(schema, b"\xc3\x01HEADER!!")
    assert encode is not None
    record = {f["name"]: random_value(f["type"], random.Random(1)) for f in schema["fields"]}
    assert encode(record) == b"\xc3\x01HEADER!!" + fastavro_bytes(schema, record)


def test_cached_values_stay_correct_across_cache_clears(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(avro_compiler, "CACHE_MAX", 4)
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "n", "type": "long"}, {"name": "s", "type": "string"},
        {"name": "a", "type": {"type": "array", "items": "long"}},
    ]}  # fmt: skip
    encode = compile_encoder(schema)
    assert encode is not None
    for i in range(50):
        record = {"n": i * 1000, "s": f"s{i % 7}", "a": [i, i % 3, -i]}
        assert encode(record) == fastavro_bytes(schema, record)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (-64, b"\x7f"), (64, b"\x80\x01"),
     (2**63 - 1, b"\xfe" + b"\xff" * 8 + b"\x01")],
)  # fmt: skip
def test_zigzag_varint_matches_the_spec(n: int, expected: bytes) -> None:
    assert zigzag_varint(n) == expected


@pytest.mark.parametrize("n", [2**63, -(2**63) - 1])
def test_zigzag_varint_refuses_out_of_range(n: int) -> None:
    with pytest.raises(OverflowError):
        zigzag_varint(n)


@pytest.mark.parametrize(
    "field_type",
    [
        ["null", "string", "long"],
        ["string", "long"],
        ["null", {"type": "map", "values": "long"}],
        {"type": "map", "values": "long"},
        {"type": "fixed", "name": "F", "size": 4},
        {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "bytes"}]},
        {"type": "array", "items": {"type": "record", "name": "I", "fields": []}},
        "bytes",
    ],
)
def test_unsupported_types_are_not_compiled(compile_: Compiler, field_type: Any) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
    assert compile_(schema) is None


@pytest.mark.parametrize(
    "field_type",
    [
        ["null", "string"],
        ["long", "null"],  # null second: the branch indexes swap
        ["null", {"type": "enum", "name": "E", "symbols": ["A", "B"]}],
        ["null", {"type": "array", "items": "double"}],
        {"type": "record", "name": "Inner", "fields": [
            {"name": "x", "type": "long"}, {"name": "y", "type": ["null", "double"]}]},
        ["null", {"type": "record", "name": "Opt", "fields": [
            {"name": "s", "type": "string"}, {"name": "d", "type": "double"}]}],
    ],
)  # fmt: skip
def test_nested_records_and_nullable_unions_compile_to_fastavro_bytes(
    compile_: Compiler, field_type: Any
) -> None:
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "double"}, {"name": "f", "type": field_type},
        {"name": "z", "type": "long"}]}  # fmt: skip
    encode = compile_(schema)
    assert encode is not None
    rng = random.Random(repr(field_type))
    seen_null = False
    for _ in range(300):
        record = {f["name"]: random_value(f["type"], rng) for f in schema["fields"]}
        seen_null |= record["f"] is None
        assert encode(record) == fastavro_bytes(schema, record), record
    assert seen_null or isinstance(field_type, dict)


def test_a_missing_nested_field_falls_back_to_fastavro_and_its_default() -> None:
    codec = SingleObjectCodec("candle")
    record = {f["name"]: random_value(f["type"], random.Random(5)) for f in schema_json(
        "candle")["fields"]}  # fmt: skip
    record["indicators"] = {"ma5": 10.5}  # the other values default to null
    decoded = codec.decode(codec.encode(record))
    assert decoded["indicators"]["ma5"] == 10.5 and decoded["indicators"]["atr14"] is None


def test_market_stats_falls_back_to_fastavro(compile_: Compiler) -> None:
    """Its nested top-N records are not compiled; the codec still encodes it."""
    assert compile_(schema_json("market_stats")) is None


def _quote() -> dict[str, Any]:
    schema = schema_json("quote")
    return {f["name"]: random_value(f["type"], random.Random(3)) for f in schema["fields"]}


def test_codec_falls_back_to_fastavro_for_what_the_compiled_path_refuses() -> None:
    codec = SingleObjectCodec("quote")
    record = _quote()
    record["volume"] = 12.9  # fastavro truncates a float in a long field
    assert codec.decode(codec.encode(record))["volume"] == 12
    record["volume"] = 2**64  # out of range for both
    with pytest.raises(SerdeError):
        codec.encode(record)
    del record["volume"]  # missing, no default
    with pytest.raises(SerdeError):
        codec.encode(record)
    record["volume"] = 1
    record["market"] = "HK"  # not an enum symbol
    with pytest.raises(SerdeError):
        codec.encode(record)


def test_codec_round_trips_through_the_compiled_path() -> None:
    codec = SingleObjectCodec("quote")
    record = _quote()
    assert codec.decode(codec.encode(record)) == record  # no NaN among the random values


def test_values_in_unusual_forms_encode_as_fastavro_writes_them() -> None:
    """What a compiled encoder refuses (a float in a long, an int in a boolean) or takes
    in another form (an int or a numpy double in a double field): fastavro's bytes."""
    np = pytest.importorskip("numpy")
    codec = SingleObjectCodec("candle")
    schema = schema_json("candle")
    record = {f["name"]: random_value(f["type"], random.Random(9)) for f in schema["fields"]}
    record["indicators"] = dict.fromkeys(record["indicators"] or {"ma5": 1.0}, None)
    for field, value in [("amount", 5), ("amount", 2**60 + 1), ("open", np.float64(10.25)),
                         ("volume", 12.9), ("closed", 1), ("ticks", True)]:  # fmt: skip
        changed = dict(record, **{field: value})
        assert codec.encode(changed)[10:] == fastavro_bytes(schema, changed), (field, value)
    changed = dict(record, indicators=dict(record["indicators"], ma5=7))
    assert codec.encode(changed)[10:] == fastavro_bytes(schema, changed)
