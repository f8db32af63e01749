"""Prometheus metrics of the gateway (the process-wide default registry).

Defined once at import; never label by API key or anything secret.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter("hq_gateway_consumed_total", "Kafka records consumed", ["kind"])
DECODE_ERRORS = Counter("hq_gateway_decode_errors_total", "records that failed to decode")
WS_CONNECTIONS = Gauge("hq_gateway_ws_connections", "open WebSocket connections")
WS_MESSAGES_SENT = Counter("hq_gateway_ws_messages_total", "WebSocket messages sent")
WS_CLOSED_SLOW = Counter("hq_gateway_ws_slow_closed_total", "clients closed with 4008")
WS_ERRORS = Counter("hq_gateway_ws_errors_total", "error messages sent to clients", ["code"])
REPLAYS = Counter("hq_gateway_replays_total", "replays served")
DISPATCH_SECONDS = Histogram(
    "hq_gateway_dispatch_seconds",
    "time to route one consumed batch to subscribers",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1),
)
OPEN_BAR_READS = Counter(
    "hq_gateway_open_bar_reads_total",
    "stocks whose open bars were read from Redis for candle subscribers",
)
OPEN_BAR_BEHIND = Counter(
    "hq_gateway_open_bar_behind_total",
    "open-bar reads that found Redis behind the routed quote (read again next round)",
)
