"""overlays/prod-redis-cluster: prod with a Redis Cluster (components/redis-cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import Rendered, render
from tests.deploy.test_network import KAFKA, KAFKA_PORT, STRANGER, pods, policies

BUS = 16379


@pytest.fixture(scope="module")
def cluster() -> Rendered:
    return render("overlays/prod-redis-cluster")


def _redis(rendered: Rendered) -> dict[str, Any]:
    spec = rendered.get("StatefulSet", "redis")["spec"]
    (redis,) = (c for c in spec["template"]["spec"]["containers"] if c["name"] == "redis")
    return {"spec": spec, "container": redis}


def test_six_cluster_nodes_without_sentinel_or_haproxy(cluster: Rendered) -> None:
    redis = _redis(cluster)
    assert redis["spec"]["replicas"] == 6
    names = [c["name"] for c in redis["spec"]["template"]["spec"]["containers"]]
    assert sorted(names) == ["exporter", "redis"]
    env = {e["name"]: e.get("value") for e in redis["container"]["env"]}
    assert env["REDIS_CLUSTER"] == "yes" and env["REDIS_HA"] == "no"
    args = redis["container"]["args"]
    assert args[args.index("--cluster-node-timeout") + 1] == "15000"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert {p["containerPort"] for p in redis["container"]["ports"]} == {6379, BUS}
    assert not [d for d in cluster.docs if "haproxy" in d["metadata"]["name"]]
    assert cluster.get("Service", "redis")["spec"]["selector"] == {
        "app.kubernetes.io/name": "redis"
    }
    headless = cluster.get("Service", "redis-headless")["spec"]
    assert sorted(p["port"] for p in headless["ports"]) == [6379, BUS]
    rules = cluster.get("PrometheusRule", "hqstream")["spec"]["groups"][3]["rules"]
    assert rules[1]["expr"] == 'count(redis_instance_info{role="master"}) != 3'


def test_the_bootstrap_job_forms_the_cluster_as_admin(cluster: Rendered) -> None:
    job = cluster.get("Job", "redis-cluster-bootstrap")["spec"]
    assert job["ttlSecondsAfterFinished"] > 0  # re-created (and re-checked) by the next apply
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["sh", "/scripts/bootstrap-cluster.sh"]
    (secret,) = (v["secret"] for v in pod["volumes"] if "secret" in v)
    assert secret["items"] == [{"key": "admin", "path": "admin"}]
    script = next(
        m for m in cluster.of_kind("ConfigMap")
        if m["metadata"]["name"].startswith("redis-cluster-bootstrap")
    )["data"]["bootstrap-cluster.sh"]  # fmt: skip
    assert "--cluster-replicas 1" in script
    assert 'if [ "$state" = ok ]' in script  # idempotent


def test_clients_name_the_cluster(cluster: Rendered) -> None:
    for name, user in (("hqstream-streams", "streams"), ("hqstream-gateway", "gateway")):
        (client,) = cluster.get("Deployment", name)["spec"]["template"]["spec"]["containers"]
        url = {e["name"]: e.get("value") for e in client["env"]}["HQ_REDIS_URL"]
        assert url.startswith(f"redis+cluster://{user}:$(REDIS_PASSWORD)@redis-0.redis-headless")


def test_nodes_talk_on_the_bus_and_only_the_bootstrap_job_joins_them(cluster: Rendered) -> None:
    net, p = policies(cluster), pods(cluster)
    redis, job = p["redis"], p["redis-cluster-bootstrap"]
    assert net.allowed(redis, redis, 6379) and net.allowed(redis, redis, BUS)
    assert net.allowed(job, redis, 6379)
    assert net.allowed(p["hqstream-streams"], redis, 6379)
    assert net.allowed(p["hqstream-gateway"], redis, 6379)
    for other in (p["hqstream-streams"], p["hqstream-gateway"], job, STRANGER):
        assert not net.allowed(other, redis, BUS), other.name
    assert not net.allowed(job, KAFKA, KAFKA_PORT)
    assert not net.allowed(STRANGER, job, 6379)
