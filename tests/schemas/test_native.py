"""schemas.native: the compiled Quote paths are used only when they fit this code and schema."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from schemas.native import NATIVE_VERSION, avro_layout, native_quotes
from schemas.serde import SingleObjectCodec, schema_json

ROOT = Path(__file__).resolve().parents[2]
CODEC = SingleObjectCodec("quote")


def test_the_python_side_names_the_crates_version() -> None:
    cargo = tomllib.loads((ROOT / "native" / "Cargo.toml").read_text())
    wheel = tomllib.loads((ROOT / "native" / "pyproject.toml").read_text())
    assert cargo["package"]["version"] == wheel["project"]["version"] == NATIVE_VERSION


def test_the_layout_of_quote_v2() -> None:
    layout = dict(avro_layout(schema_json("quote")))
    assert layout["market"] == "enum:SH,SZ,BJ"
    assert layout["bid_volumes"] == "array:long"
    assert layout["phase"] == "string"


def test_another_build_or_schema_takes_the_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    native = pytest.importorskip("hqstream_native")
    assert native_quotes(CODEC, True, "HQ_X").header == CODEC.header
    assert native_quotes(CODEC, False, "HQ_X").description == "Python (HQ_X=off)"
    monkeypatch.setattr(native, "__version__", "0.0.1")
    assert native_quotes(CODEC, True, "HQ_X").header is None
    monkeypatch.undo()
    monkeypatch.setattr(native, "QUOTE_FIELDS", [*native.QUOTE_FIELDS, ("extra", "long")])
    assert native_quotes(CODEC, True, "HQ_X").header is None
