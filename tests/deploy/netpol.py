"""A small NetworkPolicy evaluator for the rendered manifests.

Answers "may pod A open a TCP connection to pod B on port P?" from the
NetworkPolicy resources of one render, following the Kubernetes semantics
(a pod is isolated for a direction once any policy selects it for that
direction; allowed = union of the rules; both the sender's egress and the
receiver's ingress must allow). Only the hqstream namespace holds policies;
pods elsewhere are unrestricted on their own side.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Labels = Mapping[str, str]


@dataclass(frozen=True)
class Pod:
    """A pod (or an address outside the cluster when ``ip`` is set)."""

    name: str
    namespace: str | None
    labels: Labels = field(default_factory=dict)
    ip: str | None = None


def selector_matches(selector: Mapping[str, Any] | None, labels: Labels) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        has = key in labels
        ok = {
            "In": has and labels.get(key) in values,
            "NotIn": not has or labels.get(key) not in values,
            "Exists": has,
            "DoesNotExist": not has,
        }[op]
        if not ok:
            return False
    return True


def _namespace_labels(namespace: str) -> Labels:
    return {"kubernetes.io/metadata.name": namespace}


def _peer_matches(peer: Mapping[str, Any], other: Pod, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        block = peer["ipBlock"]
        addr = ipaddress.ip_address(other.ip)
        if addr not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(addr in ipaddress.ip_network(c) for c in block.get("except") or [])
    if other.namespace is None:
        return False
    ns_sel = peer.get("namespaceSelector")
    pod_sel = peer.get("podSelector")
    if ns_sel is not None:
        if not selector_matches(ns_sel, _namespace_labels(other.namespace)):
            return False
    elif other.namespace != policy_ns:
        return False
    return pod_sel is None or selector_matches(pod_sel, other.labels)


def _ports_match(ports: Sequence[Mapping[str, Any]] | None, port: int) -> bool:
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == "TCP" and (p.get("port") is None or p.get("port") == port)
        for p in ports
    )


def _types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


class Policies:
    """The NetworkPolicies of one render."""

    def __init__(self, docs: Sequence[Mapping[str, Any]]) -> None:
        self.policies = [d for d in docs if d["kind"] == "NetworkPolicy"]

    def _allowed(self, direction: str, subject: Pod, other: Pod, port: int) -> bool:
        if subject.namespace is None:
            return True  # outside the cluster: no policy applies
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        selecting = [
            p
            for p in self.policies
            if p["metadata"].get("namespace") == subject.namespace
            and direction in _types(p)
            and selector_matches(p["spec"].get("podSelector", {}), subject.labels)
        ]
        if not selecting:
            return True
        for policy in selecting:
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key)
                peer_ok = not peers or any(
                    _peer_matches(peer, other, policy["metadata"]["namespace"]) for peer in peers
                )
                if peer_ok and _ports_match(rule.get("ports"), port):
                    return True
        return False

    def allowed(self, src: Pod, dst: Pod, port: int) -> bool:
        """May ``src`` connect to ``dst`` on TCP ``port``?"""
        return self._allowed("Egress", src, dst, port) and self._allowed("Ingress", dst, src, port)
