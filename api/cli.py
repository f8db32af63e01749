"""``hqstream gateway``: run the FastAPI gateway under uvicorn (websockets sans-I/O).

The sans-I/O implementation lets the fan-out write frames straight to the
transport (:mod:`api.wire`).

permessage-deflate is offered to WebSocket clients; a client message over
``HQ_GATEWAY_MAX_MESSAGE_BYTES`` (decompressed) is refused by uvicorn itself
(``ws_max_size``, close 1009) before the gateway parses it. Logging is
configured here (an entry point), nowhere else in api/: every record of every
logger goes through :class:`RedactKeys`, so an API key that reached a log line
anyway (a URL, an exception message) is masked.
"""

from __future__ import annotations

import logging
import re
import sys

import typer

from hqcore.logs import configure_logging

_KEY_IN_TEXT = re.compile(r"(api[_-]?key[\"']?\s*[=:]\s*[\"']?)[^&\s\"',;}]+", re.IGNORECASE)


class RedactKeys(logging.Filter):
    """Masks ``api_key=...`` (and ``X-API-Key: ...``) in a record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _KEY_IN_TEXT.search(message):
            record.msg, record.args = _KEY_IN_TEXT.sub(r"\1<redacted>", message), None
        return True


def install_redaction() -> None:
    """Add :class:`RedactKeys` to every root handler (uvicorn's loggers propagate there)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactKeys) for f in handler.filters):
            handler.addFilter(RedactKeys())


def gateway(
    host: str | None = typer.Option(
        None, help="bind address (default HQ_GATEWAY_HOST or 127.0.0.1)"
    ),
    port: int | None = typer.Option(None, help="bind port (default HQ_GATEWAY_PORT or 8000)"),
) -> None:
    """Run the REST + WebSocket gateway."""
    import uvicorn

    from api.app import create_app
    from api.errors import Misconfigured
    from api.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, "gateway", quiet=())
    install_redaction()
    try:
        app = create_app(settings)
    except Misconfigured as exc:
        logging.getLogger(__name__).error("refusing to start: %s", exc.message)
        sys.exit(2)
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port if port is not None else settings.port,
        loop=settings.event_loop,
        ws="websockets-sansio",
        ws_per_message_deflate=True,
        ws_max_size=settings.max_message_bytes,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the handlers above (and their redaction)
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
