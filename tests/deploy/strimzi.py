"""Checks for the Strimzi custom resources (kafka.strimzi.io/v1beta2).

Every resource is validated against the vendored Strimzi 0.48.0 CRD schemas
(tests/deploy/crds.py, unknown fields rejected at every depth), plus what a
schema cannot say: the pinned API version, and the ``strimzi.io/cluster``
label of node pools, topics and users naming a Kafka in the same render.
It never contacts a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tests.deploy import crds

API_VERSION = "kafka.strimzi.io/v1beta2"
CLUSTER_LABEL = "strimzi.io/cluster"
KINDS = frozenset({"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"})


def problems(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every problem of the Strimzi resources among ``docs`` ([] = all valid)."""
    docs = list(docs)
    clusters = {d["metadata"]["name"] for d in docs if d.get("kind") == "Kafka"}
    found: list[str] = []
    for doc in docs:
        if str(doc.get("apiVersion", "")).split("/")[0] != "kafka.strimzi.io":
            continue
        meta = doc.get("metadata") or {}
        where = f"{doc.get('kind')}/{meta.get('name')}"
        if doc["apiVersion"] != API_VERSION:
            found.append(f"{where}: apiVersion {doc['apiVersion']!r}, expected {API_VERSION}")
        if doc.get("kind") not in KINDS:
            found.append(f"{where}: kind not covered by this check")
            continue
        found += crds.problems(doc)
        if doc["kind"] != "Kafka":
            cluster = (meta.get("labels") or {}).get(CLUSTER_LABEL)
            if cluster not in clusters:
                found.append(f"{where}: label {CLUSTER_LABEL}={cluster!r} names no Kafka")
    return found
