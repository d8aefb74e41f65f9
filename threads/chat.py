"""Async use cases shared by the HTTP API and the WebSocket consumer: send, cancel, snapshot.

Each crosses into sync code once per step (one `db_async` call per service/selector).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from core.dbasync import db_async
from core.outages import DEPENDENCY_DOWN
from core.singleflight import Singleflight
from core.ttlcache import TTLCache
from ops import metrics
from ops.flags import flag_enabled
from threads import (
    branches,
    charging,
    coalescing,
    control,
    events,
    fanout,
    modelaccess,
    quotas,
    selectors,
    services,
    usage,
)
from threads.coalescing import LEASE_S
from threads.generation import Generation, generation_service
from threads.models import Message, Thread
from threads.validation import SendRequest


@dataclass(slots=True)
class SendOutcome:
    request_id: str
    coalesced: str  # "leader" | "follower" | "bypass"
    user_message: events.MessageData
    assistant_message: events.MessageData
    generation: Generation | None  # set when this process runs (or ran) the generation
    key: str | None = None  # the coalesce key, for followers watching the leader's lease


# The send path's copy of each thread it has read, by id; who may see it is decided per request from
# the row (`selectors.may_see`: its owner never changes, staff is the caller's own flag). A thread is
# remembered for THREAD_TTL_S, so that a user's next message, usually sent within it, runs no query
# before the provider call (the page's socket connect loads the thread, and a thread created through the
# API is remembered at once). With two seconds, every send after a pause paid that query. A burst of
# identical sends to a cold entry also waits on the one query, then resumes all at once, its leader's
# next step queued behind the others.
# A deletion (or an edit, in admin) in this process forgets the thread at once. Another process answers
# from its copy for at most THREAD_TTL_S: a send to a deleted thread still fails cleanly there
# (send_prepare finds no thread: 404), and one to an edited thread uses the provider and model it had.
# "No such thread" is remembered for two seconds only: a thread created meanwhile must not stay hidden.
THREAD_TTL_S = 30.0
_threads: TTLCache[Thread | None] = TTLCache(THREAD_TTL_S, negative_ttl_s=2.0)


thread_visible_to = db_async(selectors.thread_visible_to)


async def thread_for_send(*, user: AbstractBaseUser, thread_id: int) -> Thread | None:
    """`thread_visible_to` from a short per-process cache, for the hot path only (sends, socket connects)."""
    thread = await _threads.get_or_load(
        thread_id, lambda: db_async(selectors.thread_by_id)(thread_id=thread_id)
    )
    return thread if thread is not None and selectors.may_see(user, thread) else None


def forget(thread_id: int) -> None:
    """The thread changed elsewhere (a model switch): the next send reads it again."""
    _threads.discard(thread_id)


control.on_thread_changed = forget  # another process's PATCH (threads/control.py)


async def thread_changed(thread: Thread) -> None:
    """After a PATCH: this process keeps the new copy; the others drop theirs (control group), and every
    open tab follows (thread.updated)."""
    remember_created(thread)
    svc = generation_service()
    svc.ensure_started()
    with contextlib.suppress(*DEPENDENCY_DOWN):  # Redis away: the others' copies expire in THREAD_TTL_S
        await control.send_thread_changed(svc.layer, thread.pk)
    await svc.broadcast(thread.pk, events.thread_updated(events.thread_data(thread)))


def remember_created(thread: Thread) -> None:
    """A thread just created: its first send needs no query to find it."""
    _threads.put(thread.pk, thread)


@receiver(post_delete, sender=Thread, dispatch_uid="threads.chat.forget_deleted_thread")
@receiver(post_save, sender=Thread, dispatch_uid="threads.chat.forget_edited_thread")
def _forget(sender: Any, instance: Thread, **kwargs: Any) -> None:
    """A thread deleted, or edited (its provider or model, in admin), in this process: read it again."""
    _threads.discard(instance.pk)


async def thread_for_call(*, user: AbstractBaseUser, thread: Thread) -> Thread:
    """The thread as it is now, its model checked for `user`: every provider call (a send, a regenerate)
    goes through here. Raises InvalidInput `model_not_allowed`."""
    # The caller's copy may predate a model switch (a socket keeps the thread it connected to).
    thread = (
        await _threads.get_or_load(thread.pk, lambda: db_async(selectors.thread_by_id)(thread_id=thread.pk))
        or thread
    )
    # A model withdrawn, or whose group the user left, since the thread was created.
    await modelaccess.acheck(user, provider=thread.provider, model=thread.model)
    return thread


async def send(
    *, user: AbstractBaseUser, thread: Thread, req: SendRequest, reply_channel: str | None = None
) -> SendOutcome:
    """Send a message: replay a known request_id, follow an identical send in flight (coalescing), or
    lead: write the rows and start the generation.

    Runs detached from the caller: a client that disconnects mid-send cancels its request, and a
    leader cut off between claiming the burst and publishing its rows would fail every follower."""
    task = asyncio.create_task(
        _send(user=user, thread=thread, req=req, reply_channel=reply_channel), context=contextvars.Context()
    )
    # If the caller is cancelled nobody awaits the task: retrieve its outcome so nothing is "never retrieved".
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return await asyncio.shield(task)


async def _send(
    *, user: AbstractBaseUser, thread: Thread, req: SendRequest, reply_channel: str | None = None
) -> SendOutcome:
    thread = await thread_for_call(user=user, thread=thread)
    fp = coalescing.fingerprint(thread_id=thread.pk, req=req)
    known = await coalescing.replayed(user_id=user.pk, req=req, fp=fp)
    if known is not None:
        await quotas.follow_admit(user_id=user.pk)
        return await _replay(known)
    try:
        return await _send_new(user=user, thread=thread, req=req, reply_channel=reply_channel, fp=fp)
    except BaseException:
        # Its request_id is free again for any body. Redis gone: the hold lapses in ALIAS_PENDING_S.
        with contextlib.suppress(*DEPENDENCY_DOWN):
            await coalescing.forget(user_id=user.pk, req=req, fp=fp)
        raise


async def _send_new(
    *, user: AbstractBaseUser, thread: Thread, req: SendRequest, reply_channel: str | None, fp: str
) -> SendOutcome:
    """A send whose request_id is new (or in flight with the same body): lead, follow or bypass."""
    mode = coalescing.mode(req)
    if mode != "coalesce":
        await quotas.send_admit(user_id=user.pk)  # only sends that start a generation count
        outcome = await _lead_paid(
            user=user, thread=thread, req=req, reply_channel=reply_channel, coalesced=_MODE_ROLE[mode]
        )
        await coalescing.remember(user_id=user.pk, req=req, fp=fp, info=_info(outcome))
        return outcome
    burst = await coalescing.join(thread, req)
    if not burst.leads:
        # Free for the provider, not for us: a wait and a 24 h request_id record (limits.FOLLOWER_SHARE).
        await quotas.follow_admit(user_id=user.pk)
        info = await coalescing.follow(burst)
        # A follower answers with its leader's request_id: a made-up one of its own stays unknown.
        if req.request_id_given:
            await coalescing.remember(user_id=user.pk, req=req, fp=fp, info=info)
        metrics.coalesce("follower")
        # Not checked against the follower's budget: it costs nothing (its leader's user pays). Written
        # before the follower is answered: its usage, read after `done`, shows the saving.
        await charging.note_saved(user_id=user.pk, info=info, thread=thread)
        return _follower(info, coalesced="follower", key=burst.key)
    coalescing.leading(burst)
    try:
        # The leader takes a whole send from the budget; its followers took a share each above.
        await quotas.send_admit(user_id=user.pk)
        outcome = await _lead_paid(
            user=user, thread=thread, req=req, reply_channel=reply_channel, coalesced="leader", key=burst.key
        )
    except BaseException as exc:
        await coalescing.failed(burst, exc)
        raise
    generating = outcome.generation.done if outcome.generation is not None else None
    await coalescing.published(burst, _info(outcome), generating=generating)
    await coalescing.remember(user_id=user.pk, req=req, fp=fp, info=_info(outcome))
    return outcome


_MODE_ROLE = {"bypass": "bypass", "off": "leader"}


def _info(outcome: SendOutcome) -> coalescing.Info:
    return {
        "request_id": outcome.request_id,
        "user_message": outcome.user_message,
        "assistant_message": outcome.assistant_message,
    }


async def _replay(ref: coalescing.Ref) -> SendOutcome:
    """A known request_id's answer: its rows as they are now. Raises NotFound if they were deleted."""
    pair = await _pair_from_db(ref["user_message_id"], ref["assistant_message_id"])
    if pair is None:
        raise services.NotFound()
    info = {"request_id": ref["request_id"], "user_message": pair[0], "assistant_message": pair[1]}
    return _follower(info, coalesced="follower")


@db_async
def _pair_from_db(user_message_id: int, assistant_message_id: int) -> tuple[Any, Any] | None:
    rows = {m.pk: m for m in Message.objects.filter(pk__in=(user_message_id, assistant_message_id))}
    if len(rows) != 2:
        return None
    asked, reply = usage.messages_with_usage(
        [events.message_data(rows[user_message_id]), events.message_data(rows[assistant_message_id])]
    )
    return asked, reply


def _follower(info: coalescing.Info, *, coalesced: str, key: str | None = None) -> SendOutcome:
    return SendOutcome(
        request_id=info["request_id"],
        coalesced=coalesced,
        user_message=info["user_message"],
        assistant_message=info["assistant_message"],
        generation=generation_service().running.get(info["assistant_message"]["id"]),
        key=key,
    )


async def _lead_paid(
    *,
    user: AbstractBaseUser,
    thread: Thread,
    req: SendRequest,
    reply_channel: str | None,
    coalesced: str,
    key: str | None = None,
) -> SendOutcome:
    """`_lead`, paid by `user` (charging.paid: 429 budget_exceeded past one of their budgets)."""

    async def lead(reservation: charging.Reservation | None) -> SendOutcome:
        return await _lead(
            thread=thread,
            req=req,
            reply_channel=reply_channel,
            coalesced=coalesced,
            key=key,
            payer_id=user.pk,
            reservation=reservation,
        )

    outcome = await charging.paid(
        user_id=user.pk, thread=thread, context=lambda: _send_context(thread, req), lead=lead
    )
    if outcome.request_id != req.request_id:  # another send's rows (its burst, raced in the database)
        await charging.note_saved(user_id=user.pk, info=_info(outcome), thread=thread)
    return outcome


async def _send_context(thread: Thread, req: SendRequest) -> list[tuple[str, str]]:
    return await db_async(services.send_context)(
        thread=thread, content=req.content, parent_id=req.parent_id, new_root=req.new_root
    )


async def _lead(
    *,
    thread: Thread,
    req: SendRequest,
    reply_channel: str | None,
    coalesced: str,
    key: str | None = None,
    payer_id: int | None = None,
    reservation: charging.Reservation | None = None,
) -> SendOutcome:
    prepared = await db_async(services.send_prepare)(
        thread_id=thread.pk,
        thread=thread,
        req=req,
        parent_id=req.parent_id,
        coalesce_key=key,
        reuse=(settings.COALESCE_RESULT_TTL_S, settings.COALESCE_ERROR_TTL_S),
    )
    svc = generation_service()
    if prepared.replay:
        return SendOutcome(
            request_id=prepared.request_id,
            coalesced="follower",
            user_message=prepared.user_message,
            assistant_message=prepared.assistant_message,
            generation=svc.running.get(prepared.assistant_message["id"]),
        )
    metrics.coalesce(coalesced)
    # With fan-out off only the requesting connection streams; other viewers get the final message.
    only = None if flag_enabled("STREAM_FANOUT_ENABLED") else reply_channel
    gen = await svc.start(
        prepared, reply_channel=only, coalesce_key=key, payer_id=payer_id, reservation=reservation
    )
    if req.parent_id is not None or req.new_root:  # an edit: a new branch, which every tab now shows
        from threads.regenerate import announce  # (it builds on this module)

        await announce(thread.pk)
    return SendOutcome(
        request_id=req.request_id,
        coalesced=coalesced,
        user_message=prepared.user_message,
        assistant_message=prepared.assistant_message,
        generation=gen,
    )


async def wait_terminal(outcome: SendOutcome, *, thread_id: int) -> events.TerminalEvent:
    """The terminal event (done / cancelled / error) of a send, wherever its generation runs.

    A follower of a leader in another process listens on the thread's group; it also watches the
    leader's lease, so a leader whose process died is noticed within about LEASE_S (the message is
    then marked `error`, never left `streaming`)."""
    if outcome.generation is not None:
        # Shielded: a client that goes away must not cancel the generation it started.
        return await asyncio.shield(outcome.generation.done)
    # Every follower of one request in this process shares one wait: one channel in the thread's
    # group and one lease watch, not one each (a burst of 1000 split over two processes would
    # otherwise put 500 channels in the group, each receiving every delta of the stream).
    return await _remote_waits.do(
        outcome.assistant_message["id"], lambda: _wait_remote_terminal(outcome, thread_id)
    )


_remote_waits: Singleflight[events.TerminalEvent] = Singleflight()


async def _wait_remote_terminal(outcome: SendOutcome, thread_id: int) -> events.TerminalEvent:
    async with fanout.subscribed(generation_service().layer, thread_id) as sub:
        final = await terminal_now(outcome)
        if final is None:
            async for event in _live_events(outcome, sub.channel):
                final = events.as_terminal(event)  # the last one is the terminal event
        assert final is not None
        return final


async def _check_leader(outcome: SendOutcome) -> events.TerminalEvent | None:
    """None while the generation may still be running; else its terminal event."""
    final = await _terminal_from_db(outcome.assistant_message["id"], outcome.request_id)
    if final is not None or outcome.key is None or await coalescing.alive(outcome.key):
        return final
    # The lease lapsed and the message still says `streaming`: its leader is gone.
    lost = await db_async(services.message_finalize)(
        message_id=outcome.assistant_message["id"],
        status="error",
        content="",
        error_code="generation_lost",
        error_message="The server generating this reply stopped before it finished.",
    )
    if lost is None:  # it finished meanwhile
        return await _terminal_from_db(outcome.assistant_message["id"], outcome.request_id)
    event = events.message_error(
        request_id=outcome.request_id,
        code="generation_lost",
        message=lost["error"]["message"],
        assistant=lost,
    )
    await generation_service().broadcast(lost["thread_id"], event)
    return event


async def stream_events(
    outcome: SendOutcome, *, thread_id: int, channel: str
) -> AsyncIterator[events.StreamEvent]:
    """The events of one send for a subscriber whose `channel` joined the thread's group before the
    send: a follower first gets `message.start` and the text so far (as one delta at the current seq),
    then every later delta, then the terminal event. Watches the leader's lease like `wait_terminal`."""
    seen = 0
    if outcome.coalesced == "follower":
        yield events.message_start(
            request_id=outcome.request_id,
            user_message=outcome.user_message,
            message_id=outcome.assistant_message["id"],
        )
        entries = await generation_service().in_flight(thread_id)
        entry = next((e for e in entries if e["request_id"] == outcome.request_id), None)
        if entry is not None and entry["seq"]:
            seen = entry["seq"]
            yield events.message_delta(
                request_id=outcome.request_id, message_id=entry["message_id"], seq=seen, text=entry["text"]
            )
        final = await terminal_now(outcome)
        if final is not None:
            yield final
            return
    async for event in _live_events(outcome, channel, seen=seen):
        yield event


async def _live_events(
    outcome: SendOutcome, channel: str, *, seen: int = 0
) -> AsyncIterator[events.StreamEvent]:
    """This send's events arriving on `channel` (already in the thread's group), deltas after `seen`,
    up to and including its terminal event. While the generation runs in another process, the
    leader's lease is checked whenever the stream is quiet."""
    layer = generation_service().layer
    while True:
        try:
            async with asyncio.timeout(LEASE_S / 2):
                msg = await layer.receive(channel)
        except TimeoutError:
            final = await _quiet_check(outcome)
            if final is not None:
                yield final
                return
            continue
        # A thread's group carries only the events fanout.broadcast put there.
        event = cast(events.StreamEvent, msg.get("event") or {})
        if event.get("request_id") != outcome.request_id:
            continue
        if event["type"] == "message.delta" and event["seq"] <= seen:
            continue  # already in the catch-up delta
        yield event
        if events.as_terminal(event) is not None:
            return


async def _quiet_check(outcome: SendOutcome) -> events.TerminalEvent | None:
    """On a quiet stream: the terminal event if the generation has ended, else None. A generation of
    this process that ended without its terminal event reaching this channel (a layer that dropped a
    message) must still end the stream, not leave it open forever."""
    gen = outcome.generation
    if gen is None:
        return await _check_leader(outcome)
    if gen.done.done() and not gen.done.cancelled() and gen.done.exception() is None:
        return gen.done.result().copy()
    return None


async def terminal_now(outcome: SendOutcome) -> events.TerminalEvent | None:
    """The terminal event of a finished send, or None while it still runs."""
    return await _terminal_from_db(outcome.assistant_message["id"], outcome.request_id)


@db_async
def _terminal_from_db(message_id: int, request_id: str) -> events.TerminalEvent | None:
    msg = Message.objects.filter(pk=message_id).first()
    if msg is None:
        return events.message_error(request_id=request_id, code="not_found", message="The reply was deleted.")
    (data,) = usage.messages_with_usage([events.message_data(msg)])
    if msg.status == Message.Status.COMPLETE:
        return events.message_done(request_id=request_id, message=data)
    if msg.status == Message.Status.CANCELLED:
        return events.message_cancelled(request_id=request_id, message=data)
    if msg.status == Message.Status.ERROR:
        return events.message_error(
            request_id=request_id,
            code=msg.error_code or "provider_error",
            message=msg.error_message,
            assistant=data,
        )
    return None


async def cancel(*, user: AbstractBaseUser, request_id: str) -> events.MessageData:
    """Cancel a running generation. Raises services.NotFound / services.Conflict."""
    message = await db_async(services.message_cancel)(user=user, request_id=request_id)
    await generation_service().cancel_everywhere(message["id"])
    return message


@db_async
def _snapshot_page(thread_id: int) -> dict[str, Any]:
    return branches.branch_page(thread=thread_id)  # the branch shown (#18)


async def snapshot(*, thread_id: int) -> events.SnapshotEvent:
    """What a viewer needs to show the thread now: its newest page of messages, and the text streamed
    so far."""
    svc = generation_service()
    svc.ensure_started()  # a restarted process starts sweeping its predecessor's orphans now
    in_flight = await svc.in_flight(thread_id)
    page = await _snapshot_page(thread_id)
    return events.snapshot(page["messages"], in_flight, has_more=page["has_more"], tree=page)
