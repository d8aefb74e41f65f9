"""Pages of the conversation tree (#18): the list's search, archive and paging, and archive from the
thread page, all without JavaScript."""

from __future__ import annotations

import datetime
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods

from threads import chat, search, selectors, services, share, transfer
from threads.limits import parse_id
from threads.validation import ThreadPatch
from threads.views import _thread_or_404


@login_required
@require_http_methods(["POST"])
def thread_archive_page(request: HttpRequest, thread_id: int) -> HttpResponse:
    """Archive (the thread leaves the list: back to it) or unarchive (stay on the thread)."""
    thread = _thread_or_404(request, thread_id)
    archived = request.POST.get("archived", "true") != "false"
    updated = services.thread_update(thread=thread, user=request.user, patch=ThreadPatch(archived=archived))  # type: ignore[arg-type]
    async_to_sync(chat.thread_changed)(updated)
    return redirect("/" if archived else f"/threads/{thread.pk}/")


def _when(iso: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")) if iso else None


def list_context(request: HttpRequest) -> dict[str, Any]:
    """The thread list page: a page of threads (`?before=`, `?archived=1`) or a search's results (`?q=`),
    each with its model and last activity."""
    query = (request.GET.get("q") or "").strip()[:200]
    archived = request.GET.get("archived") in ("1", "true")
    before = parse_id(request.GET.get("before") or "")
    if query:
        threads, next_before = search.search_threads(user=request.user, query=query), None
    else:
        page = selectors.thread_list_for_user(user=request.user, before=before, archived=archived)  # type: ignore[arg-type]
        threads, next_before = page["threads"], page["next_before"]
    for t in threads:
        t["last_activity"] = _when(t["updated_at"])
    return {"threads": threads, "q": query, "archived": archived, "next_before": next_before}


@login_required
@require_http_methods(["POST"])
def thread_import_page(request: HttpRequest) -> HttpResponse:
    """The list page's import form: a file (our JSON export or a ChatGPT conversations.json)."""
    from django.shortcuts import render

    from threads.tree_api import parse_upload
    from threads.validation import InvalidInput

    upload = request.FILES.get("file")
    try:
        if upload is None:
            raise InvalidInput("invalid_import", "Choose a file to import.")
        drafts = transfer.parse_import(parse_upload(upload.read()))
        made = transfer.import_threads(owner=request.user, drafts=drafts)
    except InvalidInput as exc:
        from threads.views import _models

        context = {**list_context(request), "import_error": exc.message, "models": _models(request)}
        return render(request, "threads/list.html", context, status=400)
    return redirect(f"/threads/{made[0].pk}/" if len(made) == 1 else "/")


@login_required
@require_http_methods(["POST"])
def thread_share_page(request: HttpRequest, thread_id: int) -> HttpResponse:
    """The thread page's Share (a new link, shown on the page) and Stop sharing buttons."""
    thread = _thread_or_404(request, thread_id)
    if request.POST.get("action") == "revoke":
        share.share_revoke(thread=thread)
    else:
        share.share_create(thread=thread)
    return redirect(f"/threads/{thread.pk}/#sharing")


def message_tools(message: dict[str, Any], siblings: dict[str, list[int]]) -> dict[str, Any]:
    """What static/chat/tree.js draws under a message, drawn by the server first (drawn by the script
    after the first paint, 48 rows shifted the page: Lighthouse's layout shift 0.8). `key` is the
    script's own, so it leaves a row that is already right alone."""
    versions = siblings.get(str(message["id"]))
    user = message["role"] == "user"
    done = not user and message["status"] in ("complete", "cancelled")
    key = f"{','.join(map(str, versions)) if versions else ''}|{str(user).lower()}|{str(done).lower()}"
    tools: dict[str, Any] = {"key": key, "user": user, "done": done}
    if versions:
        at = versions.index(message["id"])
        tools.update(
            at=at + 1,
            n=len(versions),
            prev=versions[at - 1] if at > 0 else "",
            next=versions[at + 1] if at + 1 < len(versions) else "",
        )
    return tools
