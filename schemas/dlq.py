"""The dead-letter topic's record format, shared by the receiver and the streams.

A DLQ record's value is the offending raw bytes, unchanged; its key is the
stock code when one could be read, else empty. Everything else travels in
headers (the Kafka Connect DLQ convention), all UTF-8:

* ``hq.dlq.reason``: one of :data:`DlqReason`. ``journal_corrupt``: bytes of
  the receiver's on-disk journal that failed their CRC or framing (the value is
  those bytes, a record's header included, in pieces of at most 256 KiB);
  ``out_of_range``: a number no real quote reaches (bounds in
  :mod:`streams.parse`); ``future_timestamp``: stamped further after its
  receive time than the streams allow; ``unprocessable``: anything else that
  failed on this one record (the detail starts with the exception class)
* ``hq.dlq.detail``: a human sentence (never contains secrets)
* ``hq.dlq.stage``: ``receiver`` or ``streams``
* ``hq.dlq.source.topic`` / ``.partition`` / ``.offset``: where it came from
  (absent for the receiver, which reads a socket, not a topic)
* ``hq.dlq.ts``: epoch ms when it was dead-lettered
"""

from __future__ import annotations

from typing import Final, Literal

from schemas.topics import Headers

DlqReason = Literal[
    "line_too_long",
    "invalid_utf8",
    "wrong_field_count",
    "not_a_number",
    "invalid_json",
    "bad_symbol",
    "negative_value",
    "high_below_low",
    "bad_datetime",
    "missing_field",
    "encode_error",
    "journal_corrupt",
    "out_of_range",
    "future_timestamp",
    "unprocessable",
]

REASON: Final = "hq.dlq.reason"
DETAIL: Final = "hq.dlq.detail"
STAGE: Final = "hq.dlq.stage"
SOURCE_TOPIC: Final = "hq.dlq.source.topic"
SOURCE_PARTITION: Final = "hq.dlq.source.partition"
SOURCE_OFFSET: Final = "hq.dlq.source.offset"
TS: Final = "hq.dlq.ts"

DlqStage = Literal["receiver", "streams"]
#: a detail sentence is cut to this many characters
MAX_DETAIL: Final = 300


def dlq_headers(
    *,
    reason: DlqReason,
    detail: str,
    stage: DlqStage,
    ts_ms: int | bytes,
    source: tuple[str, int, int] | None = None,
) -> Headers:
    """The headers of one DLQ record (the format above), in this order: reason,
    detail, stage, the source ``(topic, partition, offset)`` when there is one, ts.

    ``ts_ms``: epoch ms, or its ASCII bytes. A stage adds its own headers after
    these (the receiver: the raw topic's ``receive_ts`` and ``source``).
    """
    headers: Headers = [
        (REASON, reason.encode()),
        (DETAIL, detail[:MAX_DETAIL].encode("utf-8", "replace")),
        (STAGE, stage.encode()),
    ]
    if source is not None:
        topic, partition, offset = source
        headers += [
            (SOURCE_TOPIC, topic.encode()),
            (SOURCE_PARTITION, str(partition).encode()),
            (SOURCE_OFFSET, str(offset).encode()),
        ]
    headers.append((TS, ts_ms if isinstance(ts_ms, bytes) else str(ts_ms).encode()))
    return headers
