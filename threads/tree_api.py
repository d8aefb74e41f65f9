"""The JSON API of the conversation tree (#18, docs/api.md): regenerate a reply, search, export, import,
share. A thread's PATCH is threads/api.py's, one for every field."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from core.dbasync import db_async
from threads import api, chat, events, outcomes, regenerate, search, selectors, share, transfer, usage
from threads.http import api_view, authed_user, body_json, json_response
from threads.services import NotFound
from threads.validation import REGENERATE_FIELDS, InvalidInput, parse_regenerate


@api_view({"POST"})
async def regenerate_message(request: HttpRequest, thread_id: int, message_id: int) -> HttpResponseBase:
    """POST /api/threads/{id}/messages/{message_id}/regenerate: a new reply in place of `message_id`."""
    parsed = parse_regenerate(body_json(request), message_id=message_id, allowed=REGENERATE_FIELDS)
    user = authed_user(request)
    thread = await chat.thread_for_send(user=user, thread_id=thread_id)
    if thread is None:
        raise NotFound()
    req = regenerate.RegenerateRequest(**parsed)

    async def start(channel: str | None = None) -> outcomes.SendOutcome:
        return await regenerate.regenerate(user=user, thread=thread, req=req, reply_channel=channel)

    if req.stream:
        return await api._sse_response(request, thread, req, start=start)
    return await api.final_response(await start(), thread)


MAX_QUERY_CHARS = 200


def _flag(request: HttpRequest, name: str) -> bool:
    raw = request.GET.get(name)
    if raw is None or raw in ("false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise InvalidInput(f"invalid_{name}", f"'{name}' must be true or false.")


async def thread_list(request: HttpRequest, *, user: Any, before: int | None) -> HttpResponseBase:
    """GET /api/threads: a page of the caller's threads (`?archived=true`: the archived ones; `?q=words`:
    the best matches of a search, archived ones included, each with a `snippet`)."""
    archived = _flag(request, "archived")
    query = request.GET.get("q")
    if query is not None:
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidInput("invalid_query", f"'q' is longer than {MAX_QUERY_CHARS} characters.")
        found = await db_async(search.search_threads)(user=user, query=query)
        return json_response({"threads": found, "next_before": None, "next_cursor": None})
    page = await db_async(selectors.thread_list_for_user)(user=user, before=before, archived=archived)
    return json_response(page)


@api_view({"GET"})
async def thread_export(request: HttpRequest, thread_id: int) -> HttpResponseBase:
    """GET /api/threads/{id}/export?format=json|md: a download of the thread (the tree, or the branch)."""
    thread = await api._thread_or_404(request, thread_id)
    kind = request.GET.get("format", "json")
    if kind not in ("json", "md"):
        raise InvalidInput("invalid_format", "'format' must be json or md.")
    if kind == "json":
        body = json.dumps(await db_async(transfer.export_json)(thread=thread), ensure_ascii=False, indent=1)
        resp = HttpResponse(body, content_type="application/json; charset=utf-8")
    else:
        text = await db_async(transfer.export_markdown)(thread=thread)
        resp = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    resp["Content-Disposition"] = f'attachment; filename="{transfer.filename(thread, kind)}"'
    resp["Cache-Control"] = "private, no-store"
    return resp


@api_view({"POST"})
async def thread_import(request: HttpRequest) -> HttpResponseBase:
    """POST /api/threads/import: our JSON export or a ChatGPT conversations.json; 201 with the threads."""
    user = authed_user(request)
    drafts = transfer.parse_import(_json_any(request))
    made = await db_async(transfer.import_threads)(owner=user, drafts=drafts)
    made_data = [{**events.thread_data(t), "usage": usage.no_usage()} for t in made]
    return json_response({"threads": made_data}, status=201)


def _json_any(request: HttpRequest) -> Any:
    """The body as JSON of any shape (a ChatGPT export is a list), with body_json's checks."""
    try:
        raw = request.body
    except RequestDataTooBig as exc:
        raise InvalidInput(
            "body_too_large", f"The body is larger than {settings.MAX_BODY_BYTES} bytes.", status=413
        ) from exc
    return parse_upload(raw)


def parse_upload(raw: bytes) -> Any:
    if not raw:
        raise InvalidInput("invalid_import", "The file cannot be imported: it is empty.")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput("invalid_import", "The file cannot be imported: it is not JSON.") from exc


@api_view({"POST", "DELETE"})
async def thread_share(request: HttpRequest, thread_id: int) -> HttpResponseBase:
    """POST /api/threads/{id}/share: a new read-only link (an earlier one stops working); DELETE revokes."""
    thread = await api._thread_or_404(request, thread_id)
    if request.method == "DELETE":
        await db_async(share.share_revoke)(thread=thread)
        return HttpResponse(status=204)
    link = await db_async(share.share_create)(thread=thread)
    return json_response({"token": link.token, "url": share.url_of(link)}, status=201)
