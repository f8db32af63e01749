"""Avro binary encoders compiled for one record schema: the hot path's encoder.

fastavro interprets the schema for every record it writes (a dispatch per
field); for the 31-field Quote that is ~9 µs, a sixth of a stream worker's
time per tick. :func:`compile_encoder` turns a flat record schema into one
generated Python function instead:

* runs of fixed-width fields (``double``, ``float``, ``boolean``) are packed
  by one precompiled :class:`struct.Struct` call;
* ``int``/``long`` values (zig-zag varints) and ``string`` values are looked
  up in bounded caches of their encoded bytes (a snapshot's ticks share their
  timestamps, dates, names and most order-book sizes), computed on a miss;
* ``enum`` symbols map to their precomputed index bytes; arrays of those
  types are written as one block (count, items, ``0``).

* a nested record is a compiled encoder of its own, called; a two-branch
  union with ``null`` (Candle v2's nullable indicators and their nullable
  doubles) writes the branch index, then the value as above.

Anything else (other unions, maps, fixed, arrays of records) is not compiled:
:func:`compile_encoder` returns ``None`` and the caller keeps fastavro. A
compiled encoder raises ``KeyError``/``TypeError``/``ValueError``/
``OverflowError``/``struct.error`` for a record it cannot encode; the codec
then lets fastavro decide (encode it or name the error), so the two paths
differ only in speed. tests/schemas/test_avro_compiler.py checks the bytes
are fastavro's for every schema and for edge values.

:func:`fastest_encoder` is what the codecs use: the same encoders compiled
to machine code (``hqstream_native.RecordEncoder``,
native/src/record_encoder.rs: the same schemas, the same bytes) when the
extension is installed, else :func:`compile_encoder`'s.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

#: a cache holding more encoded values than this is cleared (bounded memory)
CACHE_MAX: Final = 65_536
_FIXED: Final = {"double": "d", "float": "f", "boolean": "?"}
_VARINT: Final = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}

Encoder = Callable[[dict[str, Any]], bytes]


def zigzag_varint(n: int, low: int = _VARINT["long"][0], high: int = _VARINT["long"][1]) -> bytes:
    """Avro's encoding of an ``int``/``long``: zig-zag, then base-128 varint."""
    if not low <= n <= high:
        raise OverflowError(f"{n} is out of range for an Avro integer")
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


class _Cache:
    """Encoded bytes of recently seen values; cleared when it outgrows CACHE_MAX."""

    def __init__(self, encode: Callable[[Any], bytes]) -> None:
        self.data: dict[Any, bytes] = {}
        self._encode = encode

    def miss(self, value: Any) -> bytes:
        encoded = self._encode(value)
        if len(self.data) >= CACHE_MAX:
            self.data.clear()
        self.data[value] = encoded
        return encoded


def _long_cache(kind: str) -> _Cache:
    low, high = _VARINT[kind]

    def encode(n: Any) -> bytes:
        if type(n) is not int:  # bool and float are for fastavro to judge
            raise TypeError(f"expected an int, got {type(n).__name__}")
        return zigzag_varint(n, low, high)

    return _Cache(encode)


def _string_cache() -> _Cache:
    def encode(s: Any) -> bytes:
        if type(s) is not str:
            raise TypeError(f"expected a str, got {type(s).__name__}")
        raw = s.encode("utf-8")
        return zigzag_varint(len(raw)) + raw

    return _Cache(encode)


def _type_name(schema: Any) -> str | None:
    """The type of a field schema, or None when the compiler cannot handle it."""
    if isinstance(schema, str):
        return schema if schema in _FIXED or schema in _VARINT or schema == "string" else None
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "enum":
            return "enum"
        if kind == "array" and _type_name(schema.get("items")) in (*_FIXED, *_VARINT, "string"):
            return "array"
        if isinstance(kind, str) and not schema.keys() - {"type", "logicalType"}:
            return _type_name(kind)  # {"type": "long"} and logical types on primitives
    return None


class _Builder:
    """Collects the generated function's lines and the objects it refers to."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {}
        self.lines: list[str] = []
        self.parts: list[str] = []
        self.fixed_fields: list[str] = []
        self.fixed_format = ""

    def bind(self, prefix: str, obj: Any) -> str:
        name = f"{prefix}{len(self.names)}"
        self.names[name] = obj
        return name

    def flush_fixed(self) -> None:
        if not self.fixed_fields:
            return
        packer = self.bind("_pack", struct.Struct("<" + self.fixed_format).pack)
        self.parts.append(f"{packer}({', '.join(self.fixed_fields)})")
        self.fixed_fields, self.fixed_format = [], ""

    def cached(self, cache: _Cache, expr: str) -> str:
        data, miss = self.bind("_c", cache.data), self.bind("_m", cache.miss)
        var = f"_v{len(self.lines)}"
        self.lines.append(f"    {var} = {expr}")
        return f"({data}.get({var}) or {miss}({var}))"

    def field(self, kind: str, schema: Any, expr: str) -> None:
        if kind in _FIXED:
            self.fixed_fields.append(expr)
            self.fixed_format += _FIXED[kind]
            return
        self.flush_fixed()
        if kind in _VARINT:
            self.parts.append(self.cached(_long_cache(kind), expr))
        elif kind == "string":
            self.parts.append(self.cached(_string_cache(), expr))
        elif kind == "enum":
            self.parts.append(f"{self.bind('_enum', _enum_index(schema))}[{expr}]")
        else:  # array
            self.parts.append(f"{self.bind('_array', _array_encoder(schema['items']))}({expr})")


def _enum_index(schema: dict[str, Any]) -> dict[str, bytes]:
    """An enum's symbols -> their encoded index."""
    return {sym: zigzag_varint(i) for i, sym in enumerate(schema["symbols"])}


def _array_encoder(items: Any) -> Callable[[Any], bytes]:
    kind = _type_name(items)
    assert kind is not None
    counts = _long_cache("long")
    if kind in _FIXED:
        code = _FIXED[kind]
        packers: dict[int, Callable[..., bytes]] = {}

        def encode_fixed(values: Any) -> bytes:
            n = len(values)
            if not n:
                return b"\x00"
            pack = packers.get(n)
            if pack is None:
                pack = packers.setdefault(n, struct.Struct(f"<{n}{code}").pack)
            return (counts.data.get(n) or counts.miss(n)) + pack(*values) + b"\x00"

        return encode_fixed
    cache = _string_cache() if kind == "string" else _long_cache(kind)
    data, miss = cache.data, cache.miss

    def encode_items(values: Any) -> bytes:
        n = len(values)
        if not n:
            return b"\x00"
        body = b"".join([data.get(v) or miss(v) for v in values])
        return (counts.data.get(n) or counts.miss(n)) + body + b"\x00"

    return encode_items


def _value_encoder(schema: Any) -> Callable[[Any], bytes] | None:
    """An encoder of one value of ``schema`` (a record, or a type :func:`_type_name`
    knows), None when not compilable."""
    if isinstance(schema, dict) and schema.get("type") == "record":
        return compile_encoder(schema)
    kind = _type_name(schema)
    if kind is None:
        return None
    if kind in _FIXED:
        return struct.Struct("<" + _FIXED[kind]).pack
    if kind == "enum":
        return _enum_index(schema).__getitem__
    if kind == "array":
        return _array_encoder(schema["items"])
    cache = _string_cache() if kind == "string" else _long_cache(kind)
    data, miss = cache.data, cache.miss

    def encode_cached(value: Any) -> bytes:
        return data.get(value) or miss(value)

    return encode_cached


def _nullable_encoder(schema: Any) -> Callable[[Any], bytes] | None:
    """An encoder of a two-branch union with ``null``, None for any other schema
    (or when its other branch is not compilable)."""
    if not (isinstance(schema, list) and len(schema) == 2 and "null" in schema):
        return None
    null_index = schema.index("null")
    encode = _value_encoder(schema[1 - null_index])
    if encode is None:
        return None
    null, some = zigzag_varint(null_index), zigzag_varint(1 - null_index)

    def encode_nullable(value: Any) -> bytes:
        return null if value is None else some + encode(value)

    return encode_nullable


def compile_encoder(schema: dict[str, Any], prefix: bytes = b"") -> Encoder | None:
    """An encoder writing ``prefix`` + the Avro binary body of a ``schema`` record.

    ``schema`` is the record's JSON (as loaded from its ``.avsc``). Returns
    None when a field's type is not one the compiler handles (see the module
    doc); field defaults are not applied (a missing field raises KeyError).
    """
    if schema.get("type") != "record":
        return None
    b = _Builder()
    if prefix:
        b.parts.append(b.bind("_prefix", prefix))
    for f in schema["fields"]:
        kind = _type_name(f["type"])
        expr = f"record[{f['name']!r}]"
        if kind is not None:
            b.field(kind, f["type"], expr)
            continue
        encode = _nullable_encoder(f["type"]) or _value_encoder(f["type"])  # (a nested record)
        if encode is None:
            return None
        b.flush_fixed()
        b.parts.append(f"{b.bind('_value', encode)}({expr})")
    b.flush_fixed()
    body = "\n".join(b.lines)
    source = f"def encode(record):\n{body}\n    return b''.join(({', '.join(b.parts)},))\n"
    namespace: dict[str, Any] = dict(b.names)
    exec(compile(source, f"<avro encoder {schema.get('name')}>", "exec"), namespace)
    encoder: Encoder = namespace["encode"]
    encoder.__doc__ = source
    return encoder


def native_encoder(schema: dict[str, Any], prefix: bytes = b"") -> Encoder | None:
    """:func:`compile_encoder`'s encoder compiled by hqstream_native, None when the
    extension is not installed or does not compile ``schema`` (the same schemas)."""
    from schemas.native import native_module

    module, _ = native_module()
    if module is None:
        return None
    try:
        encoder: Encoder = module.RecordEncoder(schema, prefix)
    except (ValueError, KeyError, TypeError):
        return None
    return encoder


def fastest_encoder(schema: dict[str, Any], prefix: bytes = b"") -> Encoder | None:
    """:func:`native_encoder`, else :func:`compile_encoder` (None: fastavro encodes)."""
    return native_encoder(schema, prefix) or compile_encoder(schema, prefix)
