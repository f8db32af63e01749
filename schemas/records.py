"""Vocabularies inside hqstream's records: the Avro enums as ``Literal`` types.

The ``.avsc`` files under ``schemas/avro/`` are the wire truth; the types here
name their enum symbols for Python code (the workers that make the records,
the gateway that validates them) and tests/schemas checks they stay equal.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

#: A normalized quote (``io.hqstream.v1.Quote``, quote.v2.avsc) as the stream workers
#: parse it: a dict, which the Avro encoder and orjson take as it is. What the workers
#: derive from quotes are typed values (streams/candles.py, alerts.py, market_stats.py).
Quote = dict[str, Any]

#: ``io.hqstream.v1.AlertKind`` (alert.v1.avsc)
AlertKind = Literal[
    "LIMIT_UP_TOUCH",
    "LIMIT_UP_LEAVE",
    "LIMIT_DOWN_TOUCH",
    "LIMIT_DOWN_LEAVE",
    "FAST_MOVE",
    "VOLUME_SPIKE",
]
ALERT_KINDS: Final[tuple[AlertKind, ...]] = get_args(AlertKind)
