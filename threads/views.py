"""HTML pages. Sync views: they render templates and run a couple of queries.

The thread page renders finished assistant messages as sanitized Markdown (threads/markdown.py). For
messages that finish while the page is open, chat.js asks the same page for one message's HTML:
`GET /threads/<id>/?html=<message_id>` answers JSON `{"id", "status", "html"}` (`html` is null while
the message is still streaming), so the browser never turns model output into HTML itself.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from providers.catalog import catalog
from threads import branches, events, modelaccess, selectors, services
from threads.generation import generation_service
from threads.limits import parse_id
from threads.markdown import close_unfinished, render_markdown
from threads.models import ChatPreferences, Message, Thread
from threads.validation import InvalidInput, parse_thread_create, text_problem


def _models(request: HttpRequest) -> list[dict[str, Any]]:
    """The caller's models (what the pickers offer: only what they may use and what is configured)."""
    return modelaccess.models_for(catalog(), modelaccess.group_ids(request.user))


def _label(model_id: str) -> str:
    offer = catalog().find(model_id)
    return offer.label if offer is not None else model_id


def _message_html(message: dict[str, Any]) -> str | None:
    """Sanitized HTML of an assistant message whose text is final; None while it streams (plain text)."""
    if message["role"] != "assistant" or message["status"] == "streaming" or not message["content"]:
        return None
    content = message["content"]
    # A stopped or failed reply ends mid-text: its unfinished Markdown is closed (no stray `**`).
    return render_markdown(content if message["status"] == "complete" else close_unfinished(content))


def _page_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API payloads plus what only the page needs: the sanitized `html` of finished replies."""
    return [
        {**m, "html": _message_html(m), "model_label": _label(m["model_id"]) if m.get("model_id") else ""}
        for m in messages
    ]


@login_required
@require_http_methods(["GET", "POST"])
def thread_list_page(request: HttpRequest) -> HttpResponse:
    error = None
    if request.method == "POST":
        try:
            data = parse_thread_create(
                {
                    "title": request.POST.get("title") or None,
                    "provider": request.POST.get("provider") or None,
                    "model": request.POST.get("model") or None,
                    # Left empty: the user's default (chat settings).
                    "system_prompt": request.POST.get("system_prompt") or None,
                },
                max_title_chars=settings.MAX_TITLE_CHARS,
                max_system_prompt_chars=settings.MAX_SYSTEM_PROMPT_CHARS,
            )
            thread = services.thread_create(owner=request.user, data=data)  # type: ignore[arg-type]
        except InvalidInput as exc:
            error = exc.message
        else:
            return redirect(f"/threads/{thread.pk}/")
    from threads.tree_views import list_context  # search, archived, paging (#18)

    return render(
        request,
        "threads/list.html",
        {
            **list_context(request),
            "models": _models(request),
            "chosen_model": request.POST.get("model", "") if request.method == "POST" else "",
            "error": error,
        },
        status=400 if error else 200,
    )


def _thread_or_404(request: HttpRequest, thread_id: int) -> Thread:
    thread = selectors.thread_visible_to(user=request.user, thread_id=thread_id)
    if thread is None:
        raise Http404("No such thread.")
    return thread


@login_required
@require_GET
def thread_page(request: HttpRequest, thread_id: int) -> HttpResponse:
    thread = _thread_or_404(request, thread_id)
    if "html" in request.GET:
        return _message_html_json(thread, request.GET["html"])
    # The branch shown (#18), a page of it (`?before=<id>`: an older one, "Load earlier messages" without
    # JavaScript); its versions go to static/chat/tree.js as JSON.
    before = parse_id(request.GET.get("before") or "")
    detail = {**events.thread_data(thread), **branches.branch_page(thread=thread, before=before)}
    detail["messages"] = _page_messages(detail["messages"])
    threads = selectors.thread_list_for_user(user=request.user, limit=30)["threads"]  # type: ignore[arg-type]
    tree_data = {"siblings": detail["siblings"]}
    from threads.share import share_current, url_of  # share links (#18)
    from threads.tree_views import message_tools

    for m in detail["messages"]:
        m["tools"] = message_tools(m, detail["siblings"])
    link = share_current(thread=thread)
    detail["share_url"] = request.build_absolute_uri(url_of(link)) if link else None
    models = _models(request)
    context = {
        "thread": detail,
        "threads": threads,
        "models": models,
        # A model withdrawn since: shown as the current choice, marked, so the picker can leave it.
        "model_withdrawn": all(m["id"] != detail["model_id"] for m in models),
        "model_label": _label(detail["model_id"]),
        "max_system_prompt_chars": settings.MAX_SYSTEM_PROMPT_CHARS,
        "tree_data": tree_data,
    }
    return render(request, "threads/thread.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def chat_settings_page(request: HttpRequest) -> HttpResponse:
    """The user's chat defaults: the system prompt new threads start with."""
    saved = False
    error = None
    prompt = (
        ChatPreferences.objects.filter(user=request.user)  # type: ignore[misc]
        .values_list("system_prompt", flat=True)
        .first()
    )
    if request.method == "POST":
        prompt = request.POST.get("system_prompt", "")
        if len(prompt) > settings.MAX_SYSTEM_PROMPT_CHARS:
            error = f"The system prompt is longer than {settings.MAX_SYSTEM_PROMPT_CHARS} characters."
        elif (problem := text_problem(prompt)) is not None:
            error = f"The system prompt {problem}."
        else:
            services.chat_preferences_save(user=request.user, system_prompt=prompt)  # type: ignore[arg-type]
            saved = True
    context = {"system_prompt": prompt or "", "saved": saved, "error": error}
    return render(request, "threads/chat_settings.html", context, status=400 if error else 200)


def _message_html_json(thread: Thread, raw_id: str) -> JsonResponse:
    message = None
    if (message_id := parse_id(raw_id)) is not None:
        message = Message.objects.filter(thread=thread, pk=message_id).first()
    if message is None:
        return JsonResponse({"error": {"code": "not_found", "message": "No such message."}}, status=404)
    data = {"id": message.pk, "role": message.role, "status": message.status, "content": message.content}
    response = JsonResponse({"id": message.pk, "status": message.status, "html": _message_html(data)})
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_http_methods(["POST"])
def thread_delete_page(request: HttpRequest, thread_id: int) -> HttpResponse:
    running = services.thread_delete(thread=_thread_or_404(request, thread_id))
    if running:  # after commit: its replies' generations stop, in whichever process runs them
        async_to_sync(_cancel_all)(running)
    return redirect("/")


async def _cancel_all(message_ids: list[int]) -> None:
    await generation_service().cancel_all(message_ids)
