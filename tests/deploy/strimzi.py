"""Structural checks for Strimzi custom resources (kafka.strimzi.io/v1beta2).

kubernetes-validate ships schemas for built-in kinds only, so the Strimzi
resources get this smaller check: required fields, allowed keys (catches
typos), node pool roles/replicas/storage, topic partitions/replicas/config,
and the ``strimzi.io/cluster`` label pointing at a Kafka in the same render.
It follows the Strimzi 0.48 CRDs; it never contacts a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

API_VERSION = "kafka.strimzi.io/v1beta2"
CLUSTER_LABEL = "strimzi.io/cluster"

KAFKA_SPEC_KEYS = {
    "kafka",
    "entityOperator",
    "clusterCa",
    "clientsCa",
    "cruiseControl",
    "kafkaExporter",
    "maintenanceTimeWindows",
}
KAFKA_KAFKA_KEYS = {
    "version",
    "metadataVersion",
    "image",
    "listeners",
    "config",
    "authorization",
    "rack",
    "brokerRackInitImage",
    "livenessProbe",
    "readinessProbe",
    "jvmOptions",
    "jmxOptions",
    "resources",
    "metricsConfig",
    "logging",
    "template",
    "tieredStorage",
    "quotas",
}
LISTENER_KEYS = {
    "name",
    "port",
    "type",
    "tls",
    "authentication",
    "configuration",
    "networkPolicyPeers",
}
LISTENER_TYPES = {"internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"}
NODE_POOL_SPEC_KEYS = {"replicas", "storage", "roles", "resources", "jvmOptions", "template"}
NODE_ROLES = {"controller", "broker"}
VOLUME_TYPES = {"ephemeral", "persistent-claim"}
TOPIC_SPEC_KEYS = {"partitions", "replicas", "config", "topicName"}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
KAFKA_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


def _extra(found: Iterable[str], allowed: set[str], where: str) -> list[str]:
    return [f"{where}: unknown key {k!r}" for k in sorted(set(found) - allowed)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _storage_problems(storage: Any, where: str) -> list[str]:
    if not isinstance(storage, Mapping):
        return [f"{where}: spec.storage is required"]
    kind = storage.get("type")
    if kind == "jbod":
        volumes = storage.get("volumes")
        if not isinstance(volumes, list) or not volumes:
            return [f"{where}: jbod storage needs volumes"]
        problems = []
        for vol in volumes:
            if not _is_int(vol.get("id")):
                problems.append(f"{where}: jbod volume without integer id")
            problems += _volume_problems(vol, where)
        return problems
    if kind in VOLUME_TYPES:
        return _volume_problems(storage, where)
    return [f"{where}: storage type {kind!r} is not ephemeral|persistent-claim|jbod"]


def _volume_problems(vol: Mapping[str, Any], where: str) -> list[str]:
    if vol.get("type") not in VOLUME_TYPES:
        return [f"{where}: volume type {vol.get('type')!r} invalid"]
    if vol["type"] == "persistent-claim" and not vol.get("size"):
        return [f"{where}: persistent-claim volume needs a size"]
    return []


def _kafka_problems(doc: Mapping[str, Any], where: str) -> list[str]:
    spec = doc.get("spec") or {}
    problems = _extra(spec, KAFKA_SPEC_KEYS, f"{where}.spec")
    kafka = spec.get("kafka")
    if not isinstance(kafka, Mapping):
        return [*problems, f"{where}: spec.kafka is required"]
    problems += _extra(kafka, KAFKA_KAFKA_KEYS, f"{where}.spec.kafka")
    if not isinstance(kafka.get("version"), str):
        problems.append(f"{where}: spec.kafka.version must be a string")
    listeners = kafka.get("listeners")
    if not isinstance(listeners, list) or not listeners:
        problems.append(f"{where}: spec.kafka.listeners is required")
        listeners = []
    for listener in listeners:
        problems += _extra(listener, LISTENER_KEYS, f"{where} listener")
        for key in ("name", "port", "type", "tls"):
            if key not in listener:
                problems.append(f"{where}: listener without {key!r}")
        if listener.get("type") not in LISTENER_TYPES:
            problems.append(f"{where}: listener type {listener.get('type')!r} invalid")
    if not isinstance(kafka.get("config", {}), Mapping):
        problems.append(f"{where}: spec.kafka.config must be a map")
    return problems


def _node_pool_problems(doc: Mapping[str, Any], where: str) -> list[str]:
    spec = doc.get("spec") or {}
    problems = _extra(spec, NODE_POOL_SPEC_KEYS, f"{where}.spec")
    if not _is_int(spec.get("replicas")) or spec["replicas"] < 0:
        problems.append(f"{where}: spec.replicas must be an integer >= 0")
    roles = spec.get("roles")
    if not isinstance(roles, list) or not roles or not set(roles) <= NODE_ROLES:
        problems.append(f"{where}: spec.roles must be a non-empty subset of {sorted(NODE_ROLES)}")
    return problems + _storage_problems(spec.get("storage"), where)


def _topic_problems(doc: Mapping[str, Any], where: str) -> list[str]:
    spec = doc.get("spec") or {}
    problems = _extra(spec, TOPIC_SPEC_KEYS, f"{where}.spec")
    if not _is_int(spec.get("partitions")) or spec["partitions"] < 1:
        problems.append(f"{where}: spec.partitions must be an integer >= 1")
    replicas: Any = spec.get("replicas")
    if not _is_int(replicas) or not 1 <= replicas <= 32767:
        problems.append(f"{where}: spec.replicas must be an integer in 1..32767")
    config = spec.get("config", {})
    if not isinstance(config, Mapping) or not all(
        isinstance(v, str | int | float | bool) for v in config.values()
    ):
        problems.append(f"{where}: spec.config must map names to scalars")
    topic = spec.get("topicName", doc["metadata"]["name"])
    if not isinstance(topic, str) or not KAFKA_TOPIC_NAME.match(topic):
        problems.append(f"{where}: {topic!r} is not a valid Kafka topic name")
    return problems


CHECKS = {
    "Kafka": _kafka_problems,
    "KafkaNodePool": _node_pool_problems,
    "KafkaTopic": _topic_problems,
}


def problems(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every structural problem of the Strimzi resources among ``docs``."""
    docs = list(docs)
    clusters = {d["metadata"]["name"] for d in docs if d.get("kind") == "Kafka"}
    found: list[str] = []
    for doc in docs:
        if str(doc.get("apiVersion", "")).split("/")[0] != "kafka.strimzi.io":
            continue
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        where = f"{doc.get('kind')}/{name}"
        if doc["apiVersion"] != API_VERSION:
            found.append(f"{where}: apiVersion {doc['apiVersion']!r}, expected {API_VERSION}")
        if not isinstance(name, str) or not DNS_SUBDOMAIN.match(name) or len(name) > 253:
            found.append(f"{where}: metadata.name is not a DNS subdomain name")
        if not isinstance(doc.get("spec"), Mapping):
            found.append(f"{where}: spec is required")
            continue
        check = CHECKS.get(str(doc.get("kind")))
        if check is None:
            found.append(f"{where}: kind not covered by this check")
            continue
        found += check(doc, where)
        if doc["kind"] != "Kafka":
            cluster = (meta.get("labels") or {}).get(CLUSTER_LABEL)
            if cluster not in clusters:
                found.append(f"{where}: label {CLUSTER_LABEL}={cluster!r} names no Kafka")
    return found
