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

import ssl
from typing import Any

from hqcore.settings import CommonSettings


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
