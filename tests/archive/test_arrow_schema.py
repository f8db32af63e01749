"""Avro -> Arrow: each Avro type maps to its faithful Arrow type, and real records fit."""

from __future__ import annotations

import pyarrow as pa
import pytest

from hqcore.parquet_archive.arrow_schema import (
    OFFSET_COLUMN,
    PARTITION_COLUMN,
    UnsupportedAvroType,
    arrow_type,
    avro_to_arrow,
    dataset_schema,
)
from tests.archive.records import trading_day


@pytest.mark.parametrize(
    ("avro", "arrow"),
    [
        ("long", pa.int64()),
        ("int", pa.int32()),
        ("double", pa.float64()),
        ("float", pa.float32()),
        ("boolean", pa.bool_()),
        ("string", pa.string()),
        ("bytes", pa.binary()),
        ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, pa.string()),
        ({"type": "fixed", "name": "F", "size": 4}, pa.binary(4)),
        (
            {"type": "array", "items": "long"},
            pa.list_(pa.field("item", pa.int64(), nullable=False)),
        ),
        ({"type": "array", "items": "double"}, pa.list_(pa.field("item", pa.float64(), False))),
        ({"type": "map", "values": "int"}, pa.map_(pa.string(), pa.int32())),
    ],
)
def test_avro_types_map_faithfully(avro: object, arrow: pa.DataType) -> None:
    typ, nullable = arrow_type(avro)
    assert typ == arrow
    assert not nullable


def test_null_unions_are_nullable_and_other_unions_refused() -> None:
    assert arrow_type(["null", "long"]) == (pa.int64(), True)
    with pytest.raises(UnsupportedAvroType):
        arrow_type(["long", "string"])


def test_records_and_named_references_become_structs() -> None:
    schema = avro_to_arrow(
        {"type": "record", "name": "R", "fields": [
            {"name": "a", "type": {"type": "record", "name": "In", "fields": [
                {"name": "x", "type": "double"}]}},
            {"name": "b", "type": {"type": "array", "items": "In"}},
        ]}
    )  # fmt: skip
    inner = pa.struct([pa.field("x", pa.float64(), nullable=False)])
    assert schema.field("a").type == inner
    assert schema.field("b").type == pa.list_(pa.field("item", inner, nullable=False))


def test_quote_dataset_schema() -> None:
    schema = dataset_schema("ticks")
    assert schema.field("volume").type == pa.int64()
    assert schema.field("price").type == pa.float64()
    assert schema.field("is_st").type == pa.bool_()
    assert schema.field("market").type == pa.string()
    assert schema.field("bid_volumes").type.value_type == pa.int64()
    assert schema.field("ask_prices").type.value_type == pa.float64()
    assert not schema.field("code").nullable
    doc = b"exchange time, epoch ms (from Asia/Shanghai local time)"
    assert schema.field("exchange_ts").metadata == {b"doc": doc}
    assert schema.names[-2:] == [PARTITION_COLUMN, OFFSET_COLUMN]
    assert dataset_schema("candles").field("ticks").type == pa.int32()
    assert dataset_schema("alerts").field("kind").type == pa.string()


def test_real_records_fit_their_schemas() -> None:
    day = trading_day("2026-11-23", 30)
    for name, rows in (("ticks", day.quotes), ("candles", day.candles), ("alerts", day.alerts)):
        rows = [{**r, PARTITION_COLUMN: 0, OFFSET_COLUMN: i} for i, r in enumerate(rows)]
        table = pa.Table.from_pylist(rows, schema=dataset_schema(name))  # type: ignore[arg-type]
        assert table.to_pylist() == rows
