"""Dead-letter records of the streams stage, in the format of :mod:`schemas.dlq`.

The DLQ record's value is the raw bytes exactly as read from ``hq.ticks.raw``;
the key is the source key (the code, when the receiver could read one); reason,
detail and the source position travel in headers. This module only builds
records: it never produces them and never drops one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from schemas import dlq
from schemas.dlq import DlqReason

logger = logging.getLogger(__name__)

MAX_DETAIL = 300


@dataclass(frozen=True, slots=True)
class DlqRecord:
    """One dead-lettered record, ready to produce."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: DlqReason


def dlq_record(
    *,
    key: bytes | None,
    value: bytes,
    reason: DlqReason,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    now_ms: int,
) -> DlqRecord:
    """The DLQ record for a raw record that failed in the streams stage."""
    headers = [
        (dlq.REASON, reason.encode()),
        (dlq.DETAIL, detail[:MAX_DETAIL].encode("utf-8", "replace")),
        (dlq.STAGE, b"streams"),
        (dlq.SOURCE_TOPIC, topic.encode()),
        (dlq.SOURCE_PARTITION, str(partition).encode()),
        (dlq.SOURCE_OFFSET, str(offset).encode()),
        (dlq.TS, str(now_ms).encode()),
    ]
    return DlqRecord(key=key or None, value=value, headers=headers, reason=reason)


def headers_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Decode a DLQ record's headers (for tests and tools)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers or []}
