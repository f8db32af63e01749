"""Arrow schemas derived from the Avro ``.avsc`` schemas, one per dataset.

The mapping is faithful: ``long`` -> int64, ``int`` -> int32, ``double`` ->
float64, ``float`` -> float32, ``boolean`` -> bool, ``string`` and ``enum`` ->
string (Parquet dictionary-encodes them), ``bytes`` -> binary, ``fixed`` ->
fixed-size binary, ``array`` -> list, ``map`` -> map<string, ...>, ``record``
-> struct, ``["null", T]`` -> nullable T. Non-null Avro fields are non-nullable
columns; each field's ``doc`` is kept as Arrow field metadata. Two provenance
columns follow the schema's fields: the Kafka partition and offset the row was
read from (for exactly-once checks and a stable replay order).
This module never reads Kafka or files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import pyarrow as pa

from hqcore.parquet_archive.errors import ArchiveError
from schemas import topics
from schemas.serde import SchemaName, schema_json

Dataset = Literal["ticks", "candles", "alerts"]
DATASETS: Final[tuple[Dataset, ...]] = ("ticks", "candles", "alerts")

PARTITION_COLUMN: Final = "_kafka_partition"
OFFSET_COLUMN: Final = "_kafka_offset"

_PRIMITIVES: Final[dict[str, pa.DataType]] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """What one dataset archives: its topic, Avro schema and time column."""

    name: Dataset
    topic: str
    schema: SchemaName
    time_column: str
    time_offset_ms: int = 0  # added to the time column to get the publish time on replay


SPECS: Final[dict[Dataset, DatasetSpec]] = {
    "ticks": DatasetSpec("ticks", topics.NORMALIZED, "quote", "exchange_ts"),
    # a candle is published when its minute is over: its start + 60 s
    "candles": DatasetSpec("candles", topics.CANDLES_1M, "candle", "minute_ts", 60_000),
    "alerts": DatasetSpec("alerts", topics.ALERTS, "alert", "exchange_ts"),
}


class UnsupportedAvroType(ArchiveError):
    """An Avro type with no Arrow counterpart in this mapping."""


def arrow_type(avro: Any, named: dict[str, pa.DataType] | None = None) -> tuple[pa.DataType, bool]:
    """The Arrow type of an Avro type, and whether it is nullable."""
    named = {} if named is None else named
    if isinstance(avro, str):
        if avro in _PRIMITIVES:
            return _PRIMITIVES[avro], avro == "null"
        if avro in named:
            return named[avro], False
        raise UnsupportedAvroType(f"unknown named type {avro!r}")
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1:
            raise UnsupportedAvroType(f"only [null, T] unions map to Arrow: {avro!r}")
        inner, _ = arrow_type(branches[0], named)
        return inner, "null" in avro
    kind = avro["type"]
    if kind in _PRIMITIVES and not avro.get("logicalType"):
        return _PRIMITIVES[kind], False
    if kind == "enum":
        named[avro["name"]] = pa.string()
        return pa.string(), False
    if kind == "fixed":
        named[avro["name"]] = pa.binary(avro["size"])
        return named[avro["name"]], False
    if kind == "array":
        item, item_null = arrow_type(avro["items"], named)
        return pa.list_(pa.field("item", item, nullable=item_null)), False
    if kind == "map":
        value, _ = arrow_type(avro["values"], named)
        return pa.map_(pa.string(), value), False
    if kind == "record":
        struct = pa.struct(record_fields(avro, named))
        named[avro["name"]] = struct
        return struct, False
    raise UnsupportedAvroType(f"no Arrow type for Avro {avro!r}")


def record_fields(record: dict[str, Any], named: dict[str, pa.DataType]) -> list[pa.Field]:
    fields = []
    for f in record["fields"]:
        typ, nullable = arrow_type(f["type"], named)
        meta = {"doc": f["doc"]} if f.get("doc") else None
        fields.append(pa.field(f["name"], typ, nullable=nullable, metadata=meta))
    return fields


def avro_to_arrow(record: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of an Avro record schema (without provenance columns)."""
    return pa.schema(record_fields(record, {}))


def dataset_schema(name: Dataset) -> pa.Schema:
    """The archived schema of a dataset: the Avro fields, then partition and offset."""
    spec = SPECS[name]
    base = avro_to_arrow(schema_json(spec.schema))
    base = base.append(pa.field(PARTITION_COLUMN, pa.int32(), nullable=False))
    base = base.append(pa.field(OFFSET_COLUMN, pa.int64(), nullable=False))
    return base.with_metadata({"hqstream.dataset": name, "hqstream.avro": spec.schema})
