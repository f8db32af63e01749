"""Security settings of every Kafka client, built from :class:`CommonSettings`.

One place turns ``HQ_KAFKA_SECURITY_PROTOCOL``, ``HQ_KAFKA_SASL_*`` and
``HQ_KAFKA_SSL_CA_LOCATION`` into client options, for both client libraries:

* :func:`librdkafka_config` -> keys for confluent-kafka ``Producer``,
  ``Consumer`` and ``AdminClient`` (merge it into the client's dict);
* :func:`aiokafka_kwargs` -> keyword arguments for aiokafka clients (faust:
  ``faust.SASLCredentials(username=..., password=..., mechanism=...,
  ssl_context=...)`` from the same values).

With the defaults (PLAINTEXT) both return ``{"bootstrap.servers": ...}`` /
``{"bootstrap_servers": ...}`` only, so the local runner needs nothing.
This module never logs or formats the password into a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

from hqcore.settings import CommonSettings

logger = logging.getLogger(__name__)


class KafkaClientConfigError(ValueError):
    """The Kafka security settings are inconsistent (e.g. SASL without a user)."""


def _uses_sasl(settings: CommonSettings) -> bool:
    return settings.kafka_security_protocol.startswith("SASL_")


def _uses_tls(settings: CommonSettings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def _check(settings: CommonSettings) -> None:
    if _uses_sasl(settings) and not (
        settings.kafka_sasl_username and settings.kafka_sasl_password.get_secret_value()
    ):
        raise KafkaClientConfigError(
            f"HQ_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
            "HQ_KAFKA_SASL_USERNAME and HQ_KAFKA_SASL_PASSWORD"
        )


def librdkafka_config(settings: CommonSettings) -> dict[str, Any]:
    """``bootstrap.servers`` plus the security keys, for confluent-kafka clients."""
    _check(settings)
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol.lower(),
    }
    if _uses_sasl(settings):
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username
        conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if _uses_tls(settings) and settings.kafka_ssl_ca_location:
        conf["ssl.ca.location"] = settings.kafka_ssl_ca_location
    if settings.kafka_security_protocol == "PLAINTEXT":
        del conf["security.protocol"]  # librdkafka's default; keeps local configs minimal
    return conf


def ssl_context(settings: CommonSettings) -> ssl.SSLContext | None:
    """A verifying TLS context trusting ``HQ_KAFKA_SSL_CA_LOCATION`` (None without TLS)."""
    if not _uses_tls(settings):
        return None
    return ssl.create_default_context(cafile=settings.kafka_ssl_ca_location)


def aiokafka_kwargs(settings: CommonSettings) -> dict[str, Any]:
    """``bootstrap_servers`` plus the security keyword arguments, for aiokafka clients."""
    _check(settings)
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if _uses_sasl(settings):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    return kwargs


async def close_within(close: Callable[[], None], what: str, timeout_s: float = 10.0) -> None:
    """Run ``close`` (a librdkafka close or destroy) in a daemon thread; wait ``timeout_s`` at most.

    ``rd_kafka_destroy`` can block for good (librdkafka#1640, #3143), and a
    client freed by the garbage collector is destroyed on whatever thread
    collects it. Closing explicitly here keeps that out of the event loop, and
    a daemon thread cannot hold up the process's exit: a hang is logged and
    left behind instead of stopping the caller.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[BaseException | None] = loop.create_future()

    def finish(outcome: BaseException | None) -> None:
        if not done.done():
            done.set_result(outcome)

    def run() -> None:
        outcome: BaseException | None = None
        try:
            close()
        except Exception as exc:
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(finish, outcome)

    threading.Thread(target=run, name=f"close {what}", daemon=True).start()
    try:
        outcome = await asyncio.wait_for(asyncio.shield(done), timeout_s)
    except TimeoutError:
        logger.warning("%s did not close within %.0f s; left closing in the background",
                       what, timeout_s)  # fmt: skip
        return
    if outcome is not None:
        logger.warning("closing %s failed: %r", what, outcome)
