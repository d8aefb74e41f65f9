"""The JSON API of docs/api.md. Views parse and check, call one use case, answer."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from core import later
from core.dbasync import db_async
from core.outages import DEPENDENCY_DOWN
from ops import metrics
from providers.catalog import acatalog
from threads import (
    chat,
    errors,
    events,
    fanout,
    modelaccess,
    outcomes,
    quotas,
    selectors,
    sendgate,
    services,
    usage,
)
from threads.generation import generation_service
from threads.http import api_view, authed_user, body_json, json_response, sse
from threads.limits import parse_id
from threads.services import NotFound
from threads.validation import (
    InvalidInput,
    parse_message_cursor,
    parse_page_limit,
    parse_request_id,
    parse_send,
    parse_thread_create,
    parse_thread_patch,
)


@api_view({"GET", "POST"})
async def threads_collection(request: HttpRequest) -> HttpResponseBase:
    user = authed_user(request)
    if request.method == "POST":
        data = parse_thread_create(
            body_json(request),
            max_title_chars=settings.MAX_TITLE_CHARS,
            max_system_prompt_chars=settings.MAX_SYSTEM_PROMPT_CHARS,
        )
        thread = await db_async(services.thread_create)(owner=user, data=data)
        chat.remember_created(thread)
        return json_response({**events.thread_data(thread), "usage": usage.no_usage()}, status=201)
    # docs/api.md (v1.1): `?cursor=` / `next_cursor`; v1 clients send `?before=` / read `next_before`.
    raw = request.GET.get("cursor", request.GET.get("before"))
    before = parse_id(raw) if raw is not None else None
    if raw is not None and before is None:
        raise InvalidInput("invalid_cursor", "'cursor' must be a next_cursor this list answered.")
    from threads.tree_api import thread_list  # ?archived=, ?q= (#18)

    return await thread_list(request, user=user, before=before)


async def _thread_or_404(request: HttpRequest, thread_id: int) -> Any:
    thread = await chat.thread_visible_to(user=authed_user(request), thread_id=thread_id)
    if thread is None:
        raise NotFound()
    return thread


@api_view({"GET"})
async def models_collection(request: HttpRequest) -> HttpResponseBase:
    """The models the caller may use (providers/catalog.py, threads/modelaccess.py)."""
    user = authed_user(request)
    cat = await acatalog()
    models = modelaccess.models_for(cat, await modelaccess.agroup_ids(user))
    return json_response({"models": models, "next_cursor": None})  # one page: the offered models


@api_view({"GET", "PATCH", "DELETE"})
async def thread_item(request: HttpRequest, thread_id: int) -> HttpResponseBase:
    thread = await _thread_or_404(request, thread_id)
    if request.method == "PATCH":
        patch = parse_thread_patch(
            body_json(request),
            max_title_chars=settings.MAX_TITLE_CHARS,
            max_system_prompt_chars=settings.MAX_SYSTEM_PROMPT_CHARS,
        )
        updated = await db_async(services.thread_update)(
            thread=thread, user=authed_user(request), patch=patch
        )
        await chat.thread_changed(updated)
        return json_response(await db_async(usage.thread_with_usage)(events.thread_data(updated)))
    if request.method == "DELETE":
        running = await db_async(services.thread_delete)(thread=thread)
        await generation_service().cancel_all(running)  # after commit: nothing else would stop them
        return HttpResponse(status=204)
    before, limit = _history_page_query(request)
    return json_response(await db_async(selectors.thread_detail)(thread=thread, before=before, limit=limit))


def _history_page_query(request: HttpRequest) -> tuple[int | None, int | None]:
    """`?before=<message id>&limit=`: which page of the thread's messages (the newest when absent)."""
    raw_before, raw_limit = request.GET.get("before"), request.GET.get("limit")
    before = None if raw_before is None else parse_message_cursor(parse_id(raw_before))
    limit = None if raw_limit is None else parse_page_limit(raw_limit, most=selectors.MAX_HISTORY_LIMIT)
    return before, limit


@api_view({"POST"})
async def thread_messages(request: HttpRequest, thread_id: int) -> HttpResponseBase:
    req = parse_send(body_json(request), max_chars=settings.MAX_MESSAGE_CHARS)
    thread = await chat.thread_for_send(user=authed_user(request), thread_id=thread_id)
    if thread is None:
        raise NotFound()
    sendgate.vouch()  # signed in and allowed to send here: a crowd behind it may hold the intake
    if req.stream:
        return await _sse_response(request, thread, req)
    outcome = await chat.send(user=authed_user(request), thread=thread, req=req)
    sendgate.release_turn()  # its generation has started, or it follows one: the others may come
    return await final_response(outcome, thread)


async def final_response(outcome: outcomes.SendOutcome, thread: Any) -> HttpResponseBase:
    """A send's (or a regenerate's) answer once its generation ended: 200, or its error's status."""
    final = await outcomes.wait_terminal(outcome, thread_id=thread.pk)
    # Counted after the burst's answers have left (core/later.py).
    later.call(metrics.request, events.request_outcome(final))
    timings = outcome.generation.timings() if outcome.generation is not None else None
    body = {
        "request_id": outcome.request_id,
        "coalesced": outcome.coalesced,
        "user_message": outcome.user_message,
        "assistant_message": final.get("message") or outcome.assistant_message,
        "timings": timings or {"queue_wait_ms": 0, "ttft_ms": None, "total_ms": 0},
    }
    if final["type"] != "message.error":
        return json_response(body)
    # A failed generation answers with its error status (and the messages, the partial text kept).
    error = final["error"]
    body["error"] = {"code": error["code"], "message": error["message"]}
    resp = json_response(body, status=errors.generation_error_status(error["code"]))
    if error.get("retry_after") is not None:
        resp["Retry-After"] = errors.retry_after_header(error["retry_after"])
    return resp


async def _sse_response(
    request: HttpRequest, thread: Any, req: Any, start: Callable[[str], Awaitable[Any]] | None = None
) -> HttpResponseBase:
    """Take a slot among the user's sockets (a stream is a channel in the thread's group, like a
    socket), subscribe, then send, so no event of this request can be missed. A stream or send refused
    before it starts (too many streams, rate limited, bad parent, reused request_id) raises here, before
    any stream: the client gets the same JSON error and status (429 with Retry-After, 400, 422) as
    without `stream`."""
    user = authed_user(request)
    slot = _StreamSlot(user.pk, await quotas.stream_open(user_id=user.pk))
    try:
        slot.sub = await fanout.subscribe(generation_service().layer, thread.pk)
        if start is not None:  # a regenerate (threads/tree_api.py)
            outcome = await start(slot.sub.channel)
        else:
            outcome = await chat.send(user=user, thread=thread, req=req, reply_channel=slot.sub.channel)
    except BaseException:
        await slot.free()
        raise
    sendgate.release_turn()  # before streaming: the others to this thread may come
    body = _sse_events(outcome, thread.pk, slot.sub.channel, slot)
    # A body never read (the client left before its first byte) runs no `finally`: free it when dropped.
    weakref.finalize(body, _free_soon, asyncio.get_running_loop(), slot)
    return StreamingHttpResponse(
        body,
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _StreamSlot:
    """What one SSE stream holds: a slot among its user's sockets and a channel in the thread's group;
    freed once, by the stream's end, or by its body being dropped unread."""

    def __init__(self, user_id: Any, stream_id: str) -> None:
        self.user_id, self.stream_id = user_id, stream_id
        self.sub: fanout.Subscription | None = None
        self._freed = False

    async def free(self) -> None:
        if self._freed:
            return
        self._freed = True
        # Redis gone: the group entry expires by itself, the slot once its heartbeat stops.
        if self.sub is not None:
            with contextlib.suppress(*DEPENDENCY_DOWN):
                await self.sub.close()
        with contextlib.suppress(*DEPENDENCY_DOWN):
            await quotas.socket_close(user_id=self.user_id, socket_id=self.stream_id)


_freeing: set[asyncio.Task[None]] = set()


def _free_soon(loop: asyncio.AbstractEventLoop, slot: _StreamSlot) -> None:
    """`slot.free()` on its loop, from a finalizer (which cannot await)."""

    def start() -> None:
        task = loop.create_task(slot.free())
        _freeing.add(task)
        task.add_done_callback(_freeing.discard)

    with contextlib.suppress(RuntimeError):  # the loop has closed: its registry went with it
        loop.call_soon_threadsafe(start)


async def _sse_events(
    outcome: outcomes.SendOutcome, thread_id: int, channel: str, slot: _StreamSlot
) -> AsyncIterator[bytes]:
    """The send's events as Server-Sent Events; frees the stream's slot when the stream ends."""
    metrics.stream_subscriptions.inc()
    try:
        async for event in outcomes.stream_events(outcome, thread_id=thread_id, channel=channel):
            yield sse(event)
            if event.get("type") in events.TERMINAL_EVENTS:
                metrics.request(events.request_outcome(event))
    except DEPENDENCY_DOWN as exc:
        # Redis went away mid-stream: the headers are sent, so say it as an event, then end the stream.
        # (The generation goes on and saves its result; GET the thread to read it.)
        yield sse(errors.outage_event(exc))
    finally:
        metrics.stream_subscriptions.dec()
        await slot.free()


@api_view({"POST"})
async def cancel(request: HttpRequest, request_id: str) -> HttpResponseBase:
    rid = parse_request_id(request_id)
    await chat.cancel(user=authed_user(request), request_id=rid)
    return json_response({"request_id": rid, "status": "cancelled"})
