"""``hqstream gateway``: run the FastAPI gateway under uvicorn (websockets sans-I/O).

The sans-I/O implementation lets the fan-out write frames straight to the
transport (:mod:`api.wire`).

permessage-deflate is offered to WebSocket clients. Logging is configured here
(an entry point), nowhere else in api/.
"""

from __future__ import annotations

import logging

import typer


def gateway(
    host: str | None = typer.Option(
        None, help="bind address (default HQ_GATEWAY_HOST or 127.0.0.1)"
    ),
    port: int | None = typer.Option(None, help="bind port (default HQ_GATEWAY_PORT or 8000)"),
) -> None:
    """Run the REST + WebSocket gateway."""
    import uvicorn

    from api.app import create_app
    from api.settings import get_settings

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port if port is not None else settings.port,
        ws="websockets-sansio",
        ws_per_message_deflate=True,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
