"""Keeps a stream worker process honest: it works, waits, or exits non-zero.

A worker must never be a live process that does nothing (Kubernetes and
``hqstream up`` only restart processes that exit). This module holds:

* :func:`wait_for_dependencies`: at start-up, wait (backoff, one log line per
  interval) until Kafka answers a metadata request and Redis a PING, instead
  of letting aiokafka's ``Unable to bootstrap`` end the process.
* :func:`fatal`: the one way out for a worker that cannot go on (its agent
  crashed, faust's recovery died, a rebalance never resumed the flow):
  ``/healthz`` turns 503 at once, then the worker stops as on SIGTERM (the
  batch in flight is drained, offsets are committed) and the process exits
  with :data:`EXIT_FATAL`; a hard ``os._exit`` backs that up.
* :func:`install_resume_streams`: faust's no-tables recovery step seeks the
  assigned partitions to their committed offsets under
  ``broker_request_timeout``; a timeout there ends faust's recovery loop for
  good (``wait_first`` reports it as *stopped*) and an error crashes it
  (faust-streaming issue #44), so the worker keeps its partitions, with its
  flow suspended, and processes nothing. The replacement retries the seek
  until it succeeds or a newer rebalance takes over.
* :class:`Watchdog`: once a second, checks the invariants above and calls
  :func:`fatal` when one is broken for too long.

Never acknowledges or commits anything itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from hqcore.redis_client import redacted, sync_client
from streams import metrics
from streams.settings import StreamsSettings

logger = logging.getLogger(__name__)

#: exit status of a worker that stopped because it could not go on (EX_SOFTWARE)
EXIT_FATAL = 70
#: /healthz shows the failure this long before the worker starts stopping
FATAL_STOP_DELAY_S = 1.0
#: a worker whose graceful stop hangs is ended this long after :func:`fatal`. After
#: an agent crash it always does: faust's supervisor, busy restarting the crashed
#: actor, never finishes stopping (seen with faust-streaming 0.15.3)
FATAL_HARD_EXIT_S = 20.0


def fatal(reason: str, exc: BaseException | None = None) -> None:
    """Mark this worker unhealthy and make the process exit with :data:`EXIT_FATAL`.

    Idempotent. Stops the worker as SIGTERM does (after :data:`FATAL_STOP_DELAY_S`
    so probes and scrapes can see ``/healthz`` fail first); if that has not
    ended the process within :data:`FATAL_HARD_EXIT_S`, ``os._exit`` does.
    """
    if metrics.HEALTH.fatal:
        return
    metrics.HEALTH.fatal = reason
    logger.critical(
        "worker cannot go on: %s; exiting with status %d so it is restarted",
        reason,
        EXIT_FATAL,
        exc_info=exc,
    )

    def stop() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def hard_exit() -> None:
        logger.critical("graceful stop took over %.0fs; exiting now", FATAL_HARD_EXIT_S)
        logging.shutdown()
        os._exit(EXIT_FATAL)

    for delay, action in ((FATAL_STOP_DELAY_S, stop), (FATAL_HARD_EXIT_S, hard_exit)):
        timer = threading.Timer(delay, action)
        timer.daemon = True
        timer.start()


# -- start-up ---------------------------------------------------------------------


def kafka_answers(bootstrap: str, timeout_s: float = 3.0) -> str | None:
    """``None`` when a broker of ``bootstrap`` answers a metadata request, else why not."""
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("hqstream.streams.kafka-probe")
    quiet.setLevel(logging.CRITICAL)
    try:
        config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": quiet}
        admin = AdminClient(config)
        md = admin.list_topics(timeout=timeout_s)
    except Exception as exc:
        return repr(exc)
    return None if md.brokers else "no broker in the metadata"


def redis_answers(url: str, timeout_s: float = 3.0) -> str | None:
    """``None`` when Redis (one server or a cluster) at ``url`` answers PING, else why not."""
    client = None
    try:  # a cluster client connects (to learn the slots) when it is made
        client = sync_client(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        client.ping()
    except Exception as exc:
        return repr(exc)
    finally:
        if client is not None:
            client.close()
    return None


def wait_for_dependencies(
    settings: StreamsSettings,
    *,
    probes: dict[str, Callable[[], str | None]] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Block until Kafka and Redis both answer; returns the seconds waited. Never raises.

    Retries with exponential backoff up to ``dependency_retry_max_s`` and logs
    one line per ``dependency_log_every_s`` (plus one when everything answers).
    """
    if probes is None:
        probes = {
            f"kafka {settings.kafka_bootstrap}": lambda: kafka_answers(settings.kafka_bootstrap),
            f"redis {redacted(settings.redis_url)}": lambda: redis_answers(settings.redis_url),
        }
    started = clock()
    next_log = started
    attempt = 0
    while True:
        down = {name: why for name, probe in probes.items() if (why := probe()) is not None}
        if not down:
            if attempt:
                logger.warning(
                    "dependencies answer after %.1fs (%d attempts); starting",
                    clock() - started,
                    attempt + 1,
                )
            return clock() - started
        attempt += 1
        now = clock()
        if now >= next_log:
            logger.warning(
                "waiting for %s (%.0fs so far, attempt %d; retrying with backoff): %s",
                " and ".join(down),
                now - started,
                attempt,
                "; ".join(down.values()),
            )
            next_log = now + settings.dependency_log_every_s
        sleep(min(settings.dependency_retry_max_s, 0.2 * 2 ** min(attempt - 1, 10)))


# -- rebalances -------------------------------------------------------------------


def install_resume_streams(app: Any) -> None:
    """Replace faust's no-tables recovery step by one whose seek cannot end recovery.

    Same steps and order as faust's ``Recovery._resume_streams`` (0.15.3):
    resume the assigned partitions, seek them to the committed offsets, resume
    the flow, start the fetcher. The seek is retried (backoff, a warning per
    failure) until it succeeds; a newer rebalance still interrupts it
    (``RebalanceAgain``, as in faust) and a stopping worker ends it.
    """
    from faust.tables.recovery import RebalanceAgain, ServiceStopped

    recovery = app.tables.recovery
    timeout = app.conf.broker_request_timeout

    async def seek_to_committed(consumer: Any, generation_id: int) -> bool:
        attempt = 0
        while True:
            seek = consumer.perform_seek()
            try:
                result = await recovery.wait_first(
                    seek, recovery.signal_recovery_start, timeout=timeout
                )
            except Exception as exc:  # what perform_seek raised
                why = repr(exc)
            else:
                if recovery.signal_recovery_start in result.done:
                    raise RebalanceAgain()
                if seek in result.done:
                    return True
                if recovery.should_stop:
                    raise ServiceStopped()
                why = f"no answer within {timeout:.0f}s"
            if app.consumer_generation_id != generation_id:
                return False
            attempt += 1
            delay = min(5.0, 0.2 * 2 ** min(attempt - 1, 10))
            logger.warning(
                "seek to the committed offsets failed (%s); retry %d in %.1fs", why, attempt, delay
            )
            await asyncio.sleep(delay)

    async def resume_streams(generation_id: int = 0) -> None:
        consumer = app.consumer
        await app.on_rebalance_complete.send()
        if app.consumer_generation_id != generation_id:
            logger.info("recovery: rebalancing again (generation %s)", app.consumer_generation_id)
            return
        assignment = consumer.assignment()
        if assignment:
            consumer.resume_partitions(assignment)
            if not await seek_to_committed(consumer, generation_id):
                return
        recovery.completed.set()
        app.flow_control.resume()
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        app.tables.on_actives_ready()
        app.tables.on_standbys_ready()
        app.on_rebalance_end()
        logger.info("flow resumed on %d partitions (generation %s)", len(assignment), generation_id)

    recovery._resume_streams = resume_streams


class Watchdog:
    """Once a second: is this worker able to make progress? If not for too long, :func:`fatal`.

    Broken when faust's recovery service crashed (nothing will ever resume
    the flow), or when the flow has stayed suspended (a rebalance that never
    finished) for ``stall_exit_s``. A Redis or Kafka outage is not a stall by
    itself: the batch in flight is retried and the consumer reconnects; only
    a revocation waiting on such an outage keeps the flow suspended, and a
    restarted worker waits for its dependencies at start-up anyway.
    """

    def __init__(self, app: Any, stall_exit_s: float, clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.stall_exit_s = stall_exit_s
        self.clock = clock
        self.suspended_since: float | None = None

    def check(self) -> str | None:
        """Why this worker cannot go on, or ``None``; calls :func:`fatal` for it."""
        app = self.app
        recovery = app.tables.recovery
        reason: str | None = None
        if recovery.crashed:
            reason = f"faust's recovery service crashed: {recovery.crash_reason!r}"
        elif self._flow_active():
            self.suspended_since = None
        else:
            now = self.clock()
            if self.suspended_since is None:
                self.suspended_since = now
            elif now - self.suspended_since >= self.stall_exit_s:
                reason = (
                    f"consumer flow suspended for {now - self.suspended_since:.0f}s "
                    "(a rebalance never resumed it)"
                )
        if reason is not None:
            fatal(reason)
        return reason

    def _flow_active(self) -> bool:
        app = self.app
        if not app.consumer.assignment():
            return True  # nothing assigned: nothing to process
        return bool(app.flow_control.is_active() and app.consumer.flow_active)
