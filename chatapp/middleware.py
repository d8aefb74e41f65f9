"""Async-native middleware for the JSON API's own handler (see chatapp/asgi.py).

Django's stock middleware is `MiddlewareMixin`: under ASGI each hook runs through
`sync_to_async(thread_sensitive=True)`, several thread hops per request serialised on one thread, and
WhiteNoise is sync-only, which moves everything below it onto a thread and back. On a burst of sends
that costs milliseconds of CPU per request (measured: benchmarks/coalesce_bench.py). The API needs
little of it: it authenticates by token or session itself (threads/http.py, with its own CSRF check),
never writes the session, serves no static files and renders no HTML.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
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


class AsyncSecurityHeadersMiddleware:
    """The response headers SecurityMiddleware would add to a JSON answer."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)
        self.headers: dict[str, Any] = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
        if getattr(settings, "SECURE_HSTS_SECONDS", 0):
            self.headers["Strict-Transport-Security"] = (
                f"max-age={settings.SECURE_HSTS_SECONDS}; includeSubDomains"
            )

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        for name, value in self.headers.items():
            response.headers.setdefault(name, value)
        return response


# The API handler's middleware (chatapp/asgi.py); pages, admin and static files keep MIDDLEWARE.
API_MIDDLEWARE = [
    "ops.prometheus.PrometheusBeforeMiddleware",
    "chatapp.middleware.AsyncSecurityHeadersMiddleware",
    "chatapp.middleware.AsyncSessionAuthMiddleware",
    "ops.prometheus.PrometheusAfterMiddleware",
]
API_PREFIX = "/api/threads"
