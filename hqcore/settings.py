"""Settings shared by every hqstream service.

Each service has one settings class that subclasses :class:`CommonSettings`
(env prefix ``HQ_``) and is read through a cached ``get_settings()``.
Environment variables are read nowhere else.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from hqcore.event_loop import EventLoop
from schemas.feeds import FeedConfig

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


def env_alias(prefix: str, name: str, *extra: str) -> AliasChoices:
    """Let a field be read from the environment as ``<prefix><NAME>`` only.

    A service's own fields live under a longer prefix (``HQ_GATEWAY_``,
    ``HQ_STREAMS_``) than the shared ``HQ_`` one, so each needs an explicit alias.
    ``extra`` names (for example a shared ``HQ_TOPIC_PREFIX``) are tried after the
    prefixed name; the first one set wins. Every name must start with ``HQ_``:
    a bare ``PORT``, ``HOST`` or ``STATIC_DIR`` set for something else must never
    configure hqstream. In code a field is still set by its own name
    (``validate_by_name`` in :class:`CommonSettings`).
    """
    names = (f"{prefix}{name.upper()}", *extra)
    for env_name in names:
        if not env_name.startswith("HQ_"):
            raise ValueError(f"{env_name!r}: hqstream reads only HQ_ environment variables")
    return AliasChoices(*names)


class CommonSettings(BaseSettings):
    """Where Kafka and Redis are, and how many partitions the tick topics have."""

    # validate_by_name: code may pass a field by its name; the environment is
    # read only through the HQ_ names (env_prefix, or env_alias's).
    model_config = SettingsConfigDict(env_prefix="HQ_", extra="ignore", validate_by_name=True)

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL")
    partitions: int = Field(12, ge=1, le=1024, description="partitions of the tick topics")
    schema_registry_url: str | None = Field(
        None, description="Confluent schema registry; unset = Avro single-object encoding"
    )
    log_level: str = "INFO"
    event_loop: EventLoop = Field(
        "uvloop", description="HQ_EVENT_LOOP: uvloop | asyncio (the standard library's)"
    )
    feeds: list[FeedConfig] = Field(
        default_factory=list,
        description="HQ_FEEDS: the vendor feeds, a JSON list (schemas/feeds.py); "
        "empty = one feed from HQ_FEED_ADDR / HQ_FEED_TOKEN",
    )
    topic_prefix: str = Field(
        "", description="prepended to every topic name (HQ_TOPIC_PREFIX; tests: a uuid)"
    )

    # How clients authenticate to Kafka. The defaults (PLAINTEXT, no user) are
    # what the local runner's broker speaks; Kubernetes sets SASL_SSL +
    # SCRAM-SHA-512, the component's KafkaUser and the cluster CA (docs/deploy.md).
    # Build client configs with hqcore.kafka_client, never by hand.
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"
    )
    kafka_sasl_mechanism: KafkaSaslMechanism = "SCRAM-SHA-512"
    kafka_sasl_username: str = Field("", description="the component's KafkaUser")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="its password (secret)")
    kafka_ssl_ca_location: str | None = Field(
        None, description="PEM file of the CA that signed the brokers' certificates"
    )

    def topic(self, base: str) -> str:
        """A topic of :mod:`schemas.topics` (``base``) as named in this deployment."""
        return f"{self.topic_prefix}{base}"
