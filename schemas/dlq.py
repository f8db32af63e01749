"""The dead-letter topic's record format, shared by the receiver and the streams.

A DLQ record's value is the offending raw bytes, unchanged; its key is the
stock code when one could be read, else empty. Everything else travels in
headers (the Kafka Connect DLQ convention), all UTF-8:

* ``hq.dlq.reason``: one of :data:`DlqReason` (``journal_corrupt``: bytes of the
  receiver's on-disk journal that failed their CRC or framing; the value is
  those bytes, a record's header included, in pieces of at most 256 KiB)
* ``hq.dlq.detail``: a human sentence (never contains secrets)
* ``hq.dlq.stage``: ``receiver`` or ``streams``
* ``hq.dlq.source.topic`` / ``.partition`` / ``.offset``: where it came from
  (absent for the receiver, which reads a socket, not a topic)
* ``hq.dlq.ts``: epoch ms when it was dead-lettered
"""

from __future__ import annotations

from typing import Final, Literal

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
]

REASON: Final = "hq.dlq.reason"
DETAIL: Final = "hq.dlq.detail"
STAGE: Final = "hq.dlq.stage"
SOURCE_TOPIC: Final = "hq.dlq.source.topic"
SOURCE_PARTITION: Final = "hq.dlq.source.partition"
SOURCE_OFFSET: Final = "hq.dlq.source.offset"
TS: Final = "hq.dlq.ts"
