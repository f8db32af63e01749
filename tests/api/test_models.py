"""The REST models mirror the Avro schemas field by field."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from api.models import Alert, Candle, MarketStats, Quote
from schemas.serde import SchemaName, schema_json


@pytest.mark.parametrize(
    ("name", "model"),
    [("quote", Quote), ("candle", Candle), ("market_stats", MarketStats), ("alert", Alert)],
)
def test_models_match_avro(name: SchemaName, model: type[BaseModel]) -> None:
    avro = [f["name"] for f in schema_json(name)["fields"]]
    assert list(model.model_fields) == avro
