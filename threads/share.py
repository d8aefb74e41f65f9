"""Share links (#18): create and revoke (services), read a snapshot (selector), and the public page
/s/<token> (no log-in, noindex, the Markdown rendered and sanitised as on the thread page)."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from threads import branches
from threads.limits import parse_id
from threads.markdown import render_markdown
from threads.models import Message, ShareLink, Thread


def share_create(*, thread: Thread) -> ShareLink:
    """A new link to the branch shown now; an earlier link of the thread stops working (one at a time)."""
    leaf = thread.current_leaf_id or (
        Message.objects.filter(thread=thread).order_by("-id").values_list("id", flat=True).first()
    )
    with transaction.atomic():
        ShareLink.objects.filter(thread=thread).delete()
        return ShareLink.objects.create(
            thread=thread, token=secrets.token_urlsafe(24), leaf_id=leaf, title=thread.title
        )


def share_revoke(*, thread: Thread) -> int:
    """Every link of the thread answers 404 from now on; how many there were."""
    deleted, _ = ShareLink.objects.filter(thread=thread).delete()
    return deleted


def share_current(*, thread: Thread) -> ShareLink | None:
    return ShareLink.objects.filter(thread=thread).first()


def url_of(link: ShareLink) -> str:
    return f"/s/{link.token}"


def share_page_data(*, token: str, before: int | None = None) -> dict[str, Any] | None:
    """A page of the shared branch (newest HISTORY_PAGE_SIZE, or the ancestors of `before`), oldest
    first, rendered; None for an unknown or revoked token."""
    link = ShareLink.objects.filter(token=token).select_related("thread").first()
    if link is None:
        return None
    limit = settings.HISTORY_PAGE_SIZE
    start = link.leaf_id
    if before is not None:  # only within the shared branch: the ancestors of one of its messages
        start = (
            Message.objects.filter(pk=before, thread_id=link.thread_id)
            .values_list("parent_id", flat=True)
            .first()
        )
    ids = branches.path_ids(thread_id=link.thread_id, message_id=start, limit=limit + 1) if start else []
    shared = None
    if before is not None and link.leaf_id is not None:
        shared = set(branches.path_ids(thread_id=link.thread_id, message_id=link.leaf_id, limit=100_000))
    if shared is not None and not set(ids) <= shared:
        ids = []
    rows = Message.objects.in_bulk(ids[:limit])
    messages = []
    for pk in reversed(ids[:limit]):
        m = rows[pk]
        html = render_markdown(m.content) if m.role == "assistant" and m.content else None
        messages.append({"id": m.pk, "role": m.role, "content": m.content, "html": html, "status": m.status})
    return {
        "title": link.title or "Shared conversation",
        "thread": link.thread,
        # Not "messages": base.html shows Django's flash messages by that name (each row was dumped there).
        "turns": messages,
        "earlier": messages[0]["id"] if len(ids) > limit and messages else None,
    }


@require_GET
def share_page(request: HttpRequest, token: str) -> HttpResponse:
    """GET /s/<token>: the snapshot, for anyone with the link; `?before=<id>`: older messages."""
    raw = request.GET.get("before")
    data = share_page_data(token=token, before=parse_id(raw) if raw else None)
    if data is None:
        raise Http404("This link was revoked, or never existed.")
    resp = render(request, "threads/share.html", data)
    resp["X-Robots-Tag"] = "noindex, nofollow"
    resp["Cache-Control"] = "private, no-store"
    resp["Referrer-Policy"] = "no-referrer"
    return resp
