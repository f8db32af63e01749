"""The vendor feed's wire protocol (shared/spec/feed-protocol.md), in one place.

Used by both ends: the receiver (``producers.receiver``) and the feed
simulator (``producers.simulator``). Only this module knows the auth and
heartbeat line formats; if the real vendor differs, only this changes.
Never log a line that carries the token.
"""

from __future__ import annotations

from typing import Final, Literal

import orjson

from schemas.topics import LineKind

MAX_LINE_BYTES: Final = 64 * 1024
BACKLOG_LIMIT_BYTES: Final = 104_857_600  # the vendor drops a client past this
HEARTBEAT_INTERVAL_S: Final = 10.0
DEAD_AFTER_S: Final = 30.0
SNAPSHOT_INTERVAL_S: Final = 3.0


class ProtocolError(ValueError):
    """A control line that does not follow the protocol."""


def auth_request(token: str) -> bytes:
    return orjson.dumps({"op": "auth", "token": token}) + b"\n"


def auth_ok() -> bytes:
    return b'{"op":"auth","ok":true}\n'


def auth_rejected(error: str = "invalid token") -> bytes:
    return orjson.dumps({"op": "auth", "ok": False, "error": error}) + b"\n"


def heartbeat(ts_ms: int) -> bytes:
    return orjson.dumps({"op": "heartbeat", "ts": ts_ms}) + b"\n"


def parse_auth_request(line: bytes) -> str:
    """The token of a client's auth line; raises ProtocolError otherwise."""
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("auth line is not JSON") from exc
    if (
        not isinstance(msg, dict)
        or msg.get("op") != "auth"
        or not isinstance(msg.get("token"), str)
    ):
        raise ProtocolError('expected {"op":"auth","token":"..."}')
    token: str = msg["token"]
    return token


def parse_auth_reply(line: bytes) -> tuple[bool, str]:
    """``(ok, error)`` from the server's auth answer; raises ProtocolError."""
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"auth reply is not JSON: {line[:80]!r}") from exc
    if not isinstance(msg, dict) or msg.get("op") != "auth" or "ok" not in msg:
        raise ProtocolError(f"unexpected auth reply: {line[:80]!r}")
    return bool(msg["ok"]), str(msg.get("error", ""))


def classify(line: bytes) -> LineKind | Literal["control"]:
    """What a (complete, newline-stripped) line is, from its first byte.

    A line starting with ``{`` is JSON: a control message when it has an
    ``"op"`` key, else a Beijing quote. Anything else is Shanghai/Shenzhen.
    The ``"op"`` check is a cheap substring test: quote objects have no such key.
    """
    if line[:1] == b"{":
        return "control" if b'"op"' in line[:16] else "bse_json"
    return "sse_szse"


def code_of(line: bytes, kind: LineKind) -> bytes | None:
    """The 6-digit code used as the Kafka key, or None when it cannot be read.

    SH/SZ: the symbol is the first ``$`` field (``sz000001``). BJ: the
    ``"symbol"`` value (``bj920819``). The receiver keys without a full parse;
    the streams validate properly and dead-letter what is wrong.
    """
    if kind == "sse_szse":
        end = line.find(b"$")
        symbol = line[:end] if end >= 0 else b""
    else:
        start = line.find(b'"symbol"')
        if start < 0:
            return None
        q1 = line.find(b'"', line.find(b":", start) + 1)
        q2 = line.find(b'"', q1 + 1)
        symbol = line[q1 + 1 : q2] if q1 >= 0 and q2 > q1 else b""
    code = symbol[2:]
    if len(symbol) == 8 and code.isdigit():
        return code
    return None
