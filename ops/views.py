"""`GET /metrics` (Prometheus text), `GET /api/metrics` (docs/api.md's summary) and the staff dashboard page.

Both endpoints answer the same callers (`metrics_refusal`): staff, `Bearer <METRICS_TOKEN>`, or a
connection from an address of `METRICS_ALLOWED_IPS`. All three read the merged metrics of every process
(ops/metrics.py) on a worker thread: in multiprocess mode that means reading one small file per
process, which must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import prometheus_client
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string

from accounts.auth import request_user
from accounts.tokens import bearer_from_header
from ops import history, metrics
from ops.flags import flags_ready, flags_snapshot

# How often the dashboard polls /api/metrics and how many of its own polls it keeps (an hour); older
# points come from the server's history (ops/history.py).
DASHBOARD_POLL_MS = 2000
DASHBOARD_POINTS = 1800


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _is_metrics_token(request: HttpRequest) -> bool:
    raw = bearer_from_header(request.headers.get("Authorization"))
    expected = settings.METRICS_TOKEN
    # compare_digest: the token must not leak through response timing.
    return bool(raw and expected) and hmac.compare_digest(str(raw).encode(), expected.encode())


@functools.cache
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def peer_allowed(remote_addr: str | None, allowed: Sequence[str]) -> bool:
    """Is the connection's own address (REMOTE_ADDR, never a forwarded header, which anyone can send)
    inside one of `allowed` (addresses or networks, as METRICS_ALLOWED_IPS)?"""
    if not remote_addr or not allowed:
        return False
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:  # a unix socket's peer, or a test client's placeholder
        return False
    return any(address in network for network in _networks(tuple(allowed)))


async def metrics_refusal(request: HttpRequest) -> JsonResponse | None:
    """None when the caller may read metrics (the metrics token, a listed address, or staff); else the
    JSON error to answer."""
    if _is_metrics_token(request) or peer_allowed(
        request.META.get("REMOTE_ADDR"), settings.METRICS_ALLOWED_IPS
    ):
        return None
    user, how = await request_user(request)
    if how == "none":
        return _error(
            "unauthenticated", "Log in as staff, or send 'Authorization: Bearer <METRICS_TOKEN>'.", 401
        )
    if not _is_staff(user):
        return _error("forbidden", "Metrics are for staff: ask an admin for the metrics token.", 403)
    return None


def _only_get() -> JsonResponse:
    resp = _error("method_not_allowed", "Use GET.", 405)
    resp["Allow"] = "GET, HEAD"
    return resp


async def _summary() -> dict[str, Any]:
    history.ensure_sampler()
    await flags_ready()
    data = await asyncio.to_thread(metrics.summary)
    # "flags": the effective values of the answering process; "flags_by_process": every process's.
    data["flags"] = flags_snapshot()
    data["pid"] = os.getpid()
    return data


async def api_metrics(request: HttpRequest) -> HttpResponse:
    """The deployment-wide metrics summary of docs/api.md, for the callers of `metrics_refusal`."""
    if request.method not in {"GET", "HEAD"}:
        return _only_get()
    if refusal := await metrics_refusal(request):
        return refusal
    resp = JsonResponse(await _summary(), json_dumps_params={"separators": (",", ":")})
    resp["Cache-Control"] = "no-store"
    return resp


async def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """`/metrics`: the Prometheus text of every process (django-prometheus's and ours), for the same
    callers as /api/metrics (django-prometheus's own view answers anyone)."""
    if request.method not in {"GET", "HEAD"}:
        return _only_get()
    if refusal := await metrics_refusal(request):
        # docs/api.md: anyone else gets 403 here; /api/metrics keeps the 401 of the v1 error table.
        if refusal.status_code == 401:
            return _error("forbidden", "Metrics are for staff or the metrics token's holder.", 403)
        return refusal
    text = await asyncio.to_thread(lambda: prometheus_client.generate_latest(metrics.registry()))
    resp = HttpResponse(text, content_type=prometheus_client.CONTENT_TYPE_LATEST)
    resp["Cache-Control"] = "no-store"
    return resp


# Sections other apps add to the dashboard (billing: who hit a budget): async callables returning HTML
# already escaped (rendered from a template). Registered in their AppConfig.ready().
DASHBOARD_SECTIONS: list[Callable[[], Awaitable[str]]] = []


def _is_staff(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user.is_active and getattr(user, "is_staff", False))


async def dashboard(request: HttpRequest) -> HttpResponse:
    """The staff dashboard: the summary's figures, with small charts its own script keeps updating."""
    user = await request.auser()
    if not user.is_authenticated:
        return HttpResponseRedirect(f"{settings.LOGIN_URL}?{urlencode({'next': request.get_full_path()})}")
    if not _is_staff(user):
        return HttpResponse(
            "<!doctype html><title>Forbidden</title><p>The dashboard is for staff.</p>", status=403
        )
    summary = await _summary()
    html = render_to_string(
        "dashboard.html",
        {
            "summary": summary,
            "flags": sorted(summary["flags"].items()),
            "poll_ms": DASHBOARD_POLL_MS,
            "points": DASHBOARD_POINTS,
            "history": history.HISTORY.as_list(),
            "history_s": int(history.HISTORY_S),
            "sections": [await section() for section in DASHBOARD_SECTIONS],
        },
    )
    resp = HttpResponse(html)
    resp["Cache-Control"] = "no-store"
    return resp
