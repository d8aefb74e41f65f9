"""Reads: the budgets that apply to a user, what they spent in a period, and the usage reports.
Plain data out (Decimal costs as strings in the reports, for JSON)."""

from __future__ import annotations

import datetime
from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from billing.models import Budget, BudgetHit, UsageRecord
from billing.rules import MICROS, Rule


def budget_rules_for(*, user_id: int) -> list[Rule]:
    """Every budget row that may apply to the user: theirs, their groups', the defaults."""
    rows = Budget.objects.filter(
        Q(user_id=user_id) | Q(group__user__id=user_id) | Q(user__isnull=True, group__isnull=True)
    ).distinct()
    return [Rule(unit=b.unit, period=b.period, limit=b.limit, scope=b.scope) for b in rows]


def spent_since(*, user_id: int, unit: str, start: datetime.datetime) -> int:
    """What the user was charged since `start`, in the budget counter's unit (tokens, micro-dollars)."""
    totals = UsageRecord.objects.filter(
        user_id=user_id, kind=UsageRecord.Kind.CHARGE, created_at__gte=start
    ).aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd"))
    if unit == "tokens":
        return int((totals["i"] or 0) + (totals["o"] or 0))
    return int(((totals["c"] or Decimal(0)) * MICROS).to_integral_value())


def _usage(i: int | None, o: int | None, c: Decimal | None) -> dict[str, Any]:
    return {"input_tokens": int(i or 0), "output_tokens": int(o or 0), "cost_usd": str(c or Decimal(0))}


def usage_report(*, user_id: int, start: datetime.datetime, end: datetime.datetime) -> dict[str, Any]:
    """GET /api/usage: the user's charges in [start, end): totals, by model, by day, and what their
    coalesced sends saved (the charges of the calls they followed)."""
    charges = UsageRecord.objects.filter(
        user_id=user_id, kind=UsageRecord.Kind.CHARGE, created_at__gte=start, created_at__lt=end
    )
    sums = {"i": Sum("input_tokens"), "o": Sum("output_tokens"), "c": Sum("cost_usd"), "n": Count("id")}
    total = charges.aggregate(**sums)
    by_model = {
        f"{r['provider']}/{r['model']}": {**_usage(r["i"], r["o"], r["c"]), "calls": r["n"]}
        for r in charges.values("provider", "model").annotate(**sums).order_by("provider", "model")
    }
    by_day = [
        {"date": r["day"].isoformat(), **_usage(r["i"], r["o"], r["c"]), "calls": r["n"]}
        for r in charges.annotate(day=TruncDate("created_at", tzinfo=datetime.UTC))
        .values("day")
        .annotate(**sums)
        .order_by("day")
    ]
    estimated = charges.filter(estimated=True).count()
    return {
        "from": start.date().isoformat(),
        "to": (end - datetime.timedelta(days=1)).date().isoformat(),
        "totals": {
            **_usage(total["i"], total["o"], total["c"]),
            "calls": total["n"],
            "estimated_calls": estimated,
        },
        "by_model": by_model,
        "by_day": by_day,
        "saved": saved_for(user_ids=[user_id], start=start, end=end).get(user_id, _saved_zero()),
    }


def _saved_zero() -> dict[str, Any]:
    return {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": "0"}


def saved_for(
    *, user_ids: list[int] | None, start: datetime.datetime, end: datetime.datetime
) -> dict[int, dict[str, Any]]:
    """Per user: followed calls in [start, end) and the tokens and cost of those calls' charges."""
    saved = UsageRecord.objects.filter(kind=UsageRecord.Kind.SAVED, created_at__gte=start, created_at__lt=end)
    if user_ids is not None:
        saved = saved.filter(user_id__in=user_ids)
    rows = list(saved.values_list("user_id", "message_id"))
    charges = {
        c["message_id"]: c
        for c in UsageRecord.objects.filter(
            kind=UsageRecord.Kind.CHARGE, message_id__in={m for _, m in rows}
        ).values("message_id", "input_tokens", "output_tokens", "cost_usd")
    }
    out: dict[int, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "i": 0, "o": 0, "c": Decimal(0)})
    for user_id, message_id in rows:
        acc = out[user_id]
        acc["calls"] += 1
        charge = charges.get(message_id)
        if charge is not None:
            acc["i"] += charge["input_tokens"]
            acc["o"] += charge["output_tokens"]
            acc["c"] += charge["cost_usd"]
    return {
        u: {"calls": a["calls"], "input_tokens": a["i"], "output_tokens": a["o"], "cost_usd": str(a["c"])}
        for u, a in out.items()
    }


def staff_report(*, start: datetime.datetime, end: datetime.datetime) -> list[dict[str, Any]]:
    """Charges in [start, end) by user, model and day (the admin report and its CSV)."""
    names = dict(get_user_model().objects.values_list("id", "username"))
    rows = (
        UsageRecord.objects.filter(kind=UsageRecord.Kind.CHARGE, created_at__gte=start, created_at__lt=end)
        .annotate(day=TruncDate("created_at", tzinfo=datetime.UTC))
        .values("user_id", "provider", "model", "day")
        .annotate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd"), n=Count("id"))
        .order_by("day", "user_id", "provider", "model")
    )
    return [
        {
            "date": r["day"].isoformat(),
            "user": names.get(r["user_id"], str(r["user_id"])),
            "user_id": r["user_id"],
            "model": f"{r['provider']}/{r['model']}",
            "calls": r["n"],
            **_usage(r["i"], r["o"], r["c"]),
        }
        for r in rows
    ]


def budget_hits_recent(*, limit: int = 20) -> list[dict[str, Any]]:
    """The latest budget refusals, for the staff dashboard."""
    return [
        {
            "user": h.user.get_username(),
            "unit": h.unit,
            "period": h.period,
            "period_start": h.period_start.isoformat(),
            "limit": str(h.limit),
            "refusals": h.refusals,
            "last_at": h.last_at.isoformat(),
        }
        for h in BudgetHit.objects.select_related("user").order_by("-last_at")[:limit]
    ]


def last_day(end: datetime.datetime) -> datetime.date:
    """The last whole day of [start, end)."""
    return (end - datetime.timedelta(days=1)).date()
