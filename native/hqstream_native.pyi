"""Types of the compiled paths (native/src/lib.rs, indicators.rs): streams.native_parse, api.kafka_feed,
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

class IndicatorState:
    """schemas.indicators.IndicatorState compiled (native/src/indicators.rs)."""

    def __init__(self) -> None: ...
    @property
    def bars(self) -> int: ...
    def close(self, bar: dict[str, Any], intraday: bool = True) -> dict[str, float | None]: ...
    def peek(self, bar: dict[str, Any], intraday: bool = True) -> dict[str, float | None]: ...
    def to_json(self) -> dict[str, Any]: ...
    def dumps(self) -> bytes: ...
    @staticmethod
    def from_json(data: dict[str, Any]) -> IndicatorState: ...
