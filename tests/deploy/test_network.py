"""NetworkPolicies: only what must talk, talks (evaluated on the rendered overlays)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import NAMESPACE, Rendered
from tests.deploy.netpol import Pod, Policies

# The labels Strimzi 0.48 puts on its pods (operator-common Labels.java:
# strimzi.io/cluster, kind, name, component-type, pool-name, broker-role,
# controller-role).
KAFKA = Pod(
    "kafka-broker",
    NAMESPACE,
    {
        "strimzi.io/cluster": "hq-kafka",
        "strimzi.io/kind": "Kafka",
        "strimzi.io/name": "hq-kafka-kafka",
        "strimzi.io/component-type": "kafka",
        "strimzi.io/pool-name": "broker",
        "strimzi.io/broker-role": "true",
        "strimzi.io/controller-role": "false",
    },
)
CONTROLLER = Pod(
    "kafka-controller",
    NAMESPACE,
    {
        "strimzi.io/cluster": "hq-kafka",
        "strimzi.io/kind": "Kafka",
        "strimzi.io/name": "hq-kafka-kafka",
        "strimzi.io/component-type": "kafka",
        "strimzi.io/pool-name": "controller",
        "strimzi.io/broker-role": "false",
        "strimzi.io/controller-role": "true",
    },
)
EXPORTER = Pod(
    "kafka-exporter",
    NAMESPACE,
    {
        "strimzi.io/cluster": "hq-kafka",
        "strimzi.io/kind": "Kafka",
        "strimzi.io/name": "hq-kafka-kafka-exporter",
        "strimzi.io/component-type": "kafka-exporter",
    },
)
KAFKA_PORT = 9093  # the only client listener: TLS + SCRAM-SHA-512
GATEWAY_PROXY = Pod("gateway-proxy", "gateway-system", {"app.kubernetes.io/name": "envoy"})
INGRESS_NGINX = Pod("ingress-nginx", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
PROMETHEUS = Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
KUBE_DNS = Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
STRANGER = Pod("stranger", "default", {"app": "stranger"})
INTERNET = Pod("internet", None, ip="8.8.8.8")
VENDOR = Pod("vendor", None, ip="203.0.113.10")  # overlays/prod placeholder address
VENDOR_B = Pod("vendor-b", None, ip="203.0.113.20")  # components/second-feed placeholder


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
            # Strimzi selects its pods by strimziSelectorLabels: cluster, name, kind.
            "podSelector": {
                "matchLabels": {
                    "strimzi.io/cluster": "hq-kafka",
                    "strimzi.io/kind": "Kafka",
                    "strimzi.io/name": "hq-kafka-kafka",
                }
            },
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def policies(rendered: Rendered) -> Policies:
    return Policies([*rendered.docs, strimzi_listener_policy(rendered)])


def pods(rendered: Rendered) -> dict[str, Pod]:
    """Pods by app name label (the first workload with it) and by workload name
    (feed b's receiver, ``hqstream-producer-b``, carries the receiver's name label)."""
    found = {}
    for workload, template in rendered.pod_templates():
        labels = template["metadata"]["labels"]
        pod = Pod(workload["metadata"]["name"], workload["metadata"]["namespace"], labels)
        found.setdefault(labels["app.kubernetes.io/name"], pod)
        found[workload["metadata"]["name"]] = pod
    return found


def test_the_namespace_denies_ingress_by_default(overlay: Rendered) -> None:
    deny = overlay.get("NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {}
    assert deny["policyTypes"] == ["Ingress"]
    assert not deny.get("ingress")
    net = policies(overlay)
    unknown = Pod("new-pod", NAMESPACE, {"app": "new"})
    assert not net.allowed(STRANGER, unknown, 80)
    assert not net.allowed(STRANGER, KAFKA, KAFKA_PORT)  # only the listener's networkPolicyPeers


def test_gateway_is_reached_from_the_gateway_proxies_and_prometheus_only(
    overlay: Rendered,
) -> None:
    net, p = policies(overlay), pods(overlay)
    gateway = p["hqstream-gateway"]
    assert net.allowed(GATEWAY_PROXY, gateway, 8000)
    assert not net.allowed(INGRESS_NGINX, gateway, 8000)
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
    assert not net.allowed(redis, KAFKA, KAFKA_PORT)
    assert not net.allowed(redis, INTERNET, 443)


@pytest.mark.parametrize(
    "name", ["hqstream-producer", "hqstream-streams", "hqstream-gateway", "hqstream-archive"]
)
def test_components_reach_kafka_and_dns(overlay: Rendered, name: str) -> None:
    net, p = policies(overlay), pods(overlay)
    assert net.allowed(p[name], KAFKA, KAFKA_PORT)
    assert net.allowed(p[name], KUBE_DNS, 53)
    assert not net.allowed(p[name], INTERNET, 443)
    assert not net.allowed(p[name], CONTROLLER, KAFKA_PORT), "brokers only"
    assert not net.allowed(p[name], EXPORTER, KAFKA_PORT)


def test_every_client_listener_authenticates_and_admits_only_hqstream(overlay: Rendered) -> None:
    kafka = overlay.get("Kafka", "hq-kafka")["spec"]["kafka"]
    assert kafka["authorization"]["type"] == "simple"
    assert [listener["port"] for listener in kafka["listeners"]] == [KAFKA_PORT]
    for listener in kafka["listeners"]:
        assert listener["tls"] is True, listener["name"]
        assert listener["authentication"]["type"] == "scram-sha-512", listener["name"]
        assert listener["networkPolicyPeers"], listener["name"]
    net = policies(overlay)
    for other in (STRANGER, INGRESS_NGINX, PROMETHEUS):
        assert not net.allowed(other, KAFKA, KAFKA_PORT), other.name


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
        if "hqstream-producer-b" in p:
            assert net.allowed(p["hqstream-producer-b"], VENDOR_B, 7070)
            assert not net.allowed(p["hqstream-streams"], VENDOR_B, 7070)
        assert not net.allowed(p["hqstream-streams"], VENDOR, 7070)
        assert not net.allowed(p["hqstream-gateway"], VENDOR, 7070)
        assert not net.allowed(p["hqstream-producer"], INTERNET, 7070)


def test_prometheus_scrapes_every_metrics_endpoint(overlay: Rendered) -> None:
    from tests.deploy.test_invariants import _scraped_ports

    net, p = policies(overlay), pods(overlay)
    by_workload = {pod.name: pod for pod in p.values()}
    for workload, ports in _scraped_ports(overlay).items():
        for port in ports:
            assert net.allowed(PROMETHEUS, by_workload[workload], port), (workload, port)
            assert not net.allowed(STRANGER, by_workload[workload], port), (workload, port)
    assert net.allowed(PROMETHEUS, EXPORTER, 9404)
    assert not net.allowed(STRANGER, EXPORTER, 9404)


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
    # the gateway reads it for replay_day (prod: HQ_GATEWAY_ARCHIVE_ROOT is the bucket)
    assert net.allowed(p["hqstream-gateway"], store, 443) == overlay.name.endswith("prod")
    assert not net.allowed(p["hqstream-streams"], store, 443)
    assert not net.allowed(archive, p["redis"], 6379)
