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


def _scraped_ports(rendered: Rendered) -> dict[str, set[int]]:
    """Workload -> container ports some PodMonitor scrapes (by port name)."""
    from tests.deploy.netpol import selector_matches

    scraped: dict[str, set[int]] = {}
    for monitor in rendered.of_kind("PodMonitor"):
        names = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
        for workload, template in rendered.pod_templates():
            if not selector_matches(monitor["spec"]["selector"], template["metadata"]["labels"]):
                continue
            for c in template["spec"]["containers"]:
                for port in c.get("ports", []):
                    if port.get("name") in names:
                        scraped.setdefault(workload["metadata"]["name"], set()).add(
                            port["containerPort"]
                        )
    return scraped


def test_pod_monitors_scrape_every_metrics_endpoint(overlay: Rendered) -> None:
    scraped = _scraped_ports(overlay)
    assert scraped["hqstream-producer"] == {9101}
    assert scraped["hqstream-streams"] == {9102}
    assert scraped["hqstream-gateway"] == {8000}
    assert scraped["hqstream-archive"] == {9104}
    assert scraped["redis"] == {9121}
    for workload, template in overlay.pod_templates():
        annotations = template["metadata"].get("annotations", {})
        assert "prometheus.io/scrape" not in annotations, workload["metadata"]["name"]
    kafka = overlay.get("Kafka", "hq-kafka")["spec"]
    assert kafka["kafka"]["metricsConfig"]["type"] == "strimziMetricsReporter"
    assert "kafkaExporter" in kafka


def test_alerts_and_dashboard_are_shipped(overlay: Rendered) -> None:
    import json

    rules = overlay.get("PrometheusRule", "hqstream")["spec"]["groups"]
    alerts = {r["alert"] for g in rules for r in g["rules"] if "alert" in r}
    for needed in (
        "HqFeedDisconnected",
        "HqReceiverSpooling",
        "HqStreamsLag",
        "HqStreamsRedisDown",
        "HqRedisNoMaster",
        "HqKafkaUnderReplicated",
    ):
        assert needed in alerts
    for group in rules:
        for rule in group["rules"]:
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule
    (dashboard,) = [
        m for m in overlay.of_kind("ConfigMap") if m["metadata"]["name"].startswith("hqstream-dash")
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dashboard["data"]["hqstream-dashboard.json"])
    assert len(board["panels"]) >= 10


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
            if e["name"].endswith("_FILE"):  # a path to a mounted Secret file
                assert e["value"].startswith("/"), e["name"]
                continue
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


def test_gateway_service_route_hpa_pdb(overlay: Rendered) -> None:
    gateway = overlay.get("Deployment", "hqstream-gateway")
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    service = overlay.get("Service", "hqstream-gateway")
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    route = overlay.get("HTTPRoute", "hqstream-gateway")["spec"]
    backends = {b["name"] for rule in route["rules"] for b in rule["backendRefs"]}
    assert backends == {"hqstream-gateway"}
    ports = {b["port"] for rule in route["rules"] for b in rule["backendRefs"]}
    assert ports == {p["port"] for p in service["spec"]["ports"]}
    assert overlay.of_kind("Ingress") == [], "the Ingress is an example only"
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
        "hqstream-producer-b": ReceiverSettings,  # overlays/prod: components/second-feed
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
            if not e["name"].startswith("HQ_"):
                # only a helper for $(VAR) expansion in an HQ_* value
                used = [v.get("value", "") for v in c["env"] if v["name"].startswith("HQ_")]
                assert any(f"$({e['name']})" in v for v in used), e["name"]
                continue
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


def test_the_gateway_replays_days_from_the_archivers_store_in_prod(overlay: Rendered) -> None:
    """replay_day: the gateway reads where the archiver writes (prod's bucket, read-only
    credentials by reference); elsewhere the archive is the archiver pod's own volume."""
    (archiver,) = overlay.get("StatefulSet", "hqstream-archive")["spec"]["template"]["spec"][
        "containers"
    ]
    (gateway,) = overlay.get("Deployment", "hqstream-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    secrets = [e["secretRef"]["name"] for e in gateway["envFrom"] if "secretRef" in e]
    if overlay.name.endswith("prod"):
        archive_root = {e["name"]: e.get("value") for e in archiver["env"]}["HQ_ARCHIVE_ROOT"]
        assert env["HQ_GATEWAY_ARCHIVE_ROOT"] == archive_root
        assert secrets == ["hqstream-gateway-archive-s3"]
    else:
        assert env["HQ_GATEWAY_ARCHIVE_ROOT"] == ""
        assert secrets == []


PUBLIC = (
    "/api/realtime/quotes", "/api/realtime/ws", "/api/realtime/stock/600000",
    "/api/realtime/status", "/", "/dashboard", "/index.html", "/app.js", "/chart.js", "/style.css",
)  # fmt: skip
PRIVATE = (
    "/metrics", "/docs", "/openapi.json", "/redoc", "/healthz", "/readyz", "/metrics/x",
    "/docs/oauth2-redirect", "/api", "/static/../metrics",
)  # fmt: skip


def _routed(rules: list[dict[str, Any]], path: str) -> dict[str, Any] | None:
    for rule in rules:
        for match in rule["matches"]:
            m = match["path"]
            prefix = m["value"].rstrip("/")
            if m["type"] == "Exact" and path == m["value"]:
                return rule
            if m["type"] == "PathPrefix" and (path == prefix or path.startswith(prefix + "/")):
                return rule
    return None


def test_only_public_paths_are_routed_and_websockets_do_not_time_out(
    overlay: Rendered,
) -> None:
    rules = overlay.get("HTTPRoute", "hqstream-gateway")["spec"]["rules"]
    for path in PUBLIC:
        assert _routed(rules, path) is not None, path
    for path in PRIVATE:
        assert _routed(rules, path) is None, path
    ws = _routed(rules, "/api/realtime/ws")
    assert ws is not None and ws["timeouts"]["request"] == "0s"
    rest = _routed(rules, "/api/realtime/quotes")
    assert rest is not None and rest["timeouts"]["request"] != "0s"


def test_the_ingress_example_validates_and_routes_only_public_paths() -> None:
    import kubernetes_validate
    import yaml

    (ingress,) = yaml.safe_load_all((K8S_DIR / "examples" / "ingress-nginx.yaml").read_text())
    kubernetes_validate.validate(ingress, "1.31.0", strict=True)
    paths = {p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert not paths & set(PRIVATE)
    assert "/api/realtime" in paths
