"""Types of the compiled Quote paths (native/src/lib.rs): streams.native_parse, api.kafka_feed,
streams.redis_lua."""

from types import ModuleType
from typing import Any, Final

__version__: Final[str]
#: the Quote's fields in order, with their Avro types (``type``, ``enum:A,B``, ``array:T``)
QUOTE_FIELDS: Final[list[tuple[str, str]]]

class QuoteParser:
    def __init__(self, header: bytes, rules: ModuleType, bounds: ModuleType) -> None: ...
    def parse(
        self, raw: bytes, receive_ts: int, process_ts: int, max_ahead_ms: int | None = None
    ) -> tuple[dict[str, Any], bytes, bytes] | None: ...

class QuoteJsonWriter:
    def __init__(self, header: bytes) -> None: ...
    def write(self, payload: bytes) -> tuple[str, str, int, bytes] | None: ...

def quote_chunks(
    quotes: list[tuple[dict[str, Any], int]],
    data: list[bytes],
    max_ticks: int,
    quote_key: tuple[str, str],
    ticks_key: tuple[str, str],
) -> list[tuple[list[str], bytes, list[bytes]]]: ...
