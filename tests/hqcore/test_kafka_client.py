"""Kafka client settings: PLAINTEXT stays minimal, SASL_SSL is complete; a close is bounded."""

from __future__ import annotations

import ssl
import threading

import pytest
from pydantic import SecretStr

from hqcore.kafka_client import (
    KafkaClientConfigError,
    aiokafka_kwargs,
    close_within,
    librdkafka_config,
)
from hqcore.settings import CommonSettings


def _settings(**kw: object) -> CommonSettings:
    return CommonSettings.model_validate({"kafka_bootstrap": "k:9093", **kw})


def test_plaintext_default_is_just_the_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HQ_KAFKA_SECURITY_PROTOCOL", "HQ_KAFKA_SASL_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    s = _settings()
    assert librdkafka_config(s) == {"bootstrap.servers": "k:9093"}
    assert aiokafka_kwargs(s) == {"bootstrap_servers": "k:9093", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HQ_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HQ_KAFKA_SASL_USERNAME", "hq-producer")
    monkeypatch.setenv("HQ_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("HQ_KAFKA_SSL_CA_LOCATION", "/etc/hqstream/kafka-ca/ca.crt")
    s = CommonSettings()
    assert librdkafka_config(s) == {
        "bootstrap.servers": s.kafka_bootstrap,
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "hq-producer",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/hqstream/kafka-ca/ca.crt",
    }
    assert "s3cret" not in repr(s)


def test_aiokafka_gets_a_verifying_context() -> None:
    s = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="hq-streams",
        kafka_sasl_password=SecretStr("pw"),
    )
    kw = aiokafka_kwargs(s)
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "hq-streams"
    assert kw["sasl_plain_password"] == "pw"
    context = kw["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_sasl_without_credentials_is_refused() -> None:
    s = _settings(kafka_security_protocol="SASL_SSL")
    with pytest.raises(KafkaClientConfigError, match="HQ_KAFKA_SASL_USERNAME"):
        librdkafka_config(s)
    with pytest.raises(KafkaClientConfigError):
        aiokafka_kwargs(s)


def test_unknown_protocol_is_a_settings_error() -> None:
    with pytest.raises(ValueError):
        _settings(kafka_security_protocol="SASL_PLAIN")


async def test_a_close_that_hangs_is_left_behind(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    try:
        await close_within(release.wait, "a stuck client", timeout_s=0.05)
    finally:
        release.set()
    assert "a stuck client did not close within" in caplog.text


async def test_a_close_that_fails_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise RuntimeError("Handle has been closed")

    await close_within(fail, "a closed client", timeout_s=5)
    assert "closing a closed client failed: RuntimeError" in caplog.text


async def test_a_close_is_awaited_until_it_is_done() -> None:
    closed: list[str] = []
    await close_within(lambda: closed.append(threading.current_thread().name), "a client")
    assert closed == ["close a client"]  # done by then, in a thread of its own
