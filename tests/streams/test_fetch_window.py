"""The workers' fetch window (``HQ_STREAMS_FETCH_MIN_BYTES`` / ``_FETCH_MAX_WAIT_MS``)
reaches the aiokafka consumer faust creates, which faust itself never passes on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from streams.app import create_app
from streams.faust_transport import FastConsumer, WindowedConsumerThread
from streams.settings import StreamsSettings


def _aiokafka_consumer(settings: StreamsSettings) -> Any:
    async def build() -> Any:
        app = create_app(settings, worker_id="fetch-window").app
        consumer = app.consumer
        assert isinstance(consumer, FastConsumer)
        thread = consumer._thread
        assert isinstance(thread, WindowedConsumerThread)
        aio = thread._create_worker_consumer(app.transport)
        await aio.stop()  # never started: releases nothing but the object
        return aio

    return asyncio.run(build())


def test_window_from_the_settings(tmp_path: Path) -> None:
    settings = StreamsSettings(
        kafka_bootstrap="127.0.0.1:1", metrics_port=0, datadir=str(tmp_path),
        fetch_min_bytes=65536, fetch_max_wait_ms=25,
    )  # fmt: skip
    aio = _aiokafka_consumer(settings)
    assert (aio._fetch_min_bytes, aio._fetch_max_wait_ms) == (65536, 25)


def test_defaults(tmp_path: Path) -> None:
    aio = _aiokafka_consumer(
        StreamsSettings(kafka_bootstrap="127.0.0.1:1", metrics_port=0, datadir=str(tmp_path))
    )
    defaults = StreamsSettings()
    assert (aio._fetch_min_bytes, aio._fetch_max_wait_ms) == (
        defaults.fetch_min_bytes,
        defaults.fetch_max_wait_ms,
    )
