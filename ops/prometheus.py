"""django-prometheus, adapted to an ASGI deployment.

django-prometheus's middleware is a `MiddlewareMixin`: under ASGI, Django would run each of its hooks
through `sync_to_async(thread_sensitive=True)`, i.e. five hops per request onto the one thread that also
runs every sync view and ORM call (django/utils/deprecation.py). The hooks only increment counters
(memory, or a memory-mapped file in multiprocess mode), so here they run inline on the event loop.
The sync code path (Django's test `Client`, WSGI) is unchanged.

The cache backend fixes django-prometheus's `get()`, which answers `default` for any falsy cached value
(0, "", []): it counts hits and misses and otherwise behaves like Django's LocMemCache.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from timeit import default_timer
from typing import Any

from django.core.cache.backends import locmem
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django_prometheus import middleware as dp_middleware
from django_prometheus.cache.metrics import (
    django_cache_get_total,
    django_cache_hits_total,
    django_cache_misses_total,
)

from core import later

_MISSING = object()


def cache_cursor_wrappers() -> None:
    """django-prometheus's database backends build a new cursor class for every cursor (SQLite) or
    every connection checkout (PostgreSQL, in `get_connection_params`): tens of microseconds each, and
    every such class is a reference cycle left for the garbage collector. The class depends only on
    (cursor class, alias, vendor), so one per combination does (ProvidersConfig.ready installs this)."""
    from django_prometheus.db import common
    from django_prometheus.db.backends.postgresql import base as postgresql

    build = getattr(common.ExportingCursorWrapper, "__wrapped__", common.ExportingCursorWrapper)
    cached = functools.cache(build)
    common.ExportingCursorWrapper = cached
    postgresql.ExportingCursorWrapper = cached  # imported by name there


class PrometheusBeforeMiddleware(dp_middleware.PrometheusBeforeMiddleware):
    """Counts requests and overall latency; first in MIDDLEWARE."""

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)
        response = await self.get_response(request)
        record_after_the_answer(
            self.process_response, request, response, "prometheus_before_middleware_event"
        )
        return response


class PrometheusAfterMiddleware(dp_middleware.PrometheusAfterMiddleware):
    """Counts requests and responses by view, method and status; last in MIDDLEWARE."""

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        if self.async_mode:
            # Django adapts a sync process_view with sync_to_async; an async one it awaits directly.
            self.process_view = self._aprocess_view

    async def _aprocess_view(self, request: HttpRequest, view_func: Any, *args: Any, **kwargs: Any) -> None:
        dp_middleware.PrometheusAfterMiddleware.process_view(self, request, view_func, *args, **kwargs)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)
        response = await self.get_response(request)
        record_after_the_answer(self.process_response, request, response, "prometheus_after_middleware_event")
        return response


def record_after_the_answer(
    record: Callable[[HttpRequest, HttpResponseBase], Any],
    request: HttpRequest,
    response: HttpResponseBase,
    started: str,
) -> None:
    """Record a response's metrics once a burst's answers have left (core/later.py): when a burst's
    generation ends each process answers its ~500 followers at once, and each answer's counters
    delayed the answers behind it. The latency is the one at this moment: the request's
    start (its attribute `started`) moves on by the time the record waited."""
    ended = default_timer()

    def record_now() -> None:
        start = getattr(request, started, None)
        if start is not None:
            setattr(request, started, start + (default_timer() - ended))
        record(request, response)

    later.call(record_now)


class LocMemCache(locmem.LocMemCache):
    """Django's LocMemCache with django-prometheus's hit/miss counters."""

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        django_cache_get_total.labels(backend="locmem").inc()
        value = super().get(key, _MISSING, version=version)
        if value is _MISSING:
            django_cache_misses_total.labels(backend="locmem").inc()
            return default
        django_cache_hits_total.labels(backend="locmem").inc()
        return value
