"""Prometheus metrics of the receiver; names are part of the gateway's contract."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTED = Gauge("hq_receiver_connected", "1 while an authenticated feed connection is up")
FEED_INFO = Gauge("hq_receiver_feed_info", "the feed this receiver reads (always 1)", ["source"])
LAST_DATA = Gauge("hq_receiver_last_data_seconds", "Unix time of the last bytes from the feed")
LINES = Counter("hq_receiver_lines_total", "feed lines received", ["format"])
BYTES = Counter("hq_receiver_bytes_total", "feed bytes received")
HEARTBEATS = Counter("hq_receiver_heartbeats_total", "heartbeats received")
RECONNECTS = Counter("hq_receiver_reconnects_total", "connection attempts after the first")
PRODUCED = Counter("hq_receiver_produced_total", "records acknowledged by Kafka", ["topic"])
DELIVERY_ERRORS = Counter(
    "hq_receiver_delivery_errors_total", "records Kafka failed to acknowledge (re-journaled)"
)
DLQ = Counter("hq_receiver_dlq_total", "lines sent to the dead-letter topic", ["reason"])
DROPPED = Counter(
    "hq_receiver_dropped_total", "lines lost because every buffer was full (loud)", ["reason"]
)
QUEUE_DEPTH = Gauge("hq_receiver_queue_bytes", "bytes waiting in the in-memory queue")
JOURNAL_BYTES = Gauge("hq_receiver_journal_bytes", "bytes spooled in the on-disk journal")
JOURNALED = Counter("hq_receiver_journaled_total", "records written to the journal")
REPLAY_SKIPPED = Counter(
    "hq_receiver_replay_skipped_total",
    "journaled records not replayed: the broker had written them before it went away "
    "(counted in hq_receiver_produced_total too)",
)
JOURNAL_CORRUPT = Counter(
    "hq_receiver_journal_corrupt_total",
    "journal stretches that were not a valid record (CRC, framing, torn tail); sent to the DLQ",
)
KAFKA_UP = Gauge("hq_receiver_kafka_up", "1 while the producer reaches the brokers")
INFLIGHT = Gauge("hq_receiver_kafka_inflight", "records handed to the producer, not yet acked")
CORE_WAIT = Gauge(
    "hq_receiver_core_wait_ratio",
    "share of the last 2 s the receiver's main thread waited for a core (how busy the host is)",
)
PRODUCE_HOLD = Gauge(
    "hq_receiver_produce_hold_seconds",
    "how long lines wait for more before they go to librdkafka, on a busy host (0: idle host)",
)
ACK_LATENCY = Histogram(
    "hq_receiver_ack_latency_seconds",
    "receive -> Kafka ack latency (sampled)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
WAL_ERRORS = Counter(
    "hq_receiver_wal_errors_total",
    "failed writes of the write-ahead log (lines still forwarded, but not crash-safe)",
)
WAL_RECOVERED = Counter(
    "hq_receiver_wal_recovered_total",
    "lines a killed receiver had read but Kafka had not acknowledged, found in the "
    "write-ahead log at start-up (journaled and checked against Kafka)",
)
