"""Async-native middleware for the JSON API's own handler (see chatapp/asgi.py).

Django's stock middleware is `MiddlewareMixin`: under ASGI each hook runs through
`sync_to_async(thread_sensitive=True)`, several thread hops per request serialised on one thread, and
WhiteNoise is sync-only, which moves everything below it onto a thread and back. On a burst of sends
that costs milliseconds of CPU per request (measured: benchmarks/coalesce_bench.py). The API needs
little of it: it authenticates by token or session itself (threads/http.py, with its own CSRF check),
never writes the session, serves no static files and renders no HTML. What it does need of
SecurityMiddleware and CommonMiddleware (the Host check, the https redirect, the headers) is
AsyncSecurityMiddleware, answering in JSON.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponsePermanentRedirect, JsonResponse
from django.http.request import split_domain_port, validate_host
from django.http.response import HttpResponseBase

from core.dbasync import db_async

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def _session_user(request: HttpRequest) -> Any:
    """The session's user, or AnonymousUser (Django's `auth.get_user`, session load included)."""
    return auth.get_user(request)


class _AUser:
    """`request.auser()`: no session cookie, no database call; else one `db_async` call that loads the
    session and its user together (Django's `aget_user` makes two thread-sensitive hops). It holds its
    request weakly: a request holding a callable that holds the request would be a reference cycle,
    left for the garbage collector, on every API request."""

    __slots__ = ("_request", "_user")

    def __init__(self, request: HttpRequest) -> None:
        self._request = weakref.ref(request)
        self._user: Any = None

    async def __call__(self) -> Any:
        if self._user is None:
            request = self._request()
            if request is None or settings.SESSION_COOKIE_NAME not in request.COOKIES:
                self._user = AnonymousUser()
            else:
                self._user = await db_async(_session_user)(request)
        return self._user


class AsyncSessionAuthMiddleware:
    """What the API needs of SessionMiddleware + AuthenticationMiddleware: a lazy session (read only)
    and `request.auser()`. No thread hop: nothing is loaded unless a session caller asks, and then on
    a `db_async` worker thread, so the API's requests use no connection of a request thread."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request.session = self.session_store(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
        request.auser = _AUser(request)
        return await self.get_response(request)


def https_verdict(*, secure: bool, ssl_redirect: bool, method: str) -> str:
    """'ok', 'redirect' (a read over plain http: as SecurityMiddleware) or 'refuse' (a write: a
    redirected POST comes back without its body, which has crossed the network in clear anyway)."""
    if secure or not ssl_redirect:
        return "ok"
    return "redirect" if method in {"GET", "HEAD"} else "refuse"


@functools.lru_cache(maxsize=256)
def host_allowed(host: str, allowed_hosts: tuple[str, ...], debug: bool) -> bool:
    """Django's `HttpRequest.get_host` rule, remembered per value: validating costs about 9 µs a
    request, a cache hit well under one (a flood of made-up hosts only evicts entries)."""
    if debug and not allowed_hosts:
        allowed_hosts = (".localhost", "127.0.0.1", "[::1]")
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed_hosts)


def _checked_host(request: HttpRequest) -> str | None:
    """The request's host if ALLOWED_HOSTS admits it, else None."""
    raw = request.META.get("HTTP_HOST")
    if raw is not None and not settings.USE_X_FORWARDED_HOST:
        return raw if host_allowed(raw, tuple(settings.ALLOWED_HOSTS), settings.DEBUG) else None
    try:
        return request.get_host()  # no Host header (HTTP/1.0), or a forwarded one: Django's own way
    except DisallowedHost:
        return None


def _json_error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


class AsyncSecurityMiddleware:
    """What SecurityMiddleware and CommonMiddleware do for a JSON answer: the Host checked against
    ALLOWED_HOSTS (JSON 400), plain http under SECURE_SSL_REDIRECT, and the security headers. Settings
    that tests override are read per request (a few attribute reads)."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)
        self.headers: dict[str, Any] = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
        if getattr(settings, "SECURE_HSTS_SECONDS", 0):
            preload = "; preload" if getattr(settings, "SECURE_HSTS_PRELOAD", False) else ""
            self.headers["Strict-Transport-Security"] = (
                f"max-age={settings.SECURE_HSTS_SECONDS}; includeSubDomains{preload}"
            )

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self._refusal(request) or await self.get_response(request)
        for name, value in self.headers.items():
            response.headers.setdefault(name, value)
        return response

    def _refusal(self, request: HttpRequest) -> HttpResponseBase | None:
        host = _checked_host(request)
        if host is None:
            # The header is not echoed: it is the caller's own text.
            return _json_error("invalid_host", "The Host header names no site this server serves.", 400)
        verdict = https_verdict(
            secure=request.is_secure(), ssl_redirect=settings.SECURE_SSL_REDIRECT, method=request.method or ""
        )
        if verdict == "redirect":
            return HttpResponsePermanentRedirect(
                f"https://{settings.SECURE_SSL_HOST or host}{request.get_full_path()}"
            )
        if verdict == "refuse":
            return _json_error(
                "https_required", "Use https: this server does not accept writes over http.", 400
            )
        return None


# The API handler's middleware (chatapp/asgi.py); pages, admin and static files keep MIDDLEWARE.
API_MIDDLEWARE = [
    "ops.prometheus.PrometheusBeforeMiddleware",
    "chatapp.middleware.AsyncSecurityMiddleware",
    "chatapp.middleware.AsyncSessionAuthMiddleware",
    "ops.prometheus.PrometheusAfterMiddleware",
]
API_PREFIX = "/api/threads"
