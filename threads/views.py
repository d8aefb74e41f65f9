"""HTML pages. Sync views: they render templates and run a couple of queries."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from providers import available_providers
from threads import selectors, services
from threads.validation import InvalidInput, parse_thread_create


@login_required
@require_http_methods(["GET", "POST"])
def thread_list_page(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        data = parse_thread_create(
            {
                "title": request.POST.get("title") or None,
                "provider": request.POST.get("provider") or None,
                "model": request.POST.get("model") or None,
            }
        )
        try:
            thread = services.thread_create(owner=request.user, data=data)  # type: ignore[arg-type]
        except InvalidInput:
            return redirect("/")
        return redirect(f"/threads/{thread.pk}/")
    page = selectors.thread_list_for_user(user=request.user)  # type: ignore[arg-type]
    providers = [{"name": p, "model": settings.PROVIDERS[p]["model"]} for p in available_providers()]
    return render(
        request,
        "threads/list.html",
        {"threads": page["threads"], "providers": providers, "default_provider": settings.DEFAULT_PROVIDER},
    )


@login_required
def thread_page(request: HttpRequest, thread_id: int) -> HttpResponse:
    thread = selectors.thread_visible_to(user=request.user, thread_id=thread_id)
    if thread is None:
        raise Http404("No such thread.")
    detail = selectors.thread_detail(thread=thread)
    threads = selectors.thread_list_for_user(user=request.user, limit=30)["threads"]  # type: ignore[arg-type]
    return render(
        request,
        "threads/thread.html",
        {"thread": detail, "threads": threads},
    )


@login_required
@require_http_methods(["POST"])
def thread_delete_page(request: HttpRequest, thread_id: int) -> HttpResponse:
    thread = selectors.thread_visible_to(user=request.user, thread_id=thread_id)
    if thread is None:
        raise Http404("No such thread.")
    services.thread_delete(thread=thread)
    return redirect("/")
