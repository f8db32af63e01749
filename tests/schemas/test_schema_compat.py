"""Every schema version on disk is BACKWARD compatible with the one before it.

BACKWARD: a consumer on the new schema (reader) reads data written with the
previous one (writer). Checked with the ``avro`` library's checker, which is
independent of fastavro (used by the serde); the negative controls prove the
check can fail.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import parse

from schemas.serde import CURRENT_VERSION, schema_json, schema_path

AVRO_DIR = Path(schema_path("quote")).parent
VERSIONED = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.avsc$")


def versions_on_disk() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for path in AVRO_DIR.glob("*.avsc"):
        match = VERSIONED.match(path.name)
        assert match, f"{path.name} is not named <name>.v<N>.avsc"
        found.setdefault(match["name"], []).append(int(match["version"]))
    return {name: sorted(vs) for name, vs in found.items()}


def backward_compatible(reader: dict[str, Any], writer: dict[str, Any]) -> tuple[bool, str]:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(parse(json.dumps(reader)), parse(json.dumps(writer)))
    ok = result.compatibility is SchemaCompatibilityType.compatible
    return ok, "; ".join(str(m) for m in result.messages)


def test_versions_are_contiguous_and_current() -> None:
    on_disk = versions_on_disk()
    assert set(on_disk) == set(CURRENT_VERSION)
    for name, versions in on_disk.items():
        assert versions == list(range(1, len(versions) + 1)), name
        assert CURRENT_VERSION[name] == versions[-1], f"{name}: CURRENT_VERSION is not the newest"  # type: ignore[index]


def test_every_version_is_backward_compatible_with_the_previous() -> None:
    checked = []
    for name, versions in versions_on_disk().items():
        for version in versions[1:]:
            reader = schema_json(name, version)  # type: ignore[arg-type]
            writer = schema_json(name, version - 1)  # type: ignore[arg-type]
            ok, why = backward_compatible(reader, writer)
            assert ok, f"{name} v{version} cannot read v{version - 1}: {why}"
            checked.append((name, version))
    # Today every schema is at v1, so nothing is checked yet; the controls
    # below run the same check on real schemas so it is known to work.
    assert len(checked) == sum(len(v) - 1 for v in versions_on_disk().values())


@pytest.mark.parametrize("name", sorted(CURRENT_VERSION))
def test_a_schema_is_compatible_with_itself(name: str) -> None:
    assert backward_compatible(schema_json(name), schema_json(name)) == (True, "")  # type: ignore[arg-type]


def _with_field(field: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(schema_json("quote"))
    schema["fields"].append(field)
    return schema


def test_negative_control_new_field_without_default() -> None:
    v2 = _with_field({"name": "turnover_rate", "type": "double"})
    ok, why = backward_compatible(v2, schema_json("quote"))
    assert not ok
    assert "turnover_rate" in why


def test_positive_control_new_field_with_default() -> None:
    v2 = _with_field({"name": "turnover_rate", "type": "double", "default": 0.0})
    assert backward_compatible(v2, schema_json("quote"))[0]


def test_negative_control_dropped_enum_symbol() -> None:
    v2 = copy.deepcopy(schema_json("quote"))
    board = next(f for f in v2["fields"] if f["name"] == "board")
    board["type"]["symbols"] = ["MAIN", "STAR", "CHINEXT"]  # BJ written by v1 is unreadable
    assert not backward_compatible(v2, schema_json("quote"))[0]


def test_negative_control_narrowed_type() -> None:
    v2 = copy.deepcopy(schema_json("quote"))
    volume = next(f for f in v2["fields"] if f["name"] == "volume")
    volume["type"] = "int"  # long -> int cannot be read
    assert not backward_compatible(v2, schema_json("quote"))[0]


def test_alert_kinds_are_the_avro_enum() -> None:
    from typing import get_args

    from schemas.records import ALERT_KINDS, AlertKind
    from schemas.serde import schema_json

    (kind,) = [f for f in schema_json("alert")["fields"] if f["name"] == "kind"]
    assert list(ALERT_KINDS) == list(get_args(AlertKind)) == kind["type"]["symbols"]
