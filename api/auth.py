"""API-key checks for REST and WebSocket.

Keys are compared in constant time (``hmac.compare_digest`` against every
configured key). Only a short SHA-256 prefix of a key (``key_id``) is ever
kept, counted or logged; never the key itself. Keys travel in the
``X-API-Key`` header (REST) or the first WebSocket message, never in a URL
(:class:`api.errors.KeyInUrlGuard` refuses ``?api_key=``).

With ``HQ_GATEWAY_AUTH=off`` callers without a valid key are ``anonymous``
clients: never admins (an admin key still makes its caller an admin). With
auth on, the app refuses to start without keys (:func:`api.app.create_app`).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Literal

from fastapi import Depends, Header, Request

from api.errors import Forbidden, NotAuthenticated
from api.settings import GatewaySettings

Role = Literal["client", "admin"]
ANONYMOUS = "anonymous"


def key_id(key: str) -> str:
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _matches(candidate: str, keys: tuple[str, ...]) -> bool:
    found = False
    given = candidate.encode()
    for key in keys:  # no early exit: time does not depend on which key matched
        found |= hmac.compare_digest(given, key.encode())
    return found


def check_key(settings: GatewaySettings, key: str | None) -> tuple[str, Role] | None:
    """``(key_id, role)`` for a valid key; with auth off an anonymous client; else None."""
    if key:
        if _matches(key, settings.admin_key_list()):
            return key_id(key), "admin"
        if _matches(key, settings.client_keys()):
            return key_id(key), "client"
    if not settings.auth_enabled:
        return ANONYMOUS, "client"
    return None


def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def require_key(
    request: Request,
    x_api_key: Annotated[
        str | None, Header(description="API key, when keys are configured")
    ] = None,
) -> Role:
    found = check_key(_settings(request), x_api_key)
    if found is None:
        raise NotAuthenticated("a valid X-API-Key header is required")
    return found[1]


def require_admin(role: Annotated[Role, Depends(require_key)]) -> Role:
    if role != "admin":
        raise Forbidden("this endpoint needs an admin key")
    return role
