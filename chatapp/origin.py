"""WebSocket origin check (cross-site WebSocket hijacking).

A browser always sends `Origin` on a WebSocket handshake and attaches the site's cookies whatever page
opened the socket, so a session-authenticated handshake is accepted only from one of our own origins:

- the Origin must name the handshake's own `Host` (scheme aside, as Django's CSRF check compares a
  request's Origin with its host), and that Host must be one `ALLOWED_HOSTS` admits; so `*` or
  `.example.com` there admit no other site and no sibling subdomain. Ports compare with the scheme's
  default filled in (a browser leaves out 443 for https);
- any other origin only when `CSRF_TRUSTED_ORIGINS` lists it: exactly, or Django's
  `https://*.example.com` for subdomains (behind a proxy that rewrites `Host`, list the public origin);
- outside DEBUG the scheme must be https (a page served over plain http can be rewritten by anyone on
  the network);
- `null` (sandboxed frames, file: pages) and anything that is not a bare `scheme://host[:port]` is
  refused.

A handshake without `Host` is not a browser's (every browser sends it); for such a client the Origin is
checked against `ALLOWED_HOSTS` alone: its host matches an entry on the scheme's default port, or on the
port the entry names; with DEBUG, `localhost`, `127.0.0.1` and `[::1]` on any port.

A handshake without `Origin` is not from a browser either. It is accepted only when it carries
`Authorization: Bearer <token>` (a browser cannot set that header on a WebSocket, and with a Bearer
header the session cookie is never consulted: accounts/auth.py); without one it would be authenticated
by a cookie alone, so it is refused. The validator reads settings on every handshake (not at import).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from accounts.tokens import bearer_from_header

log = logging.getLogger(__name__)
DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
Origin = tuple[str, str, int]  # scheme, host, port


def _parse_origin(origin: str) -> Origin | None:
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


def _trusted(origin: str, parsed: Origin | None, trusted_origins: list[str]) -> bool:
    """Listed in CSRF_TRUSTED_ORIGINS: exactly, or under a `scheme://*.domain` entry."""
    normal = origin.rstrip("/").lower()
    for entry in trusted_origins:
        entry = entry.rstrip("/").lower()
        if entry == normal:
            return True
        scheme, _, rest = entry.partition("://*")
        if parsed is not None and rest.startswith(".") and parsed[0] == scheme:
            netloc = normal.partition("://")[2]
            if is_same_domain(netloc, rest):
                return True
    return False


def _names_host(parsed: Origin, host: str, allowed_hosts: list[str], *, debug: bool) -> bool:
    """The Origin is the handshake's own Host, and that Host is one ALLOWED_HOSTS admits."""
    domain, port = split_domain_port(host.lower())
    if not domain:
        return False
    if debug and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]  # as Django's get_host
    if not validate_host(domain, allowed_hosts):
        return False
    scheme, origin_host, origin_port = parsed
    return origin_host == domain and origin_port == (int(port) if port else DEFAULT_PORTS[scheme])


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
    host: str | None = None,
    allowed_hosts: list[str],
    trusted_origins: list[str],
    debug: bool,
) -> bool:
    """Pure decision: accept a WebSocket handshake with this `Origin` value (None: no header)?
    `bearer`: the handshake carries `Authorization: Bearer …`; `host`: its `Host` header (None: none).
    See the module docstring for the rules."""
    if origin is None:
        return bearer
    parsed = _parse_origin(origin.lower())
    if _trusted(origin, parsed, trusted_origins):
        return True
    if parsed is None:
        return False
    scheme, origin_host, port = parsed
    if scheme != "https" and not debug:
        return False
    if host is not None:
        return _names_host(parsed, host, allowed_hosts, debug=debug)
    hosts = allowed_hosts or (sorted(LOOPBACK_HOSTS) if debug else [])
    return any(_host_allowed(origin_host, port, scheme, p.lower(), debug=debug) for p in hosts)


# Why a handshake was refused, for the server's log and the page (GET /api/socket-check): what to fix.
REFUSALS = {
    "origin_missing": "A client without Origin must send its API token (Authorization: Bearer).",
    "origin_invalid": "This page's address cannot open live connections (a sandboxed or file: page).",
    "https_required": "This page is served over plain http, and the server accepts live connections over "
    "https only: open it over https, or run the server with DEBUG=true for development.",
    "host_not_allowed": "The server does not answer to this address: add it to ALLOWED_HOSTS.",
    "origin_mismatch": "The page and its live connection are on different addresses: open the app at "
    "one address, or list this page's origin in CSRF_TRUSTED_ORIGINS.",
}


def origin_refusal(
    origin: str | None,
    *,
    bearer: bool,
    host: str | None = None,
    allowed_hosts: list[str],
    trusted_origins: list[str],
    debug: bool,
) -> str | None:
    """Which rule `origin_allowed` refuses this handshake by (a REFUSALS key); None when it accepts."""
    if origin_allowed(
        origin,
        bearer=bearer,
        host=host,
        allowed_hosts=allowed_hosts,
        trusted_origins=trusted_origins,
        debug=debug,
    ):
        return None
    if origin is None:
        return "origin_missing"
    parsed = _parse_origin(origin.lower())
    if parsed is None:
        return "origin_invalid"
    if parsed[0] != "https" and not debug:
        return "https_required"
    domain = split_domain_port(host.lower())[0] if host else ""
    hosts = allowed_hosts or ([".localhost", "127.0.0.1", "[::1]"] if debug else [])
    if host is not None and not (domain and validate_host(domain, hosts)):
        return "host_not_allowed"
    return "origin_mismatch"


class SameOriginValidator:
    """ASGI middleware for WebSocket scopes: refuses (403 at the handshake) what `origin_allowed` refuses."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin, host, authorization = None, None, None
        for name, value in scope.get("headers", []):
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value
        allowed = origin_allowed(
            origin,
            bearer=bearer_from_header(authorization) is not None,
            host=host,
            allowed_hosts=settings.ALLOWED_HOSTS,
            trusted_origins=settings.CSRF_TRUSTED_ORIGINS,
            debug=settings.DEBUG,
        )
        if allowed:
            return await self.application(scope, receive, send)
        reason = origin_refusal(
            origin,
            bearer=bearer_from_header(authorization) is not None,
            host=host,
            allowed_hosts=settings.ALLOWED_HOSTS,
            trusted_origins=settings.CSRF_TRUSTED_ORIGINS,
            debug=settings.DEBUG,
        )
        # A refused handshake reaches the browser as a bare 1006: the log is where an operator sees why.
        log.warning(
            "WebSocket handshake refused (%s): Origin %r, Host %r. %s",
            reason,
            origin,
            host,
            REFUSALS.get(reason or "", ""),
        )
        return await WebsocketDenier()(scope, receive, send)
