"""Invariants of the rendered overlays: security, sizing, probes, singletons,
secrets by reference only, topics equal to schemas/topics.py, Kafka HA in prod.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from schemas.topics import topic_specs
from tests.deploy.manifests import K8S_DIR, Rendered

HQ_IMAGE = re.compile(r"^(?:[\w.-]+(?::\d+)?/)*hqstream:[\w.-]+$")
PINNED_IMAGE = re.compile(r"^[\w./-]+:(?!latest$)[\w.-]*\d[\w.-]*(@sha256:[0-9a-f]{64})?$")
SECRET_ENV = re.compile(r"TOKEN|KEY|PASSWORD|SECRET", re.IGNORECASE)


def _effective(container: dict[str, Any], pod: dict[str, Any], key: str) -> Any:
    """A security setting as the kubelet sees it: container first, then pod."""
    value = container.get("securityContext", {}).get(key)
    return value if value is not None else pod.get("securityContext", {}).get(key)


def test_every_container_has_probes_resources_and_a_locked_down_security_context(
    overlay: Rendered,
) -> None:
    problems = []
    for workload, pod, c in overlay.containers():
        where = f"{workload['metadata']['name']}/{c['name']}"
        is_init = c in pod.get("initContainers", [])
        if not is_init:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    problems.append(f"{where}: no {probe}")
        resources = c.get("resources", {})
        for part in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if what not in resources.get(part, {}):
                    problems.append(f"{where}: no {part}.{what}")
        sc = c.get("securityContext", {})
        if _effective(c, pod, "runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        uid = _effective(c, pod, "runAsUser")
        if not isinstance(uid, int) or uid == 0:
            problems.append(f"{where}: runAsUser {uid!r} is not a non-root numeric uid")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc["capabilities"].get("add"):
            problems.append(f"{where}: capabilities must drop ALL and add none")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        seccomp = _effective(c, pod, "seccompProfile") or {}
        if seccomp.get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")
        if not PINNED_IMAGE.match(c["image"]):
            problems.append(f"{where}: image {c['image']!r} is not pinned to a version")
    assert not problems, "\n".join(problems)


def test_pods_do_not_mount_service_account_tokens(overlay: Rendered) -> None:
    for workload, template in overlay.pod_templates():
        assert template["spec"].get("automountServiceAccountToken") is False, workload


def test_metrics_serving_pods_carry_prometheus_annotations(overlay: Rendered) -> None:
    scraped = set()
    for workload, template in overlay.pod_templates():
        annotations = template["metadata"].get("annotations", {})
        ports = {
            p["containerPort"]: p.get("name")
            for c in template["spec"]["containers"]
            for p in c.get("ports", [])
        }
        if annotations.get("prometheus.io/scrape") == "true":
            assert int(annotations["prometheus.io/port"]) in ports, workload["metadata"]["name"]
            assert annotations["prometheus.io/path"] == "/metrics"
            scraped.add(workload["metadata"]["name"])
    assert {"hqstream-producer", "hqstream-streams", "hqstream-gateway"} <= scraped


def test_probes_use_the_components_health_endpoints(overlay: Rendered) -> None:
    expected = {
        "hqstream-producer": ("/readyz", "/healthz", 9101),
        "hqstream-streams": ("/healthz", "/healthz", 9102),
        "hqstream-gateway": ("/readyz", "/healthz", 8000),
    }
    for name, (ready, live, port) in expected.items():
        (c,) = overlay.get("Deployment", name)["spec"]["template"]["spec"]["containers"]
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (("readinessProbe", ready), ("livenessProbe", live)):
            http = c[probe]["httpGet"]
            assert http["path"] == path, (name, probe)
            assert named.get(http["port"], http["port"]) == port, (name, probe)


def test_producer_is_a_singleton(overlay: Rendered) -> None:
    producer = overlay.get("Deployment", "hqstream-producer")
    assert producer["spec"]["replicas"] == 1
    assert producer["spec"]["strategy"] == {"type": "Recreate"}
    targets = [
        h["spec"]["scaleTargetRef"]["name"] for h in overlay.of_kind("HorizontalPodAutoscaler")
    ]
    assert "hqstream-producer" not in targets


def test_producer_token_and_journal(overlay: Rendered) -> None:
    spec = overlay.get("Deployment", "hqstream-producer")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["HQ_FEED_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hqstream-feed"
    assert "value" not in env["HQ_FEED_TOKEN"]
    journal_dir = env["HQ_JOURNAL_DIR"]["value"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == journal_dir)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    if overlay.name.endswith("prod"):
        claim = volume["persistentVolumeClaim"]["claimName"]
        assert overlay.get("PersistentVolumeClaim", claim)
        assert "emptyDir" not in volume
    else:
        assert "emptyDir" in volume


def test_no_secret_values_are_shipped(overlay: Rendered) -> None:
    assert overlay.of_kind("Secret") == []
    for workload, _pod, c in overlay.containers():
        for e in c.get("env", []):
            if SECRET_ENV.search(e["name"]) and not e["name"].endswith("_MAX_BYTES"):
                assert "value" not in e, f"{workload['metadata']['name']}: {e['name']} literal"
                assert "secretKeyRef" in e["valueFrom"], e["name"]
    for key in overlay.config():
        assert not SECRET_ENV.search(key), f"secret-looking key {key} in the ConfigMap"


def test_no_secret_manifests_are_committed() -> None:
    files = [p for p in K8S_DIR.rglob("*") if p.is_file()]
    assert files
    for path in files:
        text = path.read_text()
        assert not re.search(r"^kind:\s*Secret\s*$", text, re.MULTILINE), path
        assert "secretGenerator" not in text, path


def test_kafka_topics_equal_schemas_topics(overlay: Rendered) -> None:
    partitions = int(overlay.config()["HQ_PARTITIONS"])
    expected = {s.name: s for s in topic_specs(partitions)}
    rendered = {
        t["spec"].get("topicName", t["metadata"]["name"]): t for t in overlay.of_kind("KafkaTopic")
    }
    assert set(rendered) == set(expected)
    for name, spec in expected.items():
        topic = rendered[name]["spec"]
        assert topic["partitions"] == spec.partitions, name
        assert {k: str(v) for k, v in topic.get("config", {}).items()} == spec.configs, name
        assert "cleanup.policy" in topic["config"] and "retention.ms" in topic["config"], name


def test_topic_replicas_fit_the_brokers(overlay: Rendered) -> None:
    brokers = overlay.kafka_broker_count()
    expected = 3 if overlay.name.endswith("prod") else 1
    for topic in overlay.of_kind("KafkaTopic"):
        assert topic["spec"]["replicas"] == expected
        assert topic["spec"]["replicas"] <= brokers


def test_kafka_is_kraft_with_node_pools_and_a_topic_operator(overlay: Rendered) -> None:
    kafka = overlay.get("Kafka", "hq-kafka")
    annotations = kafka["metadata"]["annotations"]
    assert annotations["strimzi.io/node-pools"] == "enabled"
    assert annotations["strimzi.io/kraft"] == "enabled"
    assert re.fullmatch(r"0\.\d+\.\d+", annotations["hqstream.io/strimzi-version"])
    spec = kafka["spec"]
    assert "zookeeper" not in spec
    assert re.fullmatch(r"4\.0\.\d+", spec["kafka"]["version"])
    assert spec["kafka"]["metadataVersion"].startswith("4.0-IV")
    assert spec["kafka"]["config"]["auto.create.topics.enable"] is False
    assert "topicOperator" in spec["entityOperator"]
    controllers = sum(
        p["spec"]["replicas"]
        for p in overlay.of_kind("KafkaNodePool")
        if "controller" in p["spec"]["roles"]
    )
    assert controllers % 2 == 1, "the KRaft quorum needs an odd number of controllers"


def test_dev_has_one_dual_role_node(dev: Rendered) -> None:
    (pool,) = dev.of_kind("KafkaNodePool")
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    assert pool["spec"]["replicas"] == 1
    config = dev.get("Kafka", "hq-kafka")["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 1
    assert config["min.insync.replicas"] == 1


def test_prod_is_highly_available(prod: Rendered) -> None:
    pools = {p["metadata"]["name"]: p["spec"] for p in prod.of_kind("KafkaNodePool")}
    roles = {name: spec["roles"] for name, spec in pools.items()}
    assert sorted(roles.values()) == [["broker"], ["controller"]]
    for spec in pools.values():
        assert spec["replicas"] == 3
        volumes = spec["storage"]["volumes"]
        assert all(v["type"] == "persistent-claim" and v["deleteClaim"] is False for v in volumes)
    config = prod.get("Kafka", "hq-kafka")["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == 3
    assert config["transaction.state.log.replication.factor"] == 3
    assert config["transaction.state.log.min.isr"] == 2


def test_stream_workers_do_not_outnumber_partitions(overlay: Rendered) -> None:
    partitions = int(overlay.config()["HQ_PARTITIONS"])
    replicas = overlay.get("Deployment", "hqstream-streams")["spec"]["replicas"]
    assert replicas == (3 if overlay.name.endswith("prod") else 1)
    assert replicas <= partitions
    raw = next(t for t in overlay.of_kind("KafkaTopic") if t["metadata"]["name"] == "hq.ticks.raw")
    assert raw["spec"]["partitions"] == partitions


def test_gateway_service_ingress_hpa_pdb(overlay: Rendered) -> None:
    gateway = overlay.get("Deployment", "hqstream-gateway")
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    service = overlay.get("Service", "hqstream-gateway")
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    ingress = overlay.get("Ingress", "hqstream-gateway")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-http-version"] == "1.1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "hqstream-gateway"
    hpa = overlay.get("HorizontalPodAutoscaler", "hqstream-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "hqstream-gateway",
    }
    pdb = overlay.get("PodDisruptionBudget", "hqstream-gateway")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    if "minAvailable" in pdb["spec"]:
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "would block drains"


def test_redis_persistence_per_overlay(overlay: Rendered) -> None:
    redis = overlay.get("StatefulSet", "redis")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    appendonly = args[args.index("--appendonly") + 1]
    volumes = {v["name"]: v for v in redis["spec"]["template"]["spec"].get("volumes", [])}
    if overlay.name.endswith("prod"):
        assert appendonly == "yes"
        assert [t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]] == ["data"]
        assert "data" not in volumes
    else:
        assert appendonly == "no"
        assert "volumeClaimTemplates" not in redis["spec"]
        assert "emptyDir" in volumes["data"]


def _env_names(settings: type[BaseSettings]) -> set[str]:
    """The environment variable names a settings class reads."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {
                c.upper() for c in alias.choices if isinstance(c, str) and c.startswith("HQ_")
            }
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def _component_settings() -> dict[str, type[BaseSettings]]:
    from api.settings import GatewaySettings
    from archive.settings import ArchiveSettings
    from producers.settings import ReceiverSettings
    from streams.settings import StreamsSettings

    return {
        "hqstream-producer": ReceiverSettings,
        "hqstream-streams": StreamsSettings,
        "hqstream-gateway": GatewaySettings,
        "hqstream-archive": ArchiveSettings,
    }


def test_every_env_var_is_read_by_its_component(overlay: Rendered) -> None:
    """A typo in an HQ_* name would be silently ignored (extra="ignore"): catch it here."""
    known = {name: _env_names(cls) for name, cls in _component_settings().items()}
    everyone = set().union(*known.values())
    for key in overlay.config():
        assert key in everyone, f"ConfigMap key {key} is read by no component"
    for workload, _pod, c in overlay.containers():
        accepted = known.get(workload["metadata"]["name"])
        if accepted is None:
            continue  # redis, the simulator: not hqstream settings classes
        for e in c.get("env", []):
            assert e["name"] in accepted, f"{workload['metadata']['name']} ignores {e['name']}"


@pytest.mark.parametrize("name", ["hqstream-producer", "hqstream-streams", "hqstream-gateway"])
def test_hqstream_containers_run_the_hqstream_image_as_uid_10001(
    overlay: Rendered, name: str
) -> None:
    spec = overlay.get("Deployment", name)["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert HQ_IMAGE.match(c["image"]), c["image"]
    assert c["securityContext"]["runAsUser"] == 10001
    refs = [e["configMapRef"]["name"] for e in c["envFrom"] if "configMapRef" in e]
    maps = [m["metadata"]["name"] for m in overlay.of_kind("ConfigMap")]
    assert [r for r in refs if r.startswith("hqstream-config")] == [
        m for m in maps if m.startswith("hqstream-config")
    ]
    writable = {m["mountPath"] for m in c.get("volumeMounts", [])}
    assert "/tmp" in writable


def test_archive_is_a_statefulset_with_static_membership(overlay: Rendered) -> None:
    archive = overlay.get("StatefulSet", "hqstream-archive")
    (c,) = archive["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["archive"]
    env = {e["name"]: e for e in c["env"]}
    assert env["HQ_ARCHIVE_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert archive["spec"]["replicas"] <= int(overlay.config()["HQ_PARTITIONS"])
    secrets = [e["secretRef"]["name"] for e in c["envFrom"] if "secretRef" in e]
    if overlay.name.endswith("prod"):
        assert env["HQ_ARCHIVE_ROOT"]["value"].startswith("s3://")
        assert secrets == ["hqstream-archive-s3"]  # by reference: no Secret is shipped
    else:
        assert env["HQ_ARCHIVE_ROOT"]["value"] == "/var/lib/hqstream/archive"
        assert secrets == []
