"""WebSocket origin check (cross-site WebSocket hijacking).

A browser always sends `Origin` on a WebSocket handshake and attaches the site's cookies whatever page
opened the socket, so a session-authenticated handshake is accepted only from one of our own origins:

- the Origin's scheme, host and port must name this deployment: its host matches an `ALLOWED_HOSTS`
  entry (Django's patterns: exact, `.example.com` for subdomains, `*`) on the scheme's default port (443
  for https); a non-default port must be named by the entry (`app.example.com:8443`), or the whole
  origin listed in `CSRF_TRUSTED_ORIGINS` (exact match, which also admits any scheme or port);
- outside DEBUG the scheme must be https (a page served over plain http can be rewritten by anyone on
  the network); with DEBUG, http is fine and `localhost`, `127.0.0.1` and `[::1]` may use any port, so
  `make run` and the browser tests (random ports) work;
- `null` (sandboxed frames, file: pages) and anything that is not a bare `scheme://host[:port]` is
  refused.

A handshake without `Origin` is not from a browser. It is accepted only when it carries
`Authorization: Bearer <token>` (a browser cannot set that header on a WebSocket, and with a Bearer
header the session cookie is never consulted: accounts/auth.py); without one it would be authenticated
by a cookie alone, so it is refused. The validator reads settings on every handshake (not at import).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port
from django.utils.http import is_same_domain

from accounts.tokens import bearer_from_header

DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def _parse_origin(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a serialized origin `scheme://host[:port]`; None if it is anything else."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    if (
        parts.path
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
        or origin.endswith(":")
    ):
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.scheme, host, port if port is not None else DEFAULT_PORTS[parts.scheme]


def _host_allowed(host: str, port: int, scheme: str, pattern: str, *, debug: bool) -> bool:
    if pattern == "*":
        return port == DEFAULT_PORTS[scheme] or (debug and host in LOOPBACK_HOSTS)
    domain, pattern_port = split_domain_port(pattern)
    if not domain or not is_same_domain(host, domain):
        return False
    if pattern_port:
        return int(pattern_port) == port
    return port == DEFAULT_PORTS[scheme] or (debug and host in LOOPBACK_HOSTS)


def origin_allowed(
    origin: str | None,
    *,
    bearer: bool,
    allowed_hosts: list[str],
    trusted_origins: list[str],
    debug: bool,
) -> bool:
    """Pure decision: accept a WebSocket handshake with this `Origin` value (None: no header)?
    `bearer`: the handshake carries `Authorization: Bearer …`. See the module docstring for the rules."""
    if origin is None:
        return bearer
    if origin.rstrip("/").lower() in {o.rstrip("/").lower() for o in trusted_origins}:
        return True
    parsed = _parse_origin(origin.lower())
    if parsed is None:
        return False
    scheme, host, port = parsed
    if scheme != "https" and not debug:
        return False
    hosts = allowed_hosts or (sorted(LOOPBACK_HOSTS) if debug else [])
    return any(_host_allowed(host, port, scheme, pattern.lower(), debug=debug) for pattern in hosts)


class SameOriginValidator:
    """ASGI middleware for WebSocket scopes: refuses (403 at the handshake) what `origin_allowed` refuses."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin, authorization = None, None
        for name, value in scope.get("headers", []):
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value
        allowed = origin_allowed(
            origin,
            bearer=bearer_from_header(authorization) is not None,
            allowed_hosts=settings.ALLOWED_HOSTS,
            trusted_origins=settings.CSRF_TRUSTED_ORIGINS,
            debug=settings.DEBUG,
        )
        if allowed:
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
