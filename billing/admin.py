"""Budgets, the usage records and the staff usage report (by user, model and day; CSV) in admin."""

from __future__ import annotations

import csv
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from billing import budgets, selectors
from billing.models import Budget, BudgetHit, UsageRecord
from billing.views import BadQuery, parse_range

CSV_FIELDS = ["date", "user", "user_id", "model", "calls", "input_tokens", "output_tokens", "cost_usd"]


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "group", "unit", "period", "limit"]
    list_filter = ["unit", "period"]
    autocomplete_fields = ["user"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        budgets.forget_rules()  # this process applies it at once; others within BUDGET_RULES_TTL_S

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)
        budgets.forget_rules()


@admin.register(BudgetHit)
class BudgetHitAdmin(admin.ModelAdmin):
    list_display = ["user", "unit", "period", "period_start", "limit", "refusals", "last_at"]
    list_filter = ["unit", "period"]
    ordering = ["-last_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """The ledger, read-only; its changelist links to the report."""

    list_display = ["created_at", "user", "kind", "provider", "model", "input_tokens", "output_tokens", "cost_usd", "estimated", "status"]  # fmt: skip
    list_filter = ["kind", "estimated", "provider", "model"]
    date_hierarchy = "created_at"
    change_list_template = "admin/billing/usagerecord/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        report = self.admin_site.admin_view(self.report_view)
        return [path("report/", report, name="billing_usage_report"), *super().get_urls()]

    def report_view(self, request: HttpRequest) -> HttpResponse:
        """By user, model and day over `?from=&to=` (this month by default); `?format=csv` downloads it."""
        try:
            start, end = parse_range(request.GET, timezone.now())
        except BadQuery as exc:
            return HttpResponse(exc.message, status=400, content_type="text/plain")
        rows = selectors.staff_report(start=start, end=end)
        if request.GET.get("format") == "csv":
            resp = HttpResponse(content_type="text/csv; charset=utf-8")
            resp["Content-Disposition"] = f'attachment; filename="usage-{start:%Y-%m-%d}.csv"'
            writer = csv.DictWriter(resp, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            return resp
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage report",
            "rows": rows,
            "from": start.date().isoformat(),
            "to": selectors.last_day(end).isoformat(),
            "saved": selectors.saved_for(user_ids=None, start=start, end=end),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/billing/report.html", context)
