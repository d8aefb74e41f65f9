"""Async use cases of the conversation tree (#18): regenerate a reply, change a thread (rename, archive,
switch branch). Shared by the JSON API and the WebSocket consumer, like threads/chat.py.

A regenerate is a deliberate new call: its coalesce key (the user message answered again, marked as a
regenerate) is shared only while the call runs, so identical concurrent regenerates share one call, and
it is forgotten when the call ends (Generation.keep_result), so a later one is never answered from a
finished result. Both go through the pacer, like every generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser

from core.dbasync import db_async
from core.outages import DEPENDENCY_DOWN
from ops import metrics
from ops.flags import flag_enabled
from threads import charging, chat, coalescing, events, quotas, services, tree
from threads.coalesce_math import coalesce_key
from threads.coalesce_store import coalescer
from threads.generation import generation_service
from threads.models import Thread
from threads.outcomes import SendOutcome


@dataclass(frozen=True, slots=True)
class RegenerateRequest:
    message_id: int
    request_id: str
    stream: bool = False
    idempotent: bool = True


def regenerate_key(*, thread: Thread, user_message_id: int) -> str:
    """The key identical regenerates share while one runs (never a send's: `params` differs)."""
    return coalesce_key(
        thread_id=thread.pk,
        anchor_id=user_message_id,
        content="",
        provider=thread.provider,
        model=thread.model,
        params="regenerate",
    )


async def regenerate(
    *, user: AbstractBaseUser, thread: Thread, req: RegenerateRequest, reply_channel: str | None = None
) -> SendOutcome:
    """A new reply to the user message that assistant message `req.message_id` answers: lead (write the
    sibling, start the generation), or follow an identical regenerate in flight. Detached from the
    caller like chat.send, so a client that leaves cannot strand the followers."""
    task = asyncio.create_task(
        _regenerate(user=user, thread=thread, req=req, reply_channel=reply_channel),
        context=contextvars.Context(),
    )
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return await asyncio.shield(task)


async def _regenerate(
    *, user: AbstractBaseUser, thread: Thread, req: RegenerateRequest, reply_channel: str | None
) -> SendOutcome:
    # A new call: the thread's model now (a socket's copy may predate a switch), checked like a send's.
    thread = await chat.thread_for_call(user=user, thread=thread)
    user_msg = await db_async(tree.regenerate_target)(thread_id=thread.pk, message_id=req.message_id)
    lead = functools.partial(
        _lead, user=user, thread=thread, req=req, reply_channel=reply_channel, user_message_id=user_msg["id"]
    )
    if not req.idempotent or not flag_enabled("COALESCE_ENABLED"):
        await quotas.send_admit(user_id=user.pk)
        return await lead(key=None)
    key = regenerate_key(thread=thread, user_message_id=user_msg["id"])
    burst = coalescing.Burst(key=key, prekey=key, claim=await coalescer().claim(key))
    if not burst.leads:
        await quotas.follow_admit(user_id=user.pk)
        info = await coalescing.follow(burst)
        metrics.coalesce("follower")
        # Like a send's follower: one call saved, written before it is answered (its leader pays).
        await charging.note_saved(user_id=user.pk, info=info, thread=thread)
        return SendOutcome(
            request_id=info["request_id"],
            coalesced="follower",
            user_message=info["user_message"],
            assistant_message=info["assistant_message"],
            generation=generation_service().running.get(info["assistant_message"]["id"]),
            key=key,
        )
    try:
        await quotas.send_admit(user_id=user.pk)
        outcome = await lead(key=key)
    except BaseException as exc:
        await coalescing.failed(burst, exc)
        # Its followers are told; a later regenerate is not (a send's failure is kept for the error TTL).
        with contextlib.suppress(*DEPENDENCY_DOWN):
            await coalescer().finish(key, ok=False, keep=False)
        raise
    generating = outcome.generation.done if outcome.generation is not None else None
    published: coalescing.Info = {
        "request_id": outcome.request_id,
        "user_message": outcome.user_message,
        "assistant_message": outcome.assistant_message,
    }
    await coalescing.published(burst, published, generating=generating)
    return outcome


async def _lead(
    *,
    user: AbstractBaseUser,
    thread: Thread,
    req: RegenerateRequest,
    reply_channel: str | None,
    key: str | None,
    user_message_id: int,
) -> SendOutcome:
    """A regenerate is a new call, paid like a send (charging.paid: 429 budget_exceeded past one of
    the regenerating user's budgets)."""

    async def context() -> list[tuple[str, str]]:
        return await db_async(services.regenerate_context)(thread=thread, user_message_id=user_message_id)

    async def lead(reservation: charging.Reservation | None) -> SendOutcome:
        return await _lead_reserved(
            user=user, thread=thread, req=req, reply_channel=reply_channel, key=key, reservation=reservation
        )

    return await charging.paid(user_id=user.pk, thread=thread, context=context, lead=lead)


async def _lead_reserved(
    *,
    user: AbstractBaseUser,
    thread: Thread,
    req: RegenerateRequest,
    reply_channel: str | None,
    key: str | None,
    reservation: charging.Reservation | None,
) -> SendOutcome:
    prepared = await db_async(tree.regenerate_prepare)(
        thread=thread, message_id=req.message_id, request_id=req.request_id
    )
    svc = generation_service()
    if prepared.replay:  # rows written earlier: no new call (charging.paid gives the reservation back)
        return SendOutcome(
            request_id=prepared.request_id,
            coalesced="follower",
            user_message=prepared.user_message,
            assistant_message=prepared.assistant_message,
            generation=svc.running.get(prepared.assistant_message["id"]),
        )
    metrics.coalesce("leader" if key is not None else "bypass")
    only = None if flag_enabled("STREAM_FANOUT_ENABLED") else reply_channel
    gen = await svc.start(
        prepared,
        reply_channel=only,
        coalesce_key=key,
        keep_result=False,
        payer_id=user.pk,
        reservation=reservation,
    )
    # The branch shown changed: every open tab of the thread shows the new reply in place of the old.
    await announce(thread.pk)
    return SendOutcome(
        request_id=prepared.request_id,
        coalesced="leader" if key is not None else "bypass",
        user_message=prepared.user_message,
        assistant_message=prepared.assistant_message,
        generation=gen,
    )


async def announce(thread_id: int) -> events.ThreadData | None:
    """Tell every open tab of the thread that it changed (`thread.updated`, after commit); each socket
    then sends its page a fresh snapshot of the branch shown."""
    thread = await db_async(Thread.objects.filter(pk=thread_id).first)()
    if thread is None:
        return None
    event = events.thread_updated(events.thread_data(thread))
    await generation_service().broadcast(thread_id, event)
    return event["thread"]
