"""Types of the compiled paths (native/src/): streams.native_parse, api.kafka_feed,
streams.redis_lua, schemas.indicators, schemas.avro_compiler, streams.alerts."""

from collections.abc import Callable
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
    def parse_avro(
        self, raw: bytes, receive_ts: int, process_ts: int, max_ahead_ms: int | None = None
    ) -> tuple[str, int, float, int, bytes] | None: ...

class QuoteMaker:
    def __init__(self, header: bytes) -> None: ...
    def make(
        self, payloads: list[bytes]
    ) -> tuple[list[dict[str, Any] | None], list[bytes | None]]: ...

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

class RecordEncoder:
    """schemas.avro_compiler's encoders compiled (native/src/record_encoder.rs)."""

    def __init__(self, schema: dict[str, Any], prefix: bytes = b"") -> None: ...
    def __call__(self, record: dict[str, Any]) -> bytes: ...

class AlertWindows:
    """streams.alerts.AlertDetector compiled (native/src/alerts.rs)."""

    replays: int
    suspended: int
    cooled_down: int
    def __init__(
        self,
        make: Callable[[dict[str, Any], str, tuple[Any, ...]], Any],
        windows: tuple[int, int, int, int],
        sessions: tuple[int, int, int, int, int, int, int],
        fast_move_pct: float,
        volume_spike_ratio: float,
        volume_min_shares: int,
        max_points: int,
    ) -> None: ...
    def update(self, quote: dict[str, Any]) -> list[Any]: ...
    def forget(self, codes: list[str]) -> None: ...
    def held(self, code: str) -> tuple[int, int, int, int] | None: ...
    def __len__(self) -> int: ...
