"""Settings of the feed receiver (``hqstream produce``). Env prefix ``HQ_``."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from hqcore.settings import CommonSettings
from producers import protocol
from schemas import topics


def split_addr(addr: str, default_host: str | None = None) -> tuple[str, int]:
    """``host:port`` (``[::1]:7070`` for IPv6) -> ``(host, port)``; raises ValueError.

    The one host:port parser (the receiver's feed address, the simulator's listening
    address). ``default_host`` stands in for an empty host (``:7070``, a listening
    address); without it an empty host is an error.
    """
    host, sep, port = addr.rpartition(":")
    host = host.strip("[]") or (default_host or "")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port, got {addr!r}")
    return host, int(port)


class FeedSettings(CommonSettings):
    """The vendor feed (``HQ_FEED_ADDR``, ``HQ_FEED_TOKEN``): where the receiver connects
    and what token it sends; where the simulator listens and the token it requires."""

    feed_addr: str = Field("127.0.0.1:7070", description="vendor feed host:port")
    feed_token: SecretStr = Field(SecretStr(""), description="vendor token (secret)")


class ReceiverSettings(FeedSettings):
    """The receiver: where the feed is, how to talk to Kafka, how much to buffer."""

    feed_source: str = Field("vendor", description="label put in the `source` header")
    feed: str = Field(
        "",
        description="HQ_FEED: the entry of HQ_FEEDS this receiver reads (its address, token, "
        "source label; its journal in <journal_dir>/<feed>)",
    )
    raw_topic: str = Field("", description="default: <prefix>hq.ticks.raw")
    dlq_topic: str = Field("", description="default: <prefix>hq.ticks.dlq")

    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9101, ge=0, le=65535)

    socket_rcvbuf: int = Field(8 * 1024 * 1024, description="SO_RCVBUF bytes")
    heartbeat_timeout_s: float = Field(
        protocol.DEAD_AFTER_S, gt=0, description="nothing heard this long: the feed is dead"
    )
    connect_timeout_s: float = Field(10.0, gt=0)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)

    queue_max_bytes: int = Field(512 * 1024 * 1024, description="in-memory queue bound")
    journal_dir: Path = Field(Path(".run/journal"), description="on-disk spool when Kafka is down")
    journal_max_bytes: int = Field(2 * 1024 * 1024 * 1024, description="journal bound")
    journal_segment_bytes: int = Field(32 * 1024 * 1024)
    journal_fsync_ms: int = Field(
        200,
        ge=0,
        description="fdatasync the journal at most this often (0: after every batch); "
        "every batch is written to the OS at once whatever this is",
    )

    # Leader election (producers/lease.py): only the holder of this Lease
    # connects to the vendor. Empty name = no election (the local runner).
    lease_name: str = Field("", description="coordination.k8s.io/v1 Lease; empty = off")
    lease_namespace: str = Field("", description="default: the service account's namespace")
    lease_identity: str = Field("", description="this candidate (the pod name); default: host")
    lease_duration_s: float = Field(15.0, gt=0, description="a silent holder is replaced after")
    lease_renew_deadline_s: float = Field(10.0, gt=0, description="stop the feed when unrenewed")
    lease_retry_s: float = Field(2.0, gt=0, description="renew / retry period")
    kube_api_url: str = Field("https://kubernetes.default.svc", description="Kubernetes API")

    linger_ms: int = Field(
        5,
        ge=0,
        description="producer linger: a tick waits at most this long for the produce request "
        "that carries it (latency vs requests; docs/architecture.md, 'Cost per tick')",
    )
    linger_busy_ms: int = Field(
        20,
        ge=0,
        description="on a busy host (the receiver's main thread waits for a core) lines wait "
        "up to this long in all before they go to Kafka: fewer, larger produce requests "
        "(0 or not above linger_ms: never longer than linger_ms)",
    )
    batch_size: int = 1024 * 1024
    compression: str = "lz4"
    producer_delivery_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="message.timeout.ms: how long a record may wait for a Kafka ack "
        "before it is handed to the journal (a stalled broker)",
    )

    @model_validator(mode="after")
    def _chosen_feed(self) -> ReceiverSettings:
        if not self.feeds:
            if self.feed:
                raise ValueError(f"feed {self.feed!r} chosen but HQ_FEEDS lists no feeds")
            return self
        if not self.feed and len(self.feeds) > 1:
            names = ", ".join(f.name for f in self.feeds)
            raise ValueError(f"HQ_FEEDS lists several feeds ({names}): choose one with --feed")
        chosen = [f for f in self.feeds if f.name == (self.feed or self.feeds[0].name)]
        if not chosen:
            raise ValueError(f"feed {self.feed!r} is not in HQ_FEEDS")
        feed = chosen[0]
        split_addr(feed.addr)
        self.feed, self.feed_addr, self.feed_source = feed.name, feed.addr, feed.name
        self.feed_token = SecretStr(os.environ.get(feed.token_env, ""))  # the Secret's key
        self.journal_dir = self.journal_dir / feed.name  # each receiver its own spool
        return self

    @model_validator(mode="after")
    def _topic_names(self) -> ReceiverSettings:
        self.raw_topic = self.raw_topic or self.topic(topics.RAW)
        self.dlq_topic = self.dlq_topic or self.topic(topics.DLQ)
        return self

    @field_validator("feed_addr")
    @classmethod
    def _valid_addr(cls, value: str) -> str:
        if split_addr(value)[1] == 0:  # an address to connect to: port 0 is no port
            raise ValueError(f"expected host:port, got {value!r}")
        return value


@cache
def get_settings() -> ReceiverSettings:
    return ReceiverSettings()
