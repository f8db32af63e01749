"""Every Kafka topic hqstream uses, with its partition count and configs.

This is the single source of truth: the local runner creates topics from it,
and a test checks that the Kubernetes KafkaTopic resources match it.
Never create topics anywhere else, and never rely on broker auto-create.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from schemas.exchange import DAY_MS
from schemas.timeframes import HIGHER, TIMEFRAMES, Timeframe

RAW: Final = "hq.ticks.raw"
NORMALIZED: Final = "hq.ticks.normalized"
DLQ: Final = "hq.ticks.dlq"
MARKET_STATS: Final = "hq.market.stats"
CANDLES_1M: Final = "hq.candles.1m"
#: closed bars of every timeframe, one topic each (``hq.candles.1m`` ... ``hq.candles.1d``)
CANDLES: Final[dict[Timeframe, str]] = {tf: f"hq.candles.{tf}" for tf in TIMEFRAMES}
ALERTS: Final = "hq.alerts"

#: the stream workers' consumer group (the gateway reads its lag)
STREAMS_GROUP: Final = "hqstream-streams"

#: What a feed quote line is: a Shanghai/Shenzhen ``$`` line or a Beijing JSON
#: line. The value of a raw record's ``format`` header.
LineKind = Literal["sse_szse", "bse_json"]
LINE_KINDS: Final[tuple[LineKind, ...]] = ("sse_szse", "bse_json")

# Headers the receiver puts on every hq.ticks.raw record (values are ASCII).
H_FORMAT: Final = "format"  # a LineKind
H_RECEIVE_TS: Final = "receive_ts"  # epoch ms when the line was read
H_SOURCE: Final = "source"  # feed address label, never the token

#: Record headers as hqstream builds them (values are bytes; typed as the Kafka
#: clients accept them, so a built list can be handed to ``produce`` as it is).
Headers = list[tuple[str, bytes | str | None]]


def raw_headers(kind: LineKind, receive_ts: int | bytes, source: bytes) -> Headers:
    """The headers of one ``hq.ticks.raw`` record (``receive_ts``: epoch ms, or its
    ASCII bytes when a caller stamps many records with one time)."""
    ts = receive_ts if isinstance(receive_ts, bytes) else str(receive_ts).encode()
    return [(H_FORMAT, kind.encode()), (H_RECEIVE_TS, ts), (H_SOURCE, source)]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic definition: name, partitions and topic-level configs."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    doc: str = ""


def topic_specs(partitions: int = 12) -> tuple[TopicSpec, ...]:
    """All topics. ``partitions`` is the tick topics' count (configuration)."""
    tick_configs = {
        "cleanup.policy": "delete",
        "retention.ms": str(3 * DAY_MS),
        "compression.type": "producer",
        "max.message.bytes": str(2 * 1024 * 1024),
    }
    return (
        TopicSpec(RAW, partitions, tick_configs, "raw feed lines, key = 6-digit code"),
        TopicSpec(NORMALIZED, partitions, tick_configs, "normalized quotes (Avro), key = code"),
        TopicSpec(
            DLQ,
            3,
            {"cleanup.policy": "delete", "retention.ms": str(14 * DAY_MS)},
            "bad records with raw bytes, reason and source position",
        ),
        TopicSpec(
            MARKET_STATS,
            1,
            {"retention.ms": str(DAY_MS), "cleanup.policy": "delete"},
            "per-market statistics, key = market",
        ),
        TopicSpec(
            CANDLES_1M,
            partitions,
            {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
            "closed 1-minute OHLCV candles with their indicators, key = code",
        ),
        *(
            TopicSpec(
                CANDLES[tf],
                partitions,
                {
                    "cleanup.policy": "delete",
                    "retention.ms": str((30 if tf == "1d" else 7) * DAY_MS),
                },
                f"closed {tf} bars with their indicators, key = code",
            )
            for tf in HIGHER
        ),
        TopicSpec(
            ALERTS,
            3,
            {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
            "quote alerts, key = code",
        ),
    )
