"""Async use cases shared by the HTTP API and the WebSocket consumer: send, cancel, snapshot. How a
send's caller then waits for its end is threads/outcomes.py.

Each crosses into sync code once per step (one `db_async` call per service/selector).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from core import urgent
from core.dbasync import db_async
from core.outages import DEPENDENCY_DOWN
from core.ttlcache import TTLCache
from ops import metrics
from ops.flags import flag_enabled
from threads import (
    branches,
    charging,
    coalescing,
    control,
    events,
    modelaccess,
    quotas,
    selectors,
    services,
    usage,
)
from threads.generation import generation_service
from threads.models import Message, Thread
from threads.outcomes import SendOutcome
from threads.validation import SendRequest

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
    # A fresh context (nothing of the request's), urgent if the request is (it holds its thread's turn).
    task = asyncio.create_task(
        _send(user=user, thread=thread, req=req, reply_channel=reply_channel),
        context=urgent.urgent_context(urgent.is_urgent()),
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
