"""Every overlay renders, and every rendered resource is well-formed.

Built-in kinds are validated against the Kubernetes JSON schemas shipped with
kubernetes-validate (strict: unknown fields fail); custom resources against the
vendored CRD schemas in deploy/vendor/ (tests/deploy/crds.py, equally strict).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy import crds, strimzi
from tests.deploy.manifests import (
    CLUSTER_SCOPED_KINDS,
    NAMESPACE,
    Rendered,
    is_strimzi,
    render,
)

# The oldest Kubernetes we support (Strimzi 0.48 needs >= 1.27; we test 1.31+)
# and the newest this kubernetes-validate release knows.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())


def _validate(doc: dict[str, Any]) -> list[str]:
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(
                f"{doc['kind']}/{doc['metadata']['name']} @ {version}: {path}: {exc.message}"
            )
    return errors


def _is_custom(doc: dict[str, Any]) -> bool:
    """A custom resource: its group has a vendored CRD (validated in crds.py)."""
    return str(doc["apiVersion"]).split("/")[0] in crds.groups()


def test_builtin_resources_match_kubernetes_schemas(overlay: Rendered) -> None:
    builtin = [d for d in overlay.docs if not _is_custom(d)]
    assert builtin
    errors = [e for doc in builtin for e in _validate(doc)]
    assert not errors, "\n".join(errors)


def test_base_renders_and_validates() -> None:
    base = render("base")
    errors = [e for doc in base.docs if not _is_custom(doc) for e in _validate(doc)]
    assert not errors, "\n".join(errors)


def test_schema_validation_rejects_a_typo(overlay: Rendered) -> None:
    """The validator is strict: an unknown field in a Deployment fails."""
    deployment = copy.deepcopy(overlay.get("Deployment", "hqstream-gateway"))
    deployment["spec"]["replica"] = 2
    assert _validate(deployment)


def test_strimzi_resources_match_the_vendored_crds(overlay: Rendered) -> None:
    kinds = {d["kind"] for d in overlay.docs if is_strimzi(d)}
    assert kinds == {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
    assert strimzi.problems(overlay.docs) == []


def test_other_custom_resources_match_their_vendored_crds(overlay: Rendered) -> None:
    """PodMonitors, PrometheusRules, ScaledObjects, HTTPRoutes, ...: strict too."""
    others = [d for d in overlay.docs if not is_strimzi(d)]
    assert crds.all_problems(others) == []


def test_vendored_crds_reject_nested_unknown_fields(prod: Rendered) -> None:
    for kind in ("PodMonitor", "PrometheusRule"):
        doc = copy.deepcopy(prod.of_kind(kind)[0])
        doc["spec"]["selectr"] = {}
        assert crds.problems(doc), kind
    monitor = copy.deepcopy(prod.get("PodMonitor", "hqstream"))
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "5s"
    assert crds.problems(monitor)


def test_every_custom_resource_has_a_vendored_crd(overlay: Rendered) -> None:
    """No custom resource escapes validation: its group has a vendored CRD."""
    custom = [d for d in overlay.docs if "." in str(d["apiVersion"]).split("/")[0]]
    builtin_groups = {
        "apps",
        "policy",
        "autoscaling",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "scheduling.k8s.io",
        "coordination.k8s.io",
    }
    unvalidated = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in custom
        if d["apiVersion"].split("/")[0] not in builtin_groups
        and (d["apiVersion"], d["kind"]) not in crds.schemas()
    ]
    assert not unvalidated


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        # nested typos the old top-level check let through (issue 15)
        ("KafkaNodePool", ("spec", "storage", "volumes", 0, "kraftMetadata"), "sharedx"),
        ("Kafka", ("spec", "entityOperator", "topicOperatr"), {}),
        ("Kafka", ("spec", "kafka", "listeners", 0, "authentication", "type"), "scram"),
        ("Kafka", ("spec", "kafka", "listeners", 0, "networkPolicyPeer"), []),
        ("Kafka", ("spec", "kafka", "authorization", "type"), "acl"),
        ("KafkaNodePool", ("spec", "template", "pod", "affinityy"), {}),
        ("KafkaUser", ("spec", "authorization", "acls", 0, "operations"), ["Writ"]),
        ("KafkaUser", ("spec", "authentication", "type"), "scram-sha-256"),
        ("KafkaTopic", ("spec", "replica"), 3),
        ("KafkaTopic", ("spec", "partitions"), "12"),
        ("KafkaTopic", ("metadata", "labels", "strimzi.io/cluster"), "other"),
        ("KafkaNodePool", ("spec", "roles"), ["zookeeper"]),
        ("Kafka", ("spec", "kafka", "listeners"), []),
    ],
)
def test_strimzi_check_catches_broken_resources(
    prod: Rendered, kind: str, path: tuple[str | int, ...], value: object
) -> None:
    docs = [copy.deepcopy(d) for d in prod.docs]
    # the first of the kind (a node pool with a pod template for the nested case)
    target = next(
        d
        for d in docs
        if d["kind"] == kind and (kind != "KafkaNodePool" or "template" in d["spec"])
    )
    node: Any = target
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    assert strimzi.problems(docs)


def test_every_namespaced_resource_is_in_the_hqstream_namespace(overlay: Rendered) -> None:
    namespaces = overlay.of_kind("Namespace")
    assert [n["metadata"]["name"] for n in namespaces] == [NAMESPACE]
    wrong = [
        f"{d['kind']}/{d['metadata']['name']}: {d['metadata'].get('namespace')}"
        for d in overlay.docs
        if d["kind"] not in CLUSTER_SCOPED_KINDS and d["metadata"].get("namespace") != NAMESPACE
    ]
    assert not wrong


def test_everything_carries_the_part_of_label(overlay: Rendered) -> None:
    missing = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in overlay.docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "hqstream"
    ]
    assert not missing
    for workload, template in overlay.pod_templates():
        labels = template["metadata"]["labels"]
        assert labels.get("app.kubernetes.io/part-of") == "hqstream", workload["metadata"]["name"]


def test_kustomizations_use_labels_not_common_labels() -> None:
    from tests.deploy.manifests import K8S_DIR

    files = list(K8S_DIR.rglob("kustomization.yaml"))
    assert len(files) >= 3
    for path in files:
        text = path.read_text()
        assert "commonLabels" not in text, path
        assert "labels:" in text or path.parent.name == "base", path


def test_missing_kustomize_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.deploy import manifests

    monkeypatch.setattr(manifests, "KUSTOMIZE", tmp_path / "kustomize")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="kustomize not found"):
        manifests.kustomize()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        manifests.kustomize()
