"""The committed KafkaTopic manifest is exactly what deploy/k8s_topics.py renders
from schemas/topics.py (one source of truth for topics)."""

from __future__ import annotations

import pytest
import yaml

from schemas.topics import topic_specs
from tests.deploy.manifests import K8S_DIR, load_deploy_module

k8s_topics = load_deploy_module("k8s_topics")
COMMITTED = K8S_DIR / "base" / "kafka" / "topics.yaml"
REGENERATE = "python deploy/k8s_topics.py > deploy/k8s/base/kafka/topics.yaml"


def test_committed_topics_yaml_is_generated() -> None:
    assert COMMITTED.read_text() == k8s_topics.render_topics(), f"stale: run `{REGENERATE}`"


def test_rendered_topics_match_the_specs() -> None:
    docs = [d for d in yaml.safe_load_all(k8s_topics.render_topics(partitions=24, replicas=2)) if d]
    specs = topic_specs(24)
    assert [d["spec"]["topicName"] for d in docs] == [s.name for s in specs]
    for doc, spec in zip(docs, specs, strict=True):
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert doc["kind"] == "KafkaTopic"
        assert doc["metadata"]["name"] == spec.name
        assert doc["metadata"]["labels"] == {"strimzi.io/cluster": "hq-kafka"}
        assert doc["spec"]["partitions"] == spec.partitions
        assert doc["spec"]["replicas"] == 2
        assert doc["spec"].get("config", {}) == spec.configs  # values stay strings


def test_main_writes_the_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    assert k8s_topics.main(["--partitions", "6", "--replicas", "1", "--cluster", "other"]) == 0
    out = capsys.readouterr().out
    assert out == k8s_topics.render_topics(6, 1, "other")
    assert "strimzi.io/cluster: other" in out
    docs = [d for d in yaml.safe_load_all(out) if d]
    by_name = {d["spec"]["topicName"]: d["spec"] for d in docs}
    assert by_name == {
        s.name: {**by_name[s.name], "partitions": s.partitions} for s in topic_specs(6)
    }
    assert by_name["hq.ticks.raw"]["partitions"] == 6, "--partitions sets the tick topics"
    assert {spec["replicas"] for spec in by_name.values()} == {1}


def test_main_rejects_nonsense() -> None:
    with pytest.raises(SystemExit):
        k8s_topics.main(["--replicas", "0"])
