"""What issue 15 asked of production: a hard producer singleton, Kafka users
with exactly their ACLs, Redis HA with ACL users, Pod Security "restricted"."""

from __future__ import annotations

import re
from typing import Any

import pytest

from schemas import topics
from tests.deploy.manifests import K8S_DIR, Rendered
from tests.deploy.netpol import Pod
from tests.deploy.test_network import STRANGER, pods, policies

RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _quantity_bytes(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "gb": 2**30, "mb": 2**20}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", q)
    assert m, q
    return float(m.group(1)) * units.get(m.group(2), 1)


def test_namespace_enforces_pod_security_restricted(overlay: Rendered) -> None:
    labels = overlay.get("Namespace", "hqstream")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_pod_meets_pod_security_restricted(overlay: Rendered) -> None:
    problems = []
    for workload, template in overlay.pod_templates():
        spec, where = template["spec"], workload["metadata"]["name"]
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            if not kinds <= RESTRICTED_VOLUMES:
                problems.append(f"{where}: volume {volume['name']} {kinds}")
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problems.append(f"{where}: {key}")
        for c in spec.get("initContainers", []) + spec["containers"]:
            if any("hostPort" in p for p in c.get("ports", [])):
                problems.append(f"{where}/{c['name']}: hostPort")
    assert not problems, problems


def test_producer_is_a_lease_holding_guaranteed_singleton(overlay: Rendered) -> None:
    deployment = overlay.get("Deployment", "hqstream-producer")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "hqstream-producer"
    assert spec["automountServiceAccountToken"] is False, "the projected token only"
    projected = next(v for v in spec["volumes"] if "projected" in v)["projected"]["sources"]
    assert any("serviceAccountToken" in s for s in projected)
    priority = overlay.get("PriorityClass", spec["priorityClassName"])
    assert priority["value"] >= 1_000_000
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["HQ_LEASE_NAME"]["value"] == "hqstream-feed"
    assert env["HQ_LEASE_IDENTITY"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    assert requests == limits, "Guaranteed QoS"
    role = overlay.get("Role", "hqstream-producer-lease")
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["hqstream-feed"],
            "verbs": ["get", "update"],
        }
    ]
    unnamed = [r for r in role["rules"] if not r.get("resourceNames")]
    assert all(r["verbs"] == ["create"] for r in unnamed)
    binding = overlay.get("RoleBinding", "hqstream-producer-lease")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "hqstream-producer", "namespace": "hqstream"}
    ]
    if overlay.name.endswith("prod"):
        claim = overlay.get("PersistentVolumeClaim", "hqstream-producer-journal")
        assert claim["spec"]["accessModes"] == ["ReadWriteOncePod"]


#: every timeframe's bars: the workers write them, the gateway reads them (the archive: 1m)
CANDLE_TOPICS = tuple(topics.CANDLES.values())
EXPECTED_ACLS = {
    # Read: after a broker outage, what the broker wrote without acknowledging it
    "hq-producer": {
        ("topic", "hq.ticks.raw", "literal"): {"Write", "Read", "Describe"},
        ("topic", "hq.ticks.dlq", "literal"): {"Write", "Read", "Describe"},
    },
    "hq-streams": {
        ("topic", "hq.ticks.raw", "literal"): {"Read", "Describe"},
        ("group", "hqstream-streams", "prefix"): {"Read", "Describe"},
        ("topic", "hq.ticks.normalized", "literal"): {"Write", "Describe"},
        ("topic", "hq.market.stats", "literal"): {"Write", "Describe"},
        **{("topic", topic, "literal"): {"Write", "Describe"} for topic in CANDLE_TOPICS},
        ("topic", "hq.alerts", "literal"): {"Write", "Describe"},
        ("topic", "hq.ticks.dlq", "literal"): {"Write", "Describe"},
    },
    "hq-gateway": {
        ("topic", "hq.ticks.normalized", "literal"): {"Read", "Describe"},
        ("topic", "hq.market.stats", "literal"): {"Read", "Describe"},
        **{("topic", topic, "literal"): {"Read", "Describe"} for topic in CANDLE_TOPICS},
        ("topic", "hq.alerts", "literal"): {"Read", "Describe"},
        ("group", "hqstream-gateway", "prefix"): {"Read", "Describe"},
        ("topic", "hq.ticks.raw", "literal"): {"Describe"},
        ("group", "hqstream-streams", "literal"): {"Describe"},
    },
    # Read alone on its group: Read implies Describe (offset fetch and commit).
    "hq-archive": {
        ("topic", "hq.ticks.normalized", "literal"): {"Read", "Describe"},
        ("topic", "hq.candles.1m", "literal"): {"Read", "Describe"},
        ("topic", "hq.alerts", "literal"): {"Read", "Describe"},
        ("group", "hqstream-archive", "literal"): {"Read"},
    },
}
KEDA_ACLS = {
    ("topic", "hq.ticks.raw", "literal"): {"Describe"},
    ("group", "hqstream-streams", "literal"): {"Describe"},
}
USER_OF = {
    "hqstream-producer": "hq-producer",
    "hqstream-streams": "hq-streams",
    "hqstream-gateway": "hq-gateway",
    "hqstream-archive": "hq-archive",
}
KIND_OF = {"hqstream-archive": "StatefulSet"}  # the others are Deployments


def test_each_component_has_a_kafka_user_with_exactly_its_acls(overlay: Rendered) -> None:
    users = {u["metadata"]["name"]: u["spec"] for u in overlay.of_kind("KafkaUser")}
    expected = dict(EXPECTED_ACLS)
    if overlay.name.endswith("prod"):
        expected["hq-keda"] = KEDA_ACLS  # the lag scaler reads offsets only
    assert set(users) == set(expected)
    for name, spec in users.items():
        assert spec["authentication"]["type"] == "scram-sha-512"
        acls: dict[tuple[str, str, str], set[str]] = {}
        for acl in spec["authorization"]["acls"]:
            r = acl["resource"]
            assert acl.get("type", "allow") == "allow"
            key = (r["type"], r["name"], r.get("patternType", "literal"))
            acls.setdefault(key, set()).update(acl["operations"])
        assert acls == expected[name], name
        assert not any("All" in ops for ops in acls.values())


@pytest.mark.parametrize("name", sorted(USER_OF))
def test_components_authenticate_to_kafka_from_secrets(overlay: Rendered, name: str) -> None:
    config = overlay.config()
    assert config["HQ_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["HQ_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert config["HQ_KAFKA_BOOTSTRAP"].endswith(":9093")
    spec = overlay.get(KIND_OF.get(name, "Deployment"), name)["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["HQ_KAFKA_SASL_USERNAME"]["value"] == USER_OF[name]
    ref = env["HQ_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": USER_OF[name], "key": "password"}
    ca_dir = config["HQ_KAFKA_SSL_CA_LOCATION"].rsplit("/", 1)[0]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == ca_dir)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "hq-kafka-cluster-ca-cert"


def _redis_container(rendered: Rendered) -> dict[str, Any]:
    spec = rendered.get("StatefulSet", "redis")["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "redis")


def test_redis_is_current_and_authenticated(overlay: Rendered) -> None:
    c = _redis_container(overlay)
    major, minor, patch = map(int, re.match(r"redis:(\d+)\.(\d+)\.(\d+)", c["image"]).groups())  # type: ignore[union-attr]
    assert (major, minor, patch) >= (7, 4, 6), c["image"]
    script = (K8S_DIR / "base" / "redis" / "start-redis.sh").read_text()
    assert "user default off" in script
    for user in ("streams", "gateway"):
        assert f"user {user} on #$(sha {user}) ~hq:*" in script
    assert "-@all +@read +@connection" in script  # the gateway only reads
    for name, user in (("hqstream-streams", "streams"), ("hqstream-gateway", "gateway")):
        (client,) = overlay.get("Deployment", name)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in client["env"]}
        assert env["HQ_REDIS_URL"]["value"] == f"redis://{user}:$(REDIS_PASSWORD)@redis:6379/0"
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "hqstream-redis",
            "key": user,
        }
    assert "HQ_REDIS_URL" not in overlay.config()


def test_prod_redis_is_highly_available(prod: Rendered) -> None:
    sts = prod.get("StatefulSet", "redis")["spec"]
    assert sts["replicas"] == 3
    spec = sts["template"]["spec"]
    names = [c["name"] for c in spec["containers"]]
    assert sorted(names) == ["exporter", "redis", "sentinel"]
    anti = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    c = _redis_container(prod)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["REDIS_HA"] == "yes"
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    maxmemory = _quantity_bytes(args[args.index("--maxmemory") + 1])
    limit = _quantity_bytes(c["resources"]["limits"]["memory"])
    assert maxmemory >= 6.5e9 * 1.2, "the tick streams alone need ~6.5 GB"
    assert limit >= maxmemory * 1.5, "room for the AOF-rewrite fork's copy-on-write"
    assert c["resources"]["requests"] == c["resources"]["limits"]
    service = prod.get("Service", "redis")
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "redis-haproxy"}
    haproxy = prod.get("Deployment", "redis-haproxy")["spec"]
    assert haproxy["replicas"] >= 2
    cfg = next(
        m for m in prod.of_kind("ConfigMap") if m["metadata"]["name"].startswith("redis-haproxy")
    )["data"]["haproxy.cfg"]
    assert "tcp-check expect string role:master" in cfg
    assert cfg.count("server redis-") == sts["replicas"]
    pdb = prod.get("PodDisruptionBudget", "redis")["spec"]
    assert pdb["maxUnavailable"] == 1


def test_prod_redis_traffic_goes_through_haproxy(prod: Rendered) -> None:
    net, p = policies(prod), pods(prod)
    haproxy, redis = p["redis-haproxy"], p["redis"]
    assert net.allowed(p["hqstream-streams"], haproxy, 6379)
    assert net.allowed(p["hqstream-gateway"], haproxy, 6379)
    assert not net.allowed(p["hqstream-producer"], haproxy, 6379)
    assert not net.allowed(STRANGER, haproxy, 6379)
    assert net.allowed(haproxy, redis, 6379)
    peer = Pod("redis-1", "hqstream", redis.labels)
    assert net.allowed(redis, peer, 6379), "replication"
    assert net.allowed(redis, peer, 26379), "sentinel"
    assert not net.allowed(haproxy, redis, 26379)
    assert not net.allowed(STRANGER, redis, 26379)


def test_prod_workers_scale_on_lag_up_to_the_partitions(prod: Rendered) -> None:
    scaled = prod.get("ScaledObject", "hqstream-streams")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "hqstream-streams"
    assert prod.get("Deployment", "hqstream-streams")
    partitions = int(prod.config()["HQ_PARTITIONS"])
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] == partitions
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == "hqstream-streams" and meta["topic"] == "hq.ticks.raw"
    assert meta["allowIdleConsumers"] == "false"
    assert meta["sasl"] == "scram_sha512" and meta["tls"] == "enable"
    auth = prod.get("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    secrets = {r["parameter"]: r["name"] for r in auth["secretTargetRef"]}
    assert secrets == {"password": "hq-keda", "ca": "hq-kafka-cluster-ca-cert"}
    (username,) = auth["configMapTargetRef"]
    assert prod.get("ConfigMap", username["name"])["data"][username["key"]] == "hq-keda"
    assert not prod.of_kind("HorizontalPodAutoscaler") or all(
        h["spec"]["scaleTargetRef"]["name"] != "hqstream-streams"
        for h in prod.of_kind("HorizontalPodAutoscaler")
    ), "KEDA owns the workers' HPA"
    peers = prod.get("Kafka", "hq-kafka")["spec"]["kafka"]["listeners"][0]["networkPolicyPeers"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
        "podSelector": {"matchLabels": {"app": "keda-operator"}},
    } in peers


def test_gateway_scales_on_connections(overlay: Rendered) -> None:
    metrics = overlay.get("HorizontalPodAutoscaler", "hqstream-gateway")["spec"]["metrics"]
    pods_metrics = [m["pods"] for m in metrics if m["type"] == "Pods"]
    assert [m["metric"]["name"] for m in pods_metrics] == ["hq_gateway_ws_connections"]
    assert pods_metrics[0]["target"]["type"] == "AverageValue"


def test_prod_kafka_spreads_over_nodes_and_zones(prod: Rendered) -> None:
    for pool in prod.of_kind("KafkaNodePool"):
        pod = pool["spec"]["template"]["pod"]
        anti = pod["affinity"]["podAntiAffinity"]
        assert "preferredDuringSchedulingIgnoredDuringExecution" not in anti
        (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        (spread,) = pod["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone"
        assert spread["whenUnsatisfiable"] == "DoNotSchedule"
        name = pool["metadata"]["name"]
        assert term["labelSelector"]["matchLabels"]["strimzi.io/pool-name"] == name
    kafka = prod.get("Kafka", "hq-kafka")["spec"]["kafka"]
    assert kafka["rack"]["topologyKey"] == "topology.kubernetes.io/zone"


def test_prod_runs_one_lease_holding_receiver_per_feed(prod: Rendered) -> None:
    """components/second-feed: each HQ_FEEDS entry has its own singleton receiver,
    Lease, token Secret, journal and metrics Service; no pod belongs to both."""
    import json

    from schemas.feeds import FeedConfig

    feeds = {f["name"]: FeedConfig.model_validate(f) for f in json.loads(prod.config()["HQ_FEEDS"])}
    receivers = [
        d
        for d in prod.of_kind("Deployment")
        if d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        == "hqstream-producer"
    ]
    by_feed: dict[str, tuple[str, str, str]] = {}
    for deployment in receivers:
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        spec = deployment["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        env = {e["name"]: e for e in c["env"]}
        feed = env["HQ_FEED"]["value"]
        assert deployment["spec"]["selector"]["matchLabels"]["hqstream.io/feed"] == feed
        lease = env["HQ_LEASE_NAME"]["value"]
        role_names = [
            b["roleRef"]["name"]
            for b in prod.of_kind("RoleBinding")
            if b["subjects"][0]["name"] == spec["serviceAccountName"]
        ]
        (role,) = [prod.get("Role", name) for name in role_names]
        assert [r["resourceNames"] for r in role["rules"] if r.get("resourceNames")] == [[lease]]
        token = env["HQ_FEED_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
        journal = next(v for v in spec["volumes"] if v["name"] == "journal")
        claim = journal["persistentVolumeClaim"]["claimName"]
        assert prod.get("PersistentVolumeClaim", claim)
        service = feeds[feed].metrics_url.split("//")[1].split(":")[0]
        assert prod.get("Service", service)["spec"]["selector"]["hqstream.io/feed"] == feed
        by_feed[feed] = (lease, token, claim)
    assert set(by_feed) == set(feeds) == {"a", "b"}
    for i in range(3):  # Lease, token Secret, journal: none shared
        assert len({values[i] for values in by_feed.values()}) == len(by_feed)
