"""NetworkPolicies: only what must talk, talks (evaluated on the rendered overlays)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import NAMESPACE, Rendered
from tests.deploy.netpol import Pod, Policies

KAFKA = Pod(
    "kafka-broker",
    NAMESPACE,
    {
        "strimzi.io/cluster": "hq-kafka",
        "strimzi.io/kind": "Kafka",
        "strimzi.io/name": "hq-kafka-kafka",
    },
)
EXPORTER = Pod(
    "kafka-exporter",
    NAMESPACE,
    {"strimzi.io/cluster": "hq-kafka", "strimzi.io/name": "hq-kafka-kafka-exporter"},
)
INGRESS_NGINX = Pod("ingress-nginx", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
PROMETHEUS = Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
KUBE_DNS = Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
STRANGER = Pod("stranger", "default", {"app": "stranger"})
INTERNET = Pod("internet", None, ip="8.8.8.8")
VENDOR = Pod("vendor", None, ip="203.0.113.10")  # overlays/prod placeholder address


def strimzi_listener_policy(rendered: Rendered) -> dict[str, Any]:
    """The ingress policy Strimzi generates for the brokers' listeners.

    One rule per listener port, from its ``networkPolicyPeers`` (everyone when
    unset), which is how the operator admits clients despite our default deny.
    """
    kafka = rendered.get("Kafka", "hq-kafka")
    rules = [
        {"from": listener.get("networkPolicyPeers") or [], "ports": [{"port": listener["port"]}]}
        for listener in kafka["spec"]["kafka"]["listeners"]
    ]
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": "hq-kafka-network-policy-kafka", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"strimzi.io/name": "hq-kafka-kafka"}},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def policies(rendered: Rendered) -> Policies:
    return Policies([*rendered.docs, strimzi_listener_policy(rendered)])


def pods(rendered: Rendered) -> dict[str, Pod]:
    found = {}
    for workload, template in rendered.pod_templates():
        labels = template["metadata"]["labels"]
        found[labels["app.kubernetes.io/name"]] = Pod(
            workload["metadata"]["name"], workload["metadata"]["namespace"], labels
        )
    return found


def test_the_namespace_denies_ingress_by_default(overlay: Rendered) -> None:
    deny = overlay.get("NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {}
    assert deny["policyTypes"] == ["Ingress"]
    assert not deny.get("ingress")
    net = policies(overlay)
    unknown = Pod("new-pod", NAMESPACE, {"app": "new"})
    assert not net.allowed(STRANGER, unknown, 80)
    assert not net.allowed(STRANGER, KAFKA, 9092)  # only the listener's networkPolicyPeers


def test_gateway_is_reached_from_the_ingress_controller_and_prometheus_only(
    overlay: Rendered,
) -> None:
    net, p = policies(overlay), pods(overlay)
    gateway = p["hqstream-gateway"]
    assert net.allowed(INGRESS_NGINX, gateway, 8000)
    assert net.allowed(PROMETHEUS, gateway, 8000)
    assert not net.allowed(STRANGER, gateway, 8000)
    assert not net.allowed(p["hqstream-producer"], gateway, 8000)


def test_redis_only_from_streams_and_gateway(overlay: Rendered) -> None:
    net, p = policies(overlay), pods(overlay)
    redis = p["redis"]
    assert net.allowed(p["hqstream-streams"], redis, 6379)
    assert net.allowed(p["hqstream-gateway"], redis, 6379)
    others = [p["hqstream-producer"], INGRESS_NGINX, PROMETHEUS, STRANGER]
    if "hqstream-simulator" in p:
        others.append(p["hqstream-simulator"])
    for other in others:
        assert not net.allowed(other, redis, 6379), other.name
    assert not net.allowed(redis, KAFKA, 9092)
    assert not net.allowed(redis, INTERNET, 443)


@pytest.mark.parametrize(
    "name", ["hqstream-producer", "hqstream-streams", "hqstream-gateway", "hqstream-archive"]
)
def test_components_reach_kafka_and_dns(overlay: Rendered, name: str) -> None:
    net, p = policies(overlay), pods(overlay)
    assert net.allowed(p[name], KAFKA, 9092)
    assert net.allowed(p[name], KUBE_DNS, 53)
    assert not net.allowed(p[name], INTERNET, 443)


def test_only_streams_and_gateway_egress_to_redis(overlay: Rendered) -> None:
    net, p = policies(overlay), pods(overlay)
    assert not net.allowed(p["hqstream-producer"], p["redis"], 6379)


def test_the_feed_is_reached_by_the_producer_only(overlay: Rendered) -> None:
    net, p = policies(overlay), pods(overlay)
    if overlay.name.endswith("dev"):
        feed = p["hqstream-simulator"]
        assert net.allowed(p["hqstream-producer"], feed, 7070)
        assert not net.allowed(p["hqstream-gateway"], feed, 7070)
        assert not net.allowed(STRANGER, feed, 7070)
        assert not net.allowed(feed, INTERNET, 443)
    else:
        assert net.allowed(p["hqstream-producer"], VENDOR, 7070)
        assert not net.allowed(p["hqstream-streams"], VENDOR, 7070)
        assert not net.allowed(p["hqstream-gateway"], VENDOR, 7070)
        assert not net.allowed(p["hqstream-producer"], INTERNET, 7070)


def test_prometheus_scrapes_every_metrics_endpoint(overlay: Rendered) -> None:
    net, p = policies(overlay), pods(overlay)
    for _workload, template in overlay.pod_templates():
        annotations = template["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            pod = p[template["metadata"]["labels"]["app.kubernetes.io/name"]]
            assert net.allowed(PROMETHEUS, pod, int(annotations["prometheus.io/port"])), pod.name
            assert not net.allowed(STRANGER, pod, int(annotations["prometheus.io/port"]))
    assert net.allowed(PROMETHEUS, EXPORTER, 9404)


def test_gateway_reads_producer_metrics(overlay: Rendered) -> None:
    net, p = policies(overlay), pods(overlay)
    assert net.allowed(p["hqstream-gateway"], p["hqstream-producer"], 9101)
    assert not net.allowed(p["hqstream-streams"], p["hqstream-producer"], 9101)


def test_every_hqstream_pod_has_restricted_egress(overlay: Rendered) -> None:
    net = policies(overlay)
    for name, pod in pods(overlay).items():
        assert not net.allowed(pod, STRANGER, 80), name


def test_the_archive_reaches_object_storage_in_prod_only(overlay: Rendered) -> None:
    net, p = policies(overlay), pods(overlay)
    store = Pod("object-store", None, ip="198.51.100.20")  # overlays/prod placeholder address
    archive = p["hqstream-archive"]
    assert net.allowed(archive, store, 443) == overlay.name.endswith("prod")
    assert not net.allowed(p["hqstream-streams"], store, 443)
    assert not net.allowed(archive, p["redis"], 6379)
