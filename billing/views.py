"""`GET /api/usage` and the usage page. Thin: parse and check, read one report, answer."""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.auth import request_user
from billing import selectors
from billing.charts import day_bars
from billing.rules import period_bounds
from core.dbasync import db_async
from core.outages import DEPENDENCY_DOWN, DEPENDENCY_RETRY_AFTER_S, unavailable
from core.retryafter import retry_after_header

# The longest range one report covers (a year and a day: any calendar year fits).
MAX_RANGE_DAYS = 366


class BadQuery(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _date(raw: str, name: str) -> datetime.date:
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        return datetime.date.fromisoformat(raw)
    except ValueError:
        raise BadQuery("invalid_date", f"'{name}' must be a date, YYYY-MM-DD.") from None


def parse_range(params: Any, now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
    """[start, end) in UTC from `?from=&to=` (whole days, `to` included); this month by default."""
    month_start, month_end = period_bounds("month", now)
    first = _date(params["from"], "from") if "from" in params else month_start.date()
    last = _date(params["to"], "to") if "to" in params else (month_end - datetime.timedelta(days=1)).date()
    if last < first:
        raise BadQuery("invalid_range", "'to' is before 'from'.")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise BadQuery("invalid_range", f"Ask for at most {MAX_RANGE_DAYS} days at a time.")
    start = datetime.datetime.combine(first, datetime.time(), tzinfo=datetime.UTC)
    end = datetime.datetime.combine(last + datetime.timedelta(days=1), datetime.time(), tzinfo=datetime.UTC)
    return start, end


def _subject(raw: str | None, user: Any) -> int:
    """Whose usage: the caller's own; staff may name another user (`?user=<id or username>`)."""
    if raw is None or raw in (str(user.pk), user.get_username()):
        return int(user.pk)
    if not (user.is_active and user.is_staff):
        raise BadQuery("forbidden", "Only staff may read another user's usage.", 403)
    users = get_user_model().objects
    found = users.filter(pk=int(raw)).first() if raw.isascii() and raw.isdigit() and len(raw) < 19 else None
    found = found or users.filter(username=raw).first()
    if found is None:
        raise BadQuery("not_found", "No such user.", 404)
    return int(found.pk)


def _report(raw_user: str | None, user: Any, params: Any) -> dict[str, Any]:
    start, end = parse_range(params, timezone.now())
    subject = _subject(raw_user, user)
    return {"user_id": subject, **selectors.usage_report(user_id=subject, start=start, end=end)}


async def api_usage(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        resp = _error("method_not_allowed", "Use GET.", 405)
        resp["Allow"] = "GET"
        return resp
    unknown = set(request.GET) - {"from", "to", "user"}
    if unknown:
        return _error("unknown_field", f"Unknown query parameter {sorted(unknown)[0]!r}.", 400)
    try:
        user, how = await request_user(request)
        if how == "none":
            return _error("unauthenticated", "Log in, or send 'Authorization: Bearer <token>'.", 401)
        report = await db_async(_report)(request.GET.get("user"), user, request.GET)
    except BadQuery as exc:
        return _error(exc.code, exc.message, exc.status)
    except DEPENDENCY_DOWN as exc:
        down = unavailable(exc)  # what every route tells (core/outages.py; threads/errors.py for the rest)
        assert down is not None
        resp = _error(*down, 503)
        resp["Retry-After"] = str(retry_after_header(DEPENDENCY_RETRY_AFTER_S))
        return resp
    resp = JsonResponse(report)
    resp["Cache-Control"] = "private, no-store"
    return resp


@login_required
@require_GET
def usage_page(request: HttpRequest) -> HttpResponse:
    """This month's usage of the signed-in user: totals, saved by coalescing, by model, by day."""
    now = timezone.now()
    start, end = period_bounds("month", now)
    report = selectors.usage_report(user_id=int(request.user.pk), start=start, end=end)  # type: ignore[arg-type]
    last_day = (end - datetime.timedelta(days=1)).date()
    chart = day_bars(report["by_day"], start.date(), last_day)
    return render(
        request,
        "billing/usage.html",
        {
            "report": report,
            "chart": chart,
            "month": start.strftime("%B %Y"),
            "by_model": sorted(report["by_model"].items()),
        },
    )
