"""The stream worker's Kafka clients take TLS/SASL from the shared settings."""

from __future__ import annotations

import faust
import pytest

from hqcore.kafka_client import KafkaClientConfigError
from streams.app import broker_credentials
from streams.settings import StreamsSettings


def test_plaintext_needs_no_credentials() -> None:
    assert broker_credentials(StreamsSettings()) is None


def test_sasl_scram_for_faust_from_the_same_settings() -> None:
    settings = StreamsSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="hq-streams",
        kafka_sasl_password="s3cret",  # type: ignore[arg-type]
    )
    creds = broker_credentials(settings)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.username == "hq-streams" and creds.password == "s3cret"
    assert str(creds.mechanism.value) == "SCRAM-SHA-512"


def test_sasl_without_a_user_is_refused_at_start() -> None:
    with pytest.raises(KafkaClientConfigError):
        broker_credentials(StreamsSettings(kafka_security_protocol="SASL_SSL"))
