"""Avro encoding of hqstream's records, shared by every service.

Two wire formats, chosen by configuration:

* **Avro single-object encoding** (the Avro spec's: ``C3 01`` + the 8-byte
  little-endian CRC-64-AVRO fingerprint of the schema's parsing canonical form
  + the Avro binary body). The default: a consumer decodes with this package
  alone, and the fingerprint names the exact schema version.
* **Confluent wire format** (``00`` + 4-byte schema id + body) through a schema
  registry, when ``HQ_SCHEMA_REGISTRY_URL`` is set; see :func:`make_codec`.

Encoding uses an encoder compiled per schema (:mod:`schemas.avro_compiler`,
byte-identical to fastavro and ~3x faster) with fastavro as the fallback;
decoding the current version uses a decoder compiled the same way
(:mod:`schemas.avro_decoder`, ~6x fastavro), older versions and payloads it
cannot read go to fastavro. Schemas are the ``.avsc`` files under
``schemas/avro/`` loaded by path. This module never talks to Kafka.
"""

from __future__ import annotations

import io
import json
import struct
from functools import cache
from importlib import resources
from typing import Any, Final, Literal, Protocol, cast

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.avro_compiler import fastest_encoder
from schemas.avro_decoder import compile_decoder

SchemaName = Literal["quote", "candle", "market_stats", "alert"]
SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
CONFLUENT_MAGIC: Final = b"\x00"

#: The current version of each schema; older versions stay readable.
CURRENT_VERSION: Final[dict[SchemaName, int]] = {
    "quote": 2,
    "candle": 2,
    "market_stats": 2,
    "alert": 1,
}


class SerdeError(ValueError):
    """A payload could not be encoded or decoded."""


def schema_path(name: SchemaName, version: int | None = None) -> str:
    """Filesystem path of ``schemas/avro/<name>.v<version>.avsc``."""
    version = version or CURRENT_VERSION[name]
    return str(resources.files("schemas") / "avro" / f"{name}.v{version}.avsc")


@cache
def schema_json(name: SchemaName, version: int | None = None) -> dict[str, Any]:
    with open(schema_path(name, version), encoding="utf-8") as fh:
        loaded: dict[str, Any] = json.load(fh)
    return loaded


@cache
def parsed_schema(name: SchemaName, version: int | None = None) -> Any:
    return fastavro.parse_schema(schema_json(name, version))


def schema_fingerprint(schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO fingerprint of the schema's parsing canonical form, 8 bytes LE."""
    canonical = to_parsing_canonical_form(fastavro.parse_schema(schema))
    # fastavro's hex string is already the little-endian byte sequence.
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


class Codec(Protocol):
    """Encodes and decodes one record type."""

    def encode(self, record: dict[str, Any]) -> bytes: ...

    def decode(self, payload: bytes) -> dict[str, Any]: ...


class SingleObjectCodec:
    """Avro single-object encoding with every known version of one schema.

    ``encode`` writes the current version; ``decode`` reads any version it
    knows (by fingerprint) and resolves it to the current one.
    """

    def __init__(self, name: SchemaName) -> None:
        self.name = name
        self._writer = parsed_schema(name)
        self._header = SINGLE_OBJECT_MAGIC + schema_fingerprint(schema_json(name))
        self._compiled = fastest_encoder(schema_json(name), self._header)
        self._current_fp = self._header[2:]
        self._compiled_decoder = compile_decoder(schema_json(name))
        self._readers: dict[bytes, Any] = {}
        for version in range(1, CURRENT_VERSION[name] + 1):
            fp = schema_fingerprint(schema_json(name, version))
            self._readers[fp] = parsed_schema(name, version)

    @property
    def header(self) -> bytes:
        """What every payload starts with: the magic bytes and the schema's fingerprint."""
        return self._header

    def encode(self, record: dict[str, Any]) -> bytes:
        if self._compiled is not None:
            try:
                return self._compiled(record)
            except (KeyError, TypeError, ValueError, OverflowError, struct.error):
                pass  # fastavro encodes it (defaults, lenient types) or names the error
        buf = io.BytesIO()
        buf.write(self._header)
        try:
            fastavro.schemaless_writer(buf, self._writer, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise SerdeError(f"cannot encode {self.name}: {exc}") from exc
        return buf.getvalue()

    def decode(self, payload: bytes) -> dict[str, Any]:
        if len(payload) < 10 or payload[:2] != SINGLE_OBJECT_MAGIC:
            raise SerdeError(f"{self.name}: not Avro single-object encoded")
        fp = payload[2:10]
        if fp == self._current_fp and self._compiled_decoder is not None:
            try:
                return self._compiled_decoder(payload, 10)
            except (IndexError, KeyError, ValueError, struct.error):
                pass  # fastavro decodes it or names the error
        writer = self._readers.get(fp)
        if writer is None:
            raise SerdeError(f"{self.name}: unknown schema fingerprint {payload[2:10].hex()}")
        try:
            record = cast(
                dict[str, Any],
                fastavro.schemaless_reader(io.BytesIO(payload[10:]), writer, self._writer),
            )
        except (ValueError, TypeError, EOFError, IndexError) as exc:
            raise SerdeError(f"cannot decode {self.name}: {exc}") from exc
        return record


class RegistryCodec:
    """Confluent wire format through a schema registry (confluent-kafka's client).

    Accepts ``mock://`` URLs (confluent-kafka's in-process registry) for tests.
    """

    def __init__(self, name: SchemaName, registry_url: str, topic: str) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        self.name = name
        client = SchemaRegistryClient.new_client({"url": registry_url})
        schema_str = json.dumps(schema_json(name))
        self._ser = AvroSerializer(client, schema_str, conf={"auto.register.schemas": True})
        self._de = AvroDeserializer(client)
        self._ctx = SerializationContext(topic, MessageField.VALUE)

    def encode(self, record: dict[str, Any]) -> bytes:
        try:
            out = self._ser(record, self._ctx)
        except Exception as exc:  # the serializer raises several unrelated types
            raise SerdeError(f"cannot encode {self.name}: {exc}") from exc
        assert out is not None
        return bytes(out)

    def decode(self, payload: bytes) -> dict[str, Any]:
        if not payload[:1] == CONFLUENT_MAGIC:
            raise SerdeError(f"{self.name}: not in the Confluent wire format")
        try:
            record = self._de(payload, self._ctx)
        except Exception as exc:
            raise SerdeError(f"cannot decode {self.name}: {exc}") from exc
        if not isinstance(record, dict):
            raise SerdeError(f"{self.name}: decoded to {type(record).__name__}")
        return record


def make_codec(name: SchemaName, registry_url: str | None = None, topic: str = "") -> Codec:
    """The codec for ``name``: registry-backed when ``registry_url`` is set."""
    if registry_url:
        return RegistryCodec(name, registry_url, topic)
    return SingleObjectCodec(name)
