"""Dead-letter records of the streams stage, in the format of :mod:`schemas.dlq`.

The DLQ record's value is the raw bytes exactly as read from ``hq.ticks.raw``;
the key is the source key (the code, when the receiver could read one); reason,
detail and the source position travel in headers. This module only builds
records: it never produces them and never drops one.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.dlq import DlqReason, dlq_headers
from schemas.topics import Headers


@dataclass(frozen=True, slots=True)
class DlqRecord:
    """One dead-lettered record, ready to produce."""

    key: bytes | None
    value: bytes
    headers: Headers
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
    headers = dlq_headers(
        reason=reason,
        detail=detail,
        stage="streams",
        ts_ms=now_ms,
        source=(topic, partition, offset),
    )
    return DlqRecord(key=key or None, value=value, headers=headers, reason=reason)
