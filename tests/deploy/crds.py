"""Validate custom resources against vendored CustomResourceDefinition schemas.

kubernetes-validate knows the built-in kinds only. The CRDs of the operators
we depend on are vendored under ``deploy/vendor/`` (see each README for the
release they come from); this module turns each CRD version's
``openAPIV3Schema`` into a JSON Schema that, like ``kubectl apply
--validate=strict``, rejects unknown fields: every object schema that lists
``properties`` and neither ``additionalProperties`` nor
``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``.
It never contacts a cluster.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "deploy" / "vendor"
STRIMZI_CRDS = VENDOR / "strimzi-0.48.0"

Schema = dict[str, Any]


def _strict(node: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which unknown object keys are errors."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, Mapping):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def schemas() -> dict[tuple[str, str], Schema]:
    """(apiVersion, kind) -> strict JSON schema, for every vendored CRD version."""
    found: dict[tuple[str, str], Schema] = {}
    for path in sorted(VENDOR.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if not schema or not version.get("served", True):
                    continue
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                strict = _strict(schema)
                # metadata is validated by the API server, not by the CRD: allow it.
                strict.setdefault("properties", {})["metadata"] = {"type": "object"}
                strict["properties"]["apiVersion"] = {"type": "string"}
                strict["properties"]["kind"] = {"type": "string"}
                found[key] = strict
    return found


def groups() -> set[str]:
    """API groups with a vendored CRD."""
    return {api.split("/")[0] for api, _kind in schemas()}


def problems(doc: Mapping[str, Any]) -> list[str]:
    """Schema violations of one custom resource ([] = valid)."""
    where = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    schema = schemas().get((str(doc.get("apiVersion")), str(doc.get("kind"))))
    if schema is None:
        return [f"{where}: no vendored CRD for {doc.get('apiVersion')} {doc.get('kind')}"]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{where}: {'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]


def all_problems(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Schema violations of every resource in ``docs`` whose group has a vendored CRD."""
    known = groups()
    return [
        p
        for doc in docs
        if str(doc.get("apiVersion", "")).split("/")[0] in known
        for p in problems(doc)
    ]
