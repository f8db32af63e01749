"""Render the kustomize overlays and look things up in the rendered resources.

Shared by the tests in tests/deploy. Renders with the kustomize binary the
Makefile installs at ``.cache/bin/kustomize``; never talks to a cluster.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / ".cache" / "bin" / "kustomize"
K8S_DIR = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
NAMESPACE = "hqstream"
STRIMZI_GROUP = "kafka.strimzi.io"
POD_TEMPLATE_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
    }
)

Resource = dict[str, Any]


def load_deploy_module(name: str) -> ModuleType:
    """A deploy tool (``deploy/<name>.py``, a script, not part of the installed packages)."""
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", ROOT / "deploy" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kustomize() -> Path:
    """The kustomize binary; missing = failure in CI, skip on a dev machine."""
    if KUSTOMIZE.is_file() and os.access(KUSTOMIZE, os.X_OK):
        return KUSTOMIZE
    msg = f"kustomize not found at {KUSTOMIZE} (install it with `make kustomize`)"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(msg)
    pytest.skip(msg)


@functools.cache
def _render(target: str) -> tuple[Resource, ...]:
    proc = subprocess.run(
        [str(kustomize()), "build", str(K8S_DIR / target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kustomize build {target} failed:\n{proc.stderr}"
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    assert docs, f"kustomize build {target} rendered nothing"
    return docs


@dataclass(frozen=True)
class Rendered:
    """The resources of one rendered kustomization (``base`` or an overlay)."""

    name: str
    docs: tuple[Resource, ...]

    def of_kind(self, kind: str) -> list[Resource]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Resource:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def config(self) -> dict[str, str]:
        """The data of the hqstream-config ConfigMap (name carries a hash suffix)."""
        maps = [
            d
            for d in self.of_kind("ConfigMap")
            if d["metadata"]["name"].startswith("hqstream-config")
        ]
        assert len(maps) == 1, f"{self.name}: expected one hqstream-config ConfigMap"
        data: dict[str, str] = maps[0]["data"]
        return data

    def pod_templates(self) -> Iterator[tuple[Resource, Resource]]:
        """(workload, pod template) for every workload with a pod template."""
        for doc in self.docs:
            if doc["kind"] in POD_TEMPLATE_KINDS:
                yield doc, doc["spec"]["template"]

    def containers(self) -> Iterator[tuple[Resource, Resource, Resource]]:
        """(workload, pod spec, container) for every container and init container."""
        for workload, template in self.pod_templates():
            spec = template["spec"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield workload, spec, container

    def kafka_broker_count(self) -> int:
        return sum(
            pool["spec"]["replicas"]
            for pool in self.of_kind("KafkaNodePool")
            if "broker" in pool["spec"]["roles"]
        )


def render(target: str) -> Rendered:
    return Rendered(target, _render(target))


def is_strimzi(doc: Resource) -> bool:
    return str(doc["apiVersion"]).split("/")[0] == STRIMZI_GROUP
