"""``HQ_STREAMS_FETCH_INTERVAL_MS`` reaches the consumer whose fetch loop it paces."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streams.app import create_app
from streams.faust_transport import FastConsumer
from streams.settings import StreamsSettings


def _interval(settings: StreamsSettings) -> float:
    async def build() -> float:
        streams_app = create_app(settings, worker_id="pacing")
        await streams_app.runtime.outbox.close()  # no producer left retrying 127.0.0.1:1
        consumer = streams_app.app.consumer
        assert isinstance(consumer, FastConsumer)
        return consumer.fetch_interval_s

    return asyncio.run(build())


def test_interval_from_the_settings(tmp_path: Path) -> None:
    settings = StreamsSettings(
        kafka_bootstrap="127.0.0.1:1", metrics_port=0, datadir=str(tmp_path), fetch_interval_ms=25
    )
    assert _interval(settings) == 0.025


def test_zero_fetches_again_at_once(tmp_path: Path) -> None:
    settings = StreamsSettings(
        kafka_bootstrap="127.0.0.1:1", metrics_port=0, datadir=str(tmp_path), fetch_interval_ms=0
    )
    assert _interval(settings) == 0.0
