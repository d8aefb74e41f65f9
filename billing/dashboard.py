"""The staff dashboard's "Budgets reached" section (ops.views.DASHBOARD_SECTIONS)."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.template.loader import render_to_string

from billing import selectors


async def budget_hits_section() -> str:
    # Thread-sensitive, as Django runs a sync view: a staff page, off the hot path.
    hits = await sync_to_async(selectors.budget_hits_recent)()
    return render_to_string("billing/dashboard_hits.html", {"hits": hits})
