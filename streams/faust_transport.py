"""faust fast paths for the raw topic: a cheaper consumer loop and a no-op decode.

faust's ``Consumer._drain_messages`` delivers every fetched message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``:
two asyncio tasks and several event-loop turns per message, about a third
of a stream worker's CPU at 10k messages/s. :class:`FastConsumer` awaits the
callback directly while the flow is running and, like faust, drops a message
(no delivery, read offset still advanced: the consumer seeks back to the
committed offsets) when the flow is suspended for a rebalance. What
``wait_first`` also did, abandoning a delivery that is blocked on a full
buffer when a rebalance starts, it cannot; such a late message carries the
old ``generation_id``, and the agent (:mod:`streams.app`) skips events of an
old generation without acking them.

A topic registered in ``FastConsumer.direct`` (the raw topic: one agent, one
channel) skips the conductor: each fetched run of its messages is turned
into events and queued in one call (:func:`deliver_to`).

:class:`RawSchema` makes the raw topic's events straight from the message
(key and value stay bytes) instead of going through faust's codec registry
for the ``raw`` codec, which does the same thing at ~5 us per message.

Everything else (fetching, gaps, commits, rebalancing) is faust's own code.
This module must never change what is committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

logger = logging.getLogger(__name__)


class FastConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with a cheaper per-message delivery loop.

    ``direct[topic]``, when set, receives each fetched run of that topic's
    messages in one call instead of the conductor's per-message callback.
    """

    direct: dict[str, Callable[[list[Any]], Awaitable[None]]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct = {}

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - faust loop
        direct = self.direct
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        suspended = self.suspend_flow.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                await sleep(0)
                if not self.should_stop:
                    runs: dict[str, list[Any]] = {}
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if not suspended():
                                run = runs.get(message.topic)
                                if run is not None:
                                    run.append(message)
                                elif message.topic in direct:
                                    runs[message.topic] = [message]
                                else:
                                    await callback(message)
                            set_read_offset(tp, offset)
                    for topic, run in runs.items():
                        await direct[topic](run)
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                logger.info("broker stopped the consumer, shutting down")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class RawSchema(faust.Schema):  # type: ignore[type-arg]
    """Key and value as the raw bytes of the message, without the codec registry."""

    def compile(self, app: Any, **kwargs: Any) -> Any:
        event_cls = app.conf.Event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return event_cls(app, message.key, message.value, message.headers, message)

        return decode


class FastTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport using :class:`FastConsumer`."""

    Consumer = FastConsumer


def deliver_to(app: Any, queue: Any) -> Callable[[list[Any]], Coroutine[Any, Any, None]]:
    """A ``direct`` deliverer: each message as an event into ``queue`` (one channel's).

    What the conductor does per message, once per run: wait while the flow
    is suspended, make the event (raw key and value), block while the queue
    is full (that is the backpressure: the fetcher is drained no further).
    """
    event_cls = app.conf.Event
    flow_control = app.flow_control

    async def deliver(messages: list[Any]) -> None:
        await flow_control.acquire()
        for message in messages:
            event = event_cls(app, message.key, message.value, message.headers, message)
            if queue.full():
                await queue.put(event)
            else:
                queue.put_nowait(event)

    return deliver


def install(app: Any) -> None:
    """Make ``app`` consume through :class:`FastTransport`; call right after ``faust.App()``."""
    app.transport = FastTransport(app.conf.broker_consumer, cast(Any, app))
