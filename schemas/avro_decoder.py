"""Avro binary decoders compiled for one record schema: the rebuild's decoder.

fastavro's ``schemaless_reader`` interprets the schema for every record
(~80 us for a Quote on this machine, with the file-like object it needs):
reading a day's tail of ``hq.ticks.normalized`` back into Redis would take
minutes. :func:`compile_decoder` is the mirror of
:func:`schemas.avro_compiler.compile_encoder`: one generated function per
flat record schema, with runs of fixed-width fields (``double``, ``float``,
``boolean``) read by one precompiled :class:`struct.Struct` call, varints
and strings read inline, enums mapped by index and arrays of those types
read block by block.

It also reads nested records and two-branch unions with ``null`` (Candle
v2's nullable indicators; the encoder compiles neither); other unions, maps,
fixed and arrays of records make :func:`compile_decoder` return None and
the caller keeps fastavro. The
decoder reads the writer schema it was compiled for; resolving another
version is fastavro's job. It raises ``IndexError``/``KeyError``/
``struct.error``/``UnicodeDecodeError``/``ValueError`` on a payload it cannot read, and the
codec lets fastavro name the error. tests/schemas/test_avro_decoder.py
checks it returns fastavro's records for every schema.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

from schemas.avro_compiler import _FIXED, _VARINT, _type_name

Decoder = Callable[[bytes, int], dict[str, Any]]
"""``decode(payload, start)``: the record whose Avro body starts at ``start``."""

_SIZES: Final = {"d": 8, "f": 4, "?": 1}


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint at ``pos``: ``(value, position after it)``."""
    b = buf[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def read_string(buf: bytes, pos: int) -> tuple[str, int]:
    n, pos = read_long(buf, pos)
    end = pos + n
    if n < 0 or end > len(buf):
        raise ValueError("string runs past the payload")
    return buf[pos:end].decode("utf-8"), end


def _array_reader(items: Any) -> Callable[[bytes, int], tuple[list[Any], int]]:
    """Reads an array of ``items`` block by block (a negative count carries a byte size)."""
    kind = _type_name(items)
    assert kind is not None
    if kind in _FIXED:
        code, size = _FIXED[kind], _SIZES[_FIXED[kind]]
        unpackers: dict[int, Callable[[bytes, int], tuple[Any, ...]]] = {}

        def read_block(buf: bytes, pos: int, n: int, out: list[Any]) -> int:
            unpack = unpackers.get(n)
            if unpack is None:
                unpack = unpackers.setdefault(n, struct.Struct(f"<{n}{code}").unpack_from)
            out += unpack(buf, pos)
            return pos + n * size

    elif kind in _VARINT:

        def read_block(buf: bytes, pos: int, n: int, out: list[Any]) -> int:
            append = out.append
            for _ in range(n):  # one- to three-byte varints (order-book sizes are) inline
                b = buf[pos]
                if b < 0x80:
                    append((b >> 1) ^ -(b & 1))
                    pos += 1
                    continue
                c = buf[pos + 1]
                if c < 0x80:
                    v = (b & 0x7F) | (c << 7)
                    pos += 2
                else:
                    d = buf[pos + 2]
                    if d >= 0x80:
                        value, pos = read_long(buf, pos)
                        append(value)
                        continue
                    v = (b & 0x7F) | ((c & 0x7F) << 7) | (d << 14)
                    pos += 3
                append((v >> 1) ^ -(v & 1))
            return pos

    else:
        read_one: Callable[[bytes, int], tuple[Any, int]]
        if kind == "string":
            read_one = read_string
        else:  # enum
            symbols = dict(enumerate(items["symbols"]))

            def read_one(buf: bytes, pos: int) -> tuple[Any, int]:
                index, pos = read_long(buf, pos)
                return symbols[index], pos

        def read_block(buf: bytes, pos: int, n: int, out: list[Any]) -> int:
            for _ in range(n):
                value, pos = read_one(buf, pos)
                out.append(value)
            return pos

    def read_array(buf: bytes, pos: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        while True:
            n = buf[pos]
            if n < 0x80:  # a block count (or the closing 0) is one byte: inline
                n = (n >> 1) ^ -(n & 1)
                pos += 1
            else:
                n, pos = read_long(buf, pos)
            if n == 0:
                return out, pos
            if n < 0:
                n = -n
                _, pos = read_long(buf, pos)  # the block's size in bytes
            pos = read_block(buf, pos, n, out)

    return read_array


def _inline_long(target: str) -> list[str]:
    """Generated lines reading a varint into ``target``, all inline (no call, no tuple):
    timestamps are six bytes, and a quote has several."""
    return [
        "_b = buf[pos]",
        "pos += 1",
        "if _b < 0x80:",
        f"    {target} = (_b >> 1) ^ -(_b & 1)",
        "else:",
        "    _n = _b & 0x7F",
        "    _s = 7",
        "    while True:",
        "        _b = buf[pos]",
        "        pos += 1",
        "        _n |= (_b & 0x7F) << _s",
        "        if _b < 0x80:",
        "            break",
        "        _s += 7",
        f"    {target} = (_n >> 1) ^ -(_n & 1)",
    ]


def _nullable(schema: Any) -> tuple[int, Any] | None:
    """``(index of null, the other branch)`` of a two-branch union with ``null``, else None."""
    if isinstance(schema, list) and len(schema) == 2 and "null" in schema:
        null = schema.index("null")
        return null, schema[1 - null]
    return None


def _is_record(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "record"


class _Generator:
    """The lines of one generated decoder and the objects they refer to."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {"_string": read_string}
        self.lines: list[str] = []
        self.depth = 0  # nested records: their dicts are r1, r2 ...

    def bind(self, prefix: str, obj: Any) -> str:
        name = f"{prefix}{len(self.names)}"
        self.names[name] = obj
        return name

    def long_into(self, target: str, pad: str) -> None:
        """Lines reading a varint into ``target`` (inline)."""
        self.lines += [f"{pad}{line}" for line in _inline_long(target)]

    def record(self, schema: dict[str, Any], target: str, pad: str) -> bool:
        """Lines filling the dict ``target`` with ``schema``'s fields; False if not compilable.

        Runs of fixed-width fields are read by one precompiled struct call.
        """
        fixed_names: list[str] = []
        fixed_format = ""

        def flush_fixed() -> None:
            nonlocal fixed_names, fixed_format
            if not fixed_names:
                return
            unpacker = struct.Struct("<" + fixed_format)
            targets = ", ".join(f"{target}[{n!r}]" for n in fixed_names)
            unpack = self.bind("_unpack", unpacker.unpack_from)
            self.lines.append(f"{pad}({targets},) = {unpack}(buf, pos)")
            self.lines.append(f"{pad}pos += {unpacker.size}")
            fixed_names, fixed_format = [], ""

        for f in schema["fields"]:
            kind = _type_name(f["type"])
            if kind in _FIXED:
                fixed_names.append(f["name"])
                fixed_format += _FIXED[kind]
                continue
            flush_fixed()
            if not self.value(f["type"], f"{target}[{f['name']!r}]", pad):
                return False
        flush_fixed()
        return True

    def value(self, schema: Any, target: str, pad: str) -> bool:
        """Lines reading one value of ``schema`` into ``target``; False if not compilable."""
        union = _nullable(schema)
        if union is not None:
            null, other = union  # the branch index is one byte: zig-zag 0 or 1
            self.lines.append(f"{pad}_u = buf[pos]")
            self.lines.append(f"{pad}pos += 1")
            self.lines.append(f"{pad}if _u == {2 * null}:")
            self.lines.append(f"{pad}    {target} = None")
            self.lines.append(f"{pad}elif _u == {2 * (1 - null)}:")
            if not self.value(other, target, pad + "    "):
                return False
            self.lines.append(f"{pad}else:")
            self.lines.append(f"{pad}    raise ValueError(f'union branch {{_u}}')")
            return True
        if _is_record(schema):
            self.depth += 1
            inner = f"r{self.depth}"
            self.lines.append(f"{pad}{inner} = {{}}")
            if not self.record(schema, inner, pad):
                return False
            self.lines.append(f"{pad}{target} = {inner}")
            return True
        kind = _type_name(schema)
        if kind is None:
            return False
        if kind in _FIXED:
            unpacker = struct.Struct("<" + _FIXED[kind])
            unpack = self.bind("_unpack", unpacker.unpack_from)
            self.lines.append(f"{pad}({target},) = {unpack}(buf, pos)")
            self.lines.append(f"{pad}pos += {unpacker.size}")
        elif kind in _VARINT:
            self.long_into(target, pad)
        elif kind == "string":
            self.long_into("_n", pad)
            self.lines.append(f"{pad}{target} = buf[pos:pos + _n].decode('utf-8')")
            self.lines.append(f"{pad}pos += _n")
        elif kind == "enum":
            symbols = self.bind("_symbols", dict(enumerate(schema["symbols"])))
            self.long_into("_i", pad)
            self.lines.append(f"{pad}{target} = {symbols}[_i]")
        else:  # array
            reader = self.bind("_array", _array_reader(schema["items"]))
            self.lines.append(f"{pad}{target}, pos = {reader}(buf, pos)")
        return True


def compile_decoder(schema: dict[str, Any]) -> Decoder | None:
    """A decoder of the Avro binary body of a ``schema`` record (as written by it).

    Returns None when a field's type is not one the compiler handles.
    """
    if not _is_record(schema):
        return None
    gen = _Generator()
    if not gen.record(schema, "r", "    "):
        return None
    lines = gen.lines
    lines.append("    if pos != len(buf):")
    lines.append("        raise ValueError(f'{len(buf) - pos} bytes after the record')")
    source = "def decode(buf, pos):\n    r = {}\n" + "\n".join(lines) + "\n    return r\n"
    exec(compile(source, f"<avro decoder {schema.get('name')}>", "exec"), gen.names)
    decoder: Decoder = gen.names["decode"]
    decoder.__doc__ = source
    return decoder
