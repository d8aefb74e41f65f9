"""A coalesce key's whole life, in one place: identical concurrent sends share one provider call.

    replayed / remember   a request_id seen before answers with the rows it got then (24 h); from its
             | forget     first step a send holds its request_id, so a concurrent send with another body
                          is refused (422) rather than handed this one's rows; a send that fails before
                          it has rows lets go of it
    join                  derive the burst's key (a running leader's prekey, else the thread's head)
                          and claim it: the first caller leads, the others follow
    follow                a follower's answer: its leader's rows, or the leader's failure
    leading -> published  the leader's rows exist: followers answer with them; the key then lives while
             | failed     the generation runs, or the leader failed before its rows and its followers
                          are told why (threads/errors.py)
    renew / finish        the generation keeps the lease while it runs, then keeps the result for
             | release    COALESCE_RESULT_TTL_S (an error for COALESCE_ERROR_TTL_S); a generation that
                          ends without finishing lets it lapse like an unrenewed lease
    alive                 a follower elsewhere checks its leader still renews

The decisions are pure (threads/coalesce_math.py); storage is a backend (threads/coalesce_store.py:
in process, or Redis shared by every process).
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core.dbasync import db_async
from core.singleflight import Singleflight
from ops.flags import flag_enabled
from threads import errors, selectors
from threads.coalesce_math import (
    LastExchange,
    Mode,
    body_fingerprint,
    burst_anchor,
    burst_prekey,
    coalesce_key,
    coalesce_mode,
)
from threads.coalesce_store import LEASE_S, Claim, CoalesceFailed, Info, Ref, coalescer
from threads.models import Thread
from threads.validation import InvalidInput, SendRequest

__all__ = ["LEASE_S", "Burst", "Info", "Ref"]


# --- request_id aliases -------------------------------------------------------------------------------


def fingerprint(*, thread_id: int, req: SendRequest) -> str:
    """What must match for a reused request_id to be a replay rather than a 422."""
    return body_fingerprint(
        thread_id=thread_id,
        content=req.content,
        parent_id=-1 if req.new_root else req.parent_id,  # a new root is not "continue the branch"
        idempotent=req.idempotent,
        tools=req.tools,
    )


def _alias(user_id: int, request_id: str) -> str:
    return f"rid:{user_id}:{request_id}"


async def replayed(*, user_id: int, req: SendRequest, fp: str) -> Ref | None:
    """The rows an earlier send with this request_id got, or None: this send then holds the request_id
    until it `remember`s or `forget`s it (a twin with the same body, in flight, goes on: coalescing
    makes the two one). A request_id the server made up is new: nothing to look up. Raises
    InvalidInput (422) when the body differs, also from a send still in flight."""
    if not req.request_id_given:
        return None
    known = await coalescer().alias_claim(_alias(user_id, req.request_id), fp)
    if known is None:
        return None
    if known[0] != fp:
        raise InvalidInput(
            "idempotency_mismatch",
            "This request_id was already used with a different body; use a new request_id.",
            status=422,
        )
    return known[1]


async def remember(*, user_id: int, req: SendRequest, fp: str, info: Info) -> None:
    """A later send with this request_id (and body) answers with `info`'s rows."""
    ref: Ref = {
        "request_id": info["request_id"],
        "user_message_id": info["user_message"]["id"],
        "assistant_message_id": info["assistant_message"]["id"],
    }
    await coalescer().alias_set(_alias(user_id, req.request_id), fp, ref)


async def forget(*, user_id: int, req: SendRequest, fp: str) -> None:
    """The send failed before it had rows: its request_id is free again (unless a twin with the same
    body has recorded its rows meanwhile)."""
    if req.request_id_given:
        await coalescer().alias_drop(_alias(user_id, req.request_id), fp)


# --- a burst: claim, follow, lead ---------------------------------------------------------------------


def mode(req: SendRequest) -> Mode:
    """`coalesce`, `bypass` (this send must not be merged) or `off` (the flag is off)."""
    return coalesce_mode(enabled=flag_enabled("COALESCE_ENABLED"), idempotent=req.idempotent, tools=req.tools)


@dataclass(slots=True)
class Burst:
    """A send's place in its burst: the key it claimed and what the claim answered."""

    key: str
    prekey: str
    claim: Claim

    @property
    def leads(self) -> bool:
        return self.claim.role == "leader"


async def join(thread: Thread, req: SendRequest) -> Burst:
    """Derive the send's key and claim it. A send matching a leader of this loop that is generating
    joins it without reading the thread's head (in a burst of 200, 199 reads the leader's writes would
    queue behind); sends that arrive before any leader claimed share one head read."""
    prekey = burst_prekey(
        thread_id=thread.pk,
        parent_id=-1 if req.new_root else req.parent_id,
        content=req.content,
        provider=thread.provider,
        model=thread.model,
        params=key_params(thread),
    )
    key = _running_bursts().get(prekey) or await _deriving.do(prekey, lambda: _derive_key(thread, req))
    return Burst(key=key, prekey=prekey, claim=await coalescer().claim(key))


async def follow(burst: Burst) -> Info:
    """A follower's answer: its leader's rows, waited for if not yet published. Raises the leader's
    failure as InvalidInput (threads/errors.py says which)."""
    try:
        if burst.claim.error is not None:
            raise CoalesceFailed(burst.claim.error)
        return burst.claim.info or await coalescer().wait_info(burst.key)
    except CoalesceFailed as exc:
        raise errors.follower_error(exc.error) from exc


def leading(burst: Burst) -> None:
    """The leader starts: later sends of this burst in this loop skip the head read."""
    _running_bursts()[burst.prekey] = burst.key


async def failed(burst: Burst, exc: BaseException) -> None:
    """The leader raised `exc` before its rows existed: its followers are told, not left to wait."""
    _running_bursts().pop(burst.prekey, None)
    await coalescer().fail(burst.key, errors.follower_failure(exc))


async def published(burst: Burst, info: Info, *, generating: asyncio.Future[Any] | None) -> None:
    """The leader's rows exist. While `generating` runs the burst's fast path lasts; a leader that only
    found rows written earlier (`generating` None) starts no generation that would finish the key.
    Both hold even when publishing raises (Redis gone): the prekey would otherwise stay for good."""
    running = _running_bursts()
    if generating is None:
        running.pop(burst.prekey, None)
    else:  # later sends read the head again once the generation ends
        generating.add_done_callback(lambda _: running.pop(burst.prekey, None))
    try:
        await coalescer().publish(burst.key, info)
    finally:
        if generating is None:
            coalescer().release(burst.key)


# --- the generation's side ----------------------------------------------------------------------------


async def renew(key: str) -> None:
    """The leader generates: followers in other processes see it alive for another LEASE_S."""
    await coalescer().renew(key)


async def finish(key: str, *, ok: bool, keep: bool = True) -> None:
    """The generation ended: its result answers identical sends for the result (or error) TTL (not
    at all when not `keep`: a regenerate's)."""
    await coalescer().finish(key, ok=ok, keep=keep)


def release(key: str) -> None:
    """No `finish` will come (a generation cut short by a bug): the key lapses like an unrenewed lease.
    After a `finish`, nothing changes."""
    coalescer().release(key)


async def alive(key: str) -> bool:
    """Whether the key's leader still holds its lease (always, in process)."""
    return await coalescer().alive(key)


# --- key derivation and this loop's running bursts -----------------------------------------------------


async def _derive_key(thread: Thread, req: SendRequest) -> str:
    """The coalesce key of a send: its burst's anchor needs the thread's head as it stood (unless the
    client named the message it answers: then that is the anchor, and the head is not read)."""
    if req.parent_id is not None or req.new_root:
        last = LastExchange(head_id=None)
    else:
        last = LastExchange(**await db_async(selectors.last_exchange)(thread_id=thread.pk))
    anchor = burst_anchor(
        parent_id=req.parent_id,
        content=req.content,
        last=last,
        result_ttl_s=settings.COALESCE_RESULT_TTL_S,
    )
    return coalesce_key(
        thread_id=thread.pk,
        anchor_id=anchor,
        content=req.content,
        provider=thread.provider,
        model=thread.model,
        params=key_params(thread),
    )


def key_params(thread: Thread) -> str:
    """What else changes the answer: the system prompt (a hash, so keys stay short)."""
    prompt = thread.system_prompt
    return "" if not prompt else "sys:" + hashlib.sha256(prompt.encode()).hexdigest()[:32]


# Sends of one burst that arrive before its leader has claimed share one derivation of the key (the
# same head read) instead of each querying the thread while the leader's writes queue behind them.
_deriving: Singleflight[str] = Singleflight()
_bursts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, str]] = weakref.WeakKeyDictionary()


def _running_bursts() -> dict[str, str]:
    """This loop's leaders that are generating: prekey -> coalesce key."""
    return _bursts.setdefault(asyncio.get_running_loop(), {})
