"""Probes mean what they say: liveness = this process is alive, readiness = this
replica can serve its clients now. Checked on the rendered manifests against the
contract below, which docs/deploy.md ("Probes") states and the components'
health handlers implement.

For each hqstream component the contract names the endpoint of each probe and
the dependencies its handler may check. Liveness never checks Kafka or Redis: an
outage of either must not restart every replica at once (the components wait and
retry). Each probe's timeout is longer than the handler's slowest check, so the
kubelet never fails a probe the handler would have passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.deploy.manifests import Rendered


@dataclass(frozen=True)
class Probe:
    path: str
    depends_on: frozenset[str]
    check_s: float  # the handler's slowest check (0 = answers from memory)


@dataclass(frozen=True)
class Contract:
    port: int
    liveness: Probe
    readiness: Probe
    startup: Probe


ALIVE = Probe("/healthz", frozenset(), 0.0)
CONTRACT = {
    # liveness: the forwarder thread has not failed; readiness: feed connected
    # and Kafka up (or the journal spooling). No Service routes to it.
    "hqstream-producer": Contract(
        9101, ALIVE, Probe("/readyz", frozenset({"feed", "kafka|journal"}), 0.0), ALIVE
    ),
    # liveness: the agent runs (unhealthy when it crashed); readiness: joined the
    # consumer group. Redis and Kafka outages are waited out, not probed.
    "hqstream-streams": Contract(
        9102, ALIVE, Probe("/readyz", frozenset({"consumer-group"}), 0.0), ALIVE
    ),
    # liveness: the process answers; readiness: REST needs Redis, push needs its
    # Kafka consumer, answered from a ~1 s cache of checks that time out at 3 s.
    "hqstream-gateway": Contract(
        8000, ALIVE, Probe("/readyz", frozenset({"redis", "kafka-consumer"}), 3.0), ALIVE
    ),
    # liveness: the consume loop runs; readiness: a member of its consumer group.
    # Kafka and object-store outages are waited out, not probed.
    "hqstream-archive": Contract(
        9104, ALIVE, Probe("/readyz", frozenset({"consumer-group"}), 0.0), ALIVE
    ),
}
KIND_OF = {"hqstream-archive": "StatefulSet"}  # the others are Deployments
SHARED_DEPENDENCIES = {"redis", "kafka", "kafka|journal"}


def _container(rendered: Rendered, name: str) -> dict[str, Any]:
    kind = KIND_OF.get(name, "Deployment")
    (c,) = rendered.get(kind, name)["spec"]["template"]["spec"]["containers"]
    return c


def _port(c: dict[str, Any], probe: dict[str, Any]) -> int:
    named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    port = probe["httpGet"]["port"]
    return int(named.get(port, port))


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_each_probe_hits_its_endpoint(overlay: Rendered, name: str) -> None:
    c, contract = _container(overlay, name), CONTRACT[name]
    for key, expected in (
        ("livenessProbe", contract.liveness),
        ("readinessProbe", contract.readiness),
        ("startupProbe", contract.startup),
    ):
        probe = c[key]
        assert probe["httpGet"]["path"] == expected.path, (name, key)
        assert _port(c, probe) == contract.port, (name, key)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_liveness_depends_on_nothing_outside_the_process(overlay: Rendered, name: str) -> None:
    contract = CONTRACT[name]
    assert not contract.liveness.depends_on
    assert not contract.startup.depends_on
    assert contract.liveness.path != contract.readiness.path, "readiness must say more"


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_probe_timeouts_outlast_the_handlers_checks(overlay: Rendered, name: str) -> None:
    c, contract = _container(overlay, name), CONTRACT[name]
    for key, expected in (
        ("livenessProbe", contract.liveness),
        ("readinessProbe", contract.readiness),
        ("startupProbe", contract.startup),
    ):
        timeout = c[key].get("timeoutSeconds", 1)
        assert timeout >= expected.check_s + 1, f"{name} {key}: {timeout}s"
        assert timeout <= c[key].get("periodSeconds", 10), f"{name} {key}: overlapping probes"


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_liveness_tolerates_a_slow_moment(overlay: Rendered, name: str) -> None:
    """At least 30 s of failed liveness before a restart, and a startup probe first."""
    live = _container(overlay, name)["livenessProbe"]
    assert live.get("periodSeconds", 10) * live.get("failureThreshold", 3) >= 30
    assert "initialDelaySeconds" not in live, "the startupProbe holds liveness back"


def test_no_shared_dependency_can_unready_every_gateway_and_block_drains(
    overlay: Rendered,
) -> None:
    """A Redis restart may take gateways out of the Service, but the PDB must
    still let a drain proceed, and liveness never restarts them for it."""
    gateway = CONTRACT["hqstream-gateway"]
    assert not gateway.liveness.depends_on & SHARED_DEPENDENCIES
    pdb = overlay.get("PodDisruptionBudget", "hqstream-gateway")["spec"]
    hpa = overlay.get("HorizontalPodAutoscaler", "hqstream-gateway")["spec"]
    if "minAvailable" in pdb:
        assert pdb["minAvailable"] < hpa["minReplicas"]
    # unhealthy pods (NotReady) can always be evicted: Kubernetes >= 1.27 field
    assert pdb.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"


def test_producer_startup_budget_covers_waiting_for_the_lease(overlay: Rendered) -> None:
    """A replacement waits out a dead holder's lease before its health server starts."""
    c = _container(overlay, "hqstream-producer")
    env = {e["name"]: e.get("value") for e in c["env"]}
    wait = float(env["HQ_LEASE_DURATION_S"]) + 2 * float(env["HQ_LEASE_RETRY_S"])
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 2 * wait
    assert float(env["HQ_LEASE_RENEW_DEADLINE_S"]) < float(env["HQ_LEASE_DURATION_S"])


def test_streams_rollouts_wait_for_a_joined_worker(overlay: Rendered) -> None:
    streams = overlay.get("Deployment", "hqstream-streams")["spec"]
    assert streams["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert _container(overlay, "hqstream-streams")["readinessProbe"]["httpGet"]["path"] == (
        "/readyz"
    )


def test_redis_readiness_waits_for_the_dataset_and_liveness_does_not(
    overlay: Rendered,
) -> None:
    """PING answers LOADING while an AOF loads: ready only when loaded (and, on a
    replica, linked to its master); alive while loading."""
    redis = overlay.get("StatefulSet", "redis")["spec"]["template"]["spec"]
    (server,) = [c for c in redis["containers"] if c["name"] == "redis"]
    ready = " ".join(server["readinessProbe"]["exec"]["command"])
    live = " ".join(server["livenessProbe"]["exec"]["command"])
    assert "ready" in ready and "probe" in ready, ready
    assert "alive" in live and "probe" in live, live
