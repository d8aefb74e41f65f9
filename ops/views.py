"""`GET /api/metrics` (API.md's summary, for staff or the metrics token) and the staff dashboard page.

Both read the merged metrics of every process (ops/metrics.py) on a worker thread: in
multiprocess mode that means reading one small file per process, which must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string

from accounts.auth import request_user
from accounts.tokens import bearer_from_header
from ops import metrics
from ops.flags import flags_ready, flags_snapshot

# How often the dashboard polls /api/metrics and how much history its charts keep (5 minutes).
DASHBOARD_POLL_MS = 2000
DASHBOARD_POINTS = 150


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _is_metrics_token(request: HttpRequest) -> bool:
    raw = bearer_from_header(request.headers.get("Authorization"))
    expected = settings.METRICS_TOKEN
    # compare_digest: the token must not leak through response timing.
    return bool(raw and expected) and hmac.compare_digest(str(raw).encode(), expected.encode())


async def _summary() -> dict[str, Any]:
    await flags_ready()
    data = await asyncio.to_thread(metrics.summary)
    # "flags": the effective values of the answering process; "flags_by_process": every process's.
    data["flags"] = flags_snapshot()
    data["pid"] = os.getpid()
    return data


async def api_metrics(request: HttpRequest) -> HttpResponse:
    """The deployment-wide metrics summary of API.md: staff users, or `Bearer <METRICS_TOKEN>`."""
    if request.method not in {"GET", "HEAD"}:
        resp = _error("method_not_allowed", "Use GET.", 405)
        resp["Allow"] = "GET, HEAD"
        return resp
    if not _is_metrics_token(request):
        user, how = await request_user(request)
        if how == "none":
            return _error(
                "unauthenticated",
                "Log in as staff, or send 'Authorization: Bearer <METRICS_TOKEN>'.",
                401,
            )
        if not _is_staff(user):
            return _error("forbidden", "Metrics are for staff: ask an admin for the metrics token.", 403)
    resp = JsonResponse(await _summary(), json_dumps_params={"separators": (",", ":")})
    resp["Cache-Control"] = "no-store"
    return resp


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
        },
    )
    resp = HttpResponse(html)
    resp["Cache-Control"] = "no-store"
    return resp
