"""WebSocket origin check.

Browsers always send `Origin` on a WebSocket handshake, so a foreign origin is refused (this is what
stops cross-site WebSocket hijacking with the session cookie). Clients that send no `Origin` are not
browsers and cannot carry a victim's cookie; they authenticate with a Bearer token or their own session.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.utils.http import is_same_domain


def origin_allowed(origin: str | None, *, allowed_hosts: list[str], trusted_origins: list[str]) -> bool:
    """Pure decision: is a handshake with this `Origin` header value acceptable?"""
    if origin is None:
        return True
    if origin in trusted_origins:
        return True
    parsed = urlparse(origin)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    host = parsed.hostname if ":" not in parsed.hostname else f"[{parsed.hostname}]"
    hosts = allowed_hosts or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    return any(pattern == "*" or is_same_domain(host, pattern) for pattern in hosts)


class SameOriginValidator(OriginValidator):
    def __init__(self, application: Any) -> None:
        super().__init__(application, allowed_origins=[])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = None
        for name, value in scope.get("headers", []):
            if name == b"origin":
                origin = value.decode("latin-1")
        if origin_allowed(
            origin, allowed_hosts=settings.ALLOWED_HOSTS, trusted_origins=settings.CSRF_TRUSTED_ORIGINS
        ):
            return await self.application(scope, receive, send)
        denier = WebsocketDenier()
        return await denier(scope, receive, send)
