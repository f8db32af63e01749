"""The gateway's exception root and the handlers that turn errors into HTTP replies.

Route code raises a :class:`GatewayError` subclass; only the handlers here build
error responses (``{"error": <code>, "message": <text>}``). Messages never
contain an API key or any other secret.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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


class Unavailable(GatewayError):
    """A backend (Redis, Kafka) did not answer."""

    status_code = 503
    code = "unavailable"


def install_handlers(app: FastAPI) -> None:
    """Register the handlers: the only place errors become HTTP responses."""

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        headers = {"WWW-Authenticate": "X-API-Key"} if exc.status_code == 401 else None
        return JSONResponse(
            {"error": exc.code, "message": exc.message},
            status_code=exc.status_code,
            headers=headers,
        )

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

    @app.exception_handler(ConnectionError)
    async def _backend_down(_: Request, exc: ConnectionError) -> JSONResponse:
        logger.warning("backend unavailable: %s", type(exc).__name__)
        return JSONResponse(
            {"error": "unavailable", "message": "a backend (Redis/Kafka) is unavailable"},
            status_code=503,
        )
