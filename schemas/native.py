"""Whether the compiled Quote paths (the ``hqstream_native`` extension, ``native/``) may serve
the quotes of a codec: it must be installed, allowed, and built for this code and schema.

The extension must be the version this code was written for
(:data:`NATIVE_VERSION`, native/Cargo.toml's). It reads and writes quote.v2's
layout (its ``QUOTE_FIELDS``) in the Avro single-object encoding; with the
schema registry's wire format, or a ``.avsc`` that differs from its layout,
the Python paths serve (they are the reference either way). Used by the
stream workers (:mod:`streams.native_parse`) and the gateway
(:mod:`api.kafka_feed`). Never does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

from schemas.serde import Codec, SingleObjectCodec, schema_json

#: the extension's version this code calls (native/Cargo.toml): another one built
#: from other sources (an old build in a venv) is not used
NATIVE_VERSION: Final = "0.12.0"


@dataclass(frozen=True, slots=True)
class NativeQuotes:
    """The codec's payload header when the extension may serve it (else None), and
    what serves, for the start-up log: ``compiled (hqstream_native 0.1.0)`` or
    ``Python (why)``."""

    header: bytes | None
    description: str


def avro_layout(schema: dict[str, Any]) -> list[tuple[str, str]]:
    """A record schema's fields as ``(name, type)``, types written as the extension
    writes them: ``double``, ``enum:SH,SZ,BJ``, ``array:long``."""

    def kind(t: Any) -> str:
        if isinstance(t, str):
            return t
        if t.get("type") == "enum":
            return "enum:" + ",".join(t["symbols"])
        if t.get("type") == "array":
            return f"array:{kind(t['items'])}"
        return repr(t)

    return [(f["name"], kind(f["type"])) for f in schema["fields"]]


def native_module() -> tuple[ModuleType | None, str]:
    """hqstream_native when it is installed and of :data:`NATIVE_VERSION` (else None), and
    why not."""
    try:
        import hqstream_native
    except ImportError as exc:
        return None, f"hqstream_native not installed: {exc}"
    if hqstream_native.__version__ != NATIVE_VERSION:
        return None, (f"hqstream_native {hqstream_native.__version__} is installed, "
                      f"{NATIVE_VERSION} expected: make setup")  # fmt: skip
    return hqstream_native, ""


def native_quotes(codec: Codec, enabled: bool, switch: str) -> NativeQuotes:
    """May hqstream_native serve the quotes of ``codec``? ``switch`` names the setting
    that turned it off (``HQ_STREAMS_NATIVE``), for the description."""
    if not enabled:
        return NativeQuotes(None, f"Python ({switch}=off)")
    hqstream_native, why_not = native_module()
    if hqstream_native is None:
        return NativeQuotes(None, f"Python ({why_not})")
    if not isinstance(codec, SingleObjectCodec):
        return NativeQuotes(None, "Python (the schema registry's wire format is not compiled)")
    if avro_layout(schema_json("quote")) != hqstream_native.QUOTE_FIELDS:
        return NativeQuotes(None, "Python (hqstream_native was built for another Quote schema)")
    return NativeQuotes(codec.header, f"compiled (hqstream_native {hqstream_native.__version__})")
