"""Pages of the conversation tree (#18): archive from the thread page without JavaScript."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods

from threads import regenerate, tree
from threads.views import _thread_or_404


@login_required
@require_http_methods(["POST"])
def thread_archive_page(request: HttpRequest, thread_id: int) -> HttpResponse:
    """Archive (the thread leaves the list: back to it) or unarchive (stay on the thread)."""
    thread = _thread_or_404(request, thread_id)
    archived = request.POST.get("archived", "true") != "false"
    async_to_sync(regenerate.change)(thread=thread, change=tree.ThreadChange(archived=archived))
    return redirect("/" if archived else f"/threads/{thread.pk}/")
