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

Same coverage as the encoder (no unions, maps, fixed or nested records:
:func:`compile_decoder` returns None and the caller keeps fastavro). The
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
            for _ in range(n):
                b = buf[pos]
                if b < 0x80:  # a one-byte varint (order-book sizes often are): inline
                    append((b >> 1) ^ -(b & 1))
                    pos += 1
                else:
                    value, pos = read_long(buf, pos)
                    append(value)
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
            n, pos = read_long(buf, pos)
            if n == 0:
                return out, pos
            if n < 0:
                n = -n
                _, pos = read_long(buf, pos)  # the block's size in bytes
            pos = read_block(buf, pos, n, out)

    return read_array


def _inline_long(target: str) -> list[str]:
    """Generated lines reading a varint into ``target``: one byte inline, else read_long."""
    return [
        "    _b = buf[pos]",
        "    if _b < 0x80:",
        f"        {target} = (_b >> 1) ^ -(_b & 1)",
        "        pos += 1",
        "    else:",
        f"        {target}, pos = _long(buf, pos)",
    ]


def compile_decoder(schema: dict[str, Any]) -> Decoder | None:
    """A decoder of the Avro binary body of a ``schema`` record (as written by it).

    Returns None when a field's type is not one the compiler handles.
    """
    if schema.get("type") != "record":
        return None
    names: dict[str, Any] = {"_long": read_long, "_string": read_string}
    lines: list[str] = []
    fixed_names: list[str] = []
    fixed_format = ""

    def bind(prefix: str, obj: Any) -> str:
        name = f"{prefix}{len(names)}"
        names[name] = obj
        return name

    def flush_fixed() -> None:
        nonlocal fixed_names, fixed_format
        if not fixed_names:
            return
        unpacker = struct.Struct("<" + fixed_format)
        targets = ", ".join(f"r[{n!r}]" for n in fixed_names)
        lines.append(f"    ({targets},) = {bind('_unpack', unpacker.unpack_from)}(buf, pos)")
        lines.append(f"    pos += {unpacker.size}")
        fixed_names, fixed_format = [], ""

    for f in schema["fields"]:
        kind = _type_name(f["type"])
        if kind is None:
            return None
        name = f["name"]
        if kind in _FIXED:
            fixed_names.append(name)
            fixed_format += _FIXED[kind]
            continue
        flush_fixed()
        if kind in _VARINT:
            lines += _inline_long(f"r[{name!r}]")
        elif kind == "string":
            lines += _inline_long("_n")
            lines.append(f"    r[{name!r}] = buf[pos:pos + _n].decode('utf-8')")
            lines.append("    pos += _n")
        elif kind == "enum":
            symbols = bind("_symbols", dict(enumerate(f["type"]["symbols"])))
            lines += _inline_long("_i")
            lines.append(f"    r[{name!r}] = {symbols}[_i]")
        else:  # array
            reader = bind("_array", _array_reader(f["type"]["items"]))
            lines.append(f"    r[{name!r}], pos = {reader}(buf, pos)")
    flush_fixed()
    lines.append("    if pos != len(buf):")
    lines.append("        raise ValueError(f'{len(buf) - pos} bytes after the record')")
    source = "def decode(buf, pos):\n    r = {}\n" + "\n".join(lines) + "\n    return r\n"
    exec(compile(source, f"<avro decoder {schema.get('name')}>", "exec"), names)
    decoder: Decoder = names["decode"]
    decoder.__doc__ = source
    return decoder
