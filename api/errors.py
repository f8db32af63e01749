"""The gateway's exception root and the handlers that turn errors into HTTP replies.

Route code raises a :class:`GatewayError` subclass; only the handlers here build
error responses (``{"error": <code>, "message": <text>}``). Messages never
contain an API key or any other secret. A backend that does not answer
(redis-py's ConnectionError/TimeoutError, which are not the builtin ones) is a
503 ``unavailable`` with one warning line, no traceback.

:class:`KeyInUrlGuard` (outermost middleware) keeps API keys out of URLs: a
request with ``api_key`` in its query string has the parameter removed from
the scope before anything (uvicorn's own log lines included) can see it, and
is refused (HTTP 400; WebSockets get an ``error`` and close 1008 in api.ws).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(GatewayError):
    """Malformed input (bad code, bad date, too many codes ...)."""

    status_code = 422
    code = "bad_request"


class BadCode(BadRequest):
    """A stock code that is not 6 digits."""

    code = "bad_code"


class NotFound(GatewayError):
    """Nothing stored under that name (unknown code, no data yet)."""

    status_code = 404
    code = "not_found"


class UnknownMarket(NotFound):
    """A market that is not one of the valid ones (the message lists them)."""

    code = "unknown_market"


class UnknownMetric(NotFound):
    """A ranking metric that is not one of the valid ones (the message lists them)."""

    code = "unknown_metric"


class NotAuthenticated(GatewayError):
    """No API key, or one that is not configured."""

    status_code = 401
    code = "not_authenticated"


class Forbidden(GatewayError):
    """A valid key without the admin right."""

    status_code = 403
    code = "forbidden"


class Misconfigured(GatewayError):
    """The gateway cannot start with these settings (e.g. auth on and no keys)."""


KEY_IN_URL = "hqstream.key_in_url"
"""Scope flag: the request had an ``api_key`` query parameter (removed from the scope)."""

_KEY_NAMES = frozenset({"api_key", "apikey", "x_api_key"})


def _is_key_name(name: str) -> bool:
    return name.lower().replace("-", "_") in _KEY_NAMES


class KeyInUrlGuard:
    """Removes ``api_key`` from query strings, flags the request, refuses it if HTTP."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and b"api" in scope["query_string"].lower():
            pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            kept = [(k, v) for k, v in pairs if not _is_key_name(k)]
            if len(kept) != len(pairs):
                # In place: the server logs from this very dict (uvicorn's "[accepted]").
                scope["query_string"] = urlencode(kept).encode("latin-1")
                scope[KEY_IN_URL] = True
                if scope["type"] == "http":
                    response = error_response(
                        400,
                        "bad_request",
                        "API keys are not accepted in the URL: send the X-API-Key header "
                        "(the dashboard takes #api_key=... in the fragment)",
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """The body every error has: ``{"error": code, "message": message}``."""
    headers = {"WWW-Authenticate": "X-API-Key"} if status == 401 else None
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Register the handlers: the only place errors become HTTP responses."""

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse(
            {"error": "bad_request", "message": "; ".join(parts) or "invalid request"},
            status_code=422,
        )

    async def _backend_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("backend unavailable for %s: %s", request.url.path, type(exc).__name__)
        return error_response(503, "unavailable", "a backend (Redis/Kafka) is unavailable")

    for exc_class in (ConnectionError, RedisConnectionError, RedisTimeoutError, TimeoutError):
        app.add_exception_handler(exc_class, _backend_down)
