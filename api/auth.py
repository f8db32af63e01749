"""API-key checks for REST and WebSocket.

Keys are compared in constant time (``hmac.compare_digest`` against every
configured key). Only a short SHA-256 prefix of a key (``key_id``) is ever
kept, counted or logged; never the key itself. With no keys configured the
gateway is open and every caller is ``anonymous``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Annotated, Literal

from fastapi import Depends, Header, Request

from api.errors import Forbidden, NotAuthenticated
from api.settings import GatewaySettings

logger = logging.getLogger(__name__)

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
    """``(key_id, role)`` for a valid key (or anonymous when auth is off); None if invalid."""
    if not settings.auth_enabled:
        return ANONYMOUS, "admin"
    if not key:
        return None
    if _matches(key, settings.admin_key_list()):
        return key_id(key), "admin"
    if _matches(key, settings.client_keys()):
        return key_id(key), "client"
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
