"""The archiver's health endpoints: liveness while the loop runs, readiness once
the consumer is in its group (any assignment, even empty), not after it was lost."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from archive import metrics
from archive.archiver import Archiver
from hqcore.probe_server import probe_handler
from schemas import topics
from tests.archive.fakes import settings


@pytest.fixture
def port() -> Iterator[int]:
    handler = probe_handler(metrics.healthz, metrics.readyz)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        metrics.HEALTH.running = metrics.HEALTH.joined = False


def _status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_readiness_needs_the_group_and_liveness_does_not(port: int) -> None:
    assert (_status(port, "/healthz"), _status(port, "/readyz")) == (503, 503)
    metrics.HEALTH.running = True
    assert (_status(port, "/healthz"), _status(port, "/readyz")) == (200, 503)
    metrics.HEALTH.joined = True
    assert (_status(port, "/healthz"), _status(port, "/readyz")) == (200, 200)
    assert _status(port, "/metrics") == 200


def test_a_lost_assignment_unreadies_until_the_next(tmp_path: Path) -> None:
    archiver = Archiver(settings(str(tmp_path)))
    metrics.HEALTH.joined = True
    try:
        archiver.on_lost(None, [TopicPartition(topics.NORMALIZED, 0)])  # type: ignore[arg-type]
        assert metrics.HEALTH.joined is False
    finally:
        metrics.HEALTH.joined = False
