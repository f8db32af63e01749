"""The compiled fast path of the stream workers' parse, when it is installed and allowed.

``hqstream_native`` (a Rust extension built from ``native/``) turns one plain,
good line, a Shanghai/Shenzhen ``$`` line or a Beijing JSON object, into
exactly what the Python path makes of it:
the Quote dict of :func:`streams.parse.parse_record` (same keys in the same
order, same types and values), its Avro bytes (those of the quote codec) and
its JSON as Redis stores it (``orjson.dumps`` of the dict, byte for byte).
Every other line (a bad record, anything it does not port, such as a -0.0
price) gets None, and the caller takes the Python path, which stays the
reference and names the bad record's reason: the fast path changes speed,
never a result. A Beijing line's JSON is read by orjson, as the Python path
reads it; the checks of its values and everything after them are compiled.
The worker parses to the Avro alone (``avro``: what the burst's path
needs) and makes the dicts and the JSON from the Avro in the batch's finish
(``make``, :func:`quote_maker`): the same values, half a line's time off
the burst's path (docs/architecture.md, "The compiled parse").

The market rules are not compiled: the extension asks the functions of
:mod:`streams.normalize` (board, ST and new-listing names, limit prices,
dates, times, session phases), once per distinct value, and caches their
answers; the bounds are :mod:`streams.parse`'s constants. It compiles the
quote.v2 layout: when the schema's fields differ from the extension's, or the
codec is the schema registry's, the Python path is used
(:mod:`schemas.native`). ``HQ_STREAMS_NATIVE=off`` forces the Python path.
Never does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from schemas.native import native_quotes
from schemas.records import Quote
from schemas.serde import Codec
from streams import normalize, parse

#: ``(raw line, receive_ts, process_ts, max_ahead_ms) -> (quote, Avro, JSON)``, or None
#: for a line the Python path must parse
FastParse = Callable[[bytes, int, int, int | None], tuple[Quote, bytes, bytes] | None]
#: the same, without the dict and the JSON: ``(code, exchange_ts, price, volume, Avro)``
AvroParse = Callable[[bytes, int, int, int | None], tuple[str, int, float, int, bytes] | None]
#: the quote codec's Avro payloads -> their Quote dicts and their JSON, as the parse makes them
QuoteMaker = Callable[[list[bytes]], tuple[list[Quote], list[bytes]]]
#: ``hqstream_native.QuoteParser.parse_run``: the compiled path through raw records from
#: an index, the feed arbiter's judgement included, until one it leaves to Python
#: (``streams.pipeline.Processor.parse``); returns that index and the copies dropped
RunParse = Callable[..., tuple[int, int]]


@dataclass(frozen=True, slots=True)
class ParsePath:
    """Which parse a worker uses: the compiled fast path (``fast``; ``avro`` and ``make``:
    its Avro first, the dict and JSON later; ``run``: ``avro`` through a batch's
    records with the arbiter's judgement, in one call), or None and why not."""

    fast: FastParse | None
    description: str
    avro: AvroParse | None = None
    make: QuoteMaker | None = None
    run: RunParse | None = None


def parse_path(codec: Codec, enabled: bool) -> ParsePath:
    """The fast path for quotes encoded by ``codec``, unless it is off or cannot be used."""
    native = native_quotes(codec, enabled, "HQ_STREAMS_NATIVE")
    if native.header is None:
        return ParsePath(None, native.description)
    import hqstream_native

    parser = hqstream_native.QuoteParser(native.header, normalize, parse)
    make = quote_maker(codec, hqstream_native.QuoteMaker(native.header).make)
    return ParsePath(parser.parse, native.description, parser.parse_avro, make, parser.parse_run)


#: the compiled maker: ``(dicts, jsons)`` of payloads, None for one it leaves to Python
NativeMake = Callable[[list[bytes]], tuple[list[Quote | None], list[bytes | None]]]


def quote_maker(codec: Codec, native: NativeMake) -> QuoteMaker:
    """The Quote dicts and JSON of ``codec``'s Avro payloads, equal to the parse's own.

    ``native`` (``hqstream_native.QuoteMaker.make``) reads a batch's payloads
    at once: each dict as the codec decodes it (keys in the schema's order,
    the same values and types; a stock's strings made once) and its JSON by
    the gateway's writer (the bytes ``orjson.dumps`` makes of the dict). A
    payload it leaves to Python (a double whose shortest form the writer does
    not prove orjson's) is decoded by ``codec`` and dumped by orjson.
    """
    dumps, decode = orjson.dumps, codec.decode

    def make(payloads: list[bytes]) -> tuple[list[Quote], list[bytes]]:
        quotes, data = native(payloads)
        if None in data:
            for i, json in enumerate(data):
                if json is None:
                    quotes[i] = quote = decode(payloads[i])
                    data[i] = dumps(quote)
        return quotes, data  # type: ignore[return-value]  # no None left

    return make
