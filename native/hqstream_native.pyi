"""Types of the compiled fast path (native/src/lib.rs); streams.native_parse uses it."""

from collections.abc import Callable
from typing import Any, Final

__version__: Final[str]
#: the Quote's fields in order, with their Avro types (``type``, ``enum:A,B``, ``array:T``)
QUOTE_FIELDS: Final[list[tuple[str, str]]]

class QuoteParser:
    def __init__(
        self,
        *,
        header: bytes,
        board_or_none: Callable[[str, str], str | None],
        name_is_st: Callable[[str], bool],
        name_is_limit_free: Callable[[str, str, str], bool],
        limits: Callable[[float, str, bool, str], tuple[float, float, int, int]],
        local_midnight_ms: Callable[[str], int],
        time_of_day_ms: Callable[[str], int],
        phase_of: Callable[[int], str],
        max_price: float,
        min_prev_close: float,
        max_volume: int,
        max_amount: float,
        opening_ms: int,
        closing_ms: int,
    ) -> None: ...
    def parse(
        self, raw: bytes, receive_ts: int, process_ts: int, max_ahead_ms: int | None = None
    ) -> tuple[dict[str, Any], bytes] | None: ...
