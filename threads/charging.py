"""Who pays for a generation, and what coalescing saved (billing/ keeps the records and budgets).

    reservation = await admit(user=..., thread=..., req=...)   # before a generation starts: 429 past a budget
    gen = await svc.start(prepared, payer_id=user.pk, reservation=reservation)
    ... the run ends -> await charge(gen)   # the call's usage charged to the leader's user, budget settled
    note_saved(user_id=..., info=..., thread=...)   # a follower: one call saved, in the background

A coalesced burst is one call, charged once, to the user whose send led it; each follower records what
it saved (the tokens and cost of the call it followed, read with that call's charge).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from billing import budgets, services
from billing.budgets import Reservation
from billing.prices import aprices_for
from billing.rules import cost_usd, estimate_prompt_tokens, estimate_tokens
from core import loopres
from core.dbasync import db_async
from core.outages import DATABASE_DOWN
from ops import metrics
from providers import Completion
from threads import finish
from threads.models import Thread

if TYPE_CHECKING:
    from threads.coalescing import Info
    from threads.generation import Generation

log = logging.getLogger(__name__)


async def admit(*, user_id: int, thread: Thread, content: str) -> Reservation | None:
    """Reserve a call's worth of the user's budgets before a generation starts (raises BudgetExceeded).
    The prompt is estimated from the new message alone (a regenerate's: none): the history is read
    with the rows, later."""
    return await budgets.admit(
        user_id=user_id,
        provider=thread.provider,
        model=thread.model,
        prompt_tokens=estimate_tokens(content) + 4,
    )


async def release(reservation: Reservation | None) -> None:
    """The generation never started (a replay, a failure before it): give the reservation back."""
    await budgets.settle(reservation, tokens=0, cost=Decimal(0))


def call_usage(
    completion: Completion | None, text: str, history: Sequence[tuple[str, str]]
) -> tuple[int, int, bool]:
    """(input tokens, output tokens, estimated): the provider's report where it gave one, else an
    estimate (a cancelled call has no report: its output so far is counted)."""
    inp = completion.input_tokens if completion is not None else None
    out = completion.output_tokens if completion is not None else None
    estimated = inp is None or out is None
    if inp is None:
        inp = estimate_prompt_tokens(history)
    if out is None:
        out = estimate_tokens(text)
    return inp, out, estimated


def _status(gen: Generation) -> str:
    if gen.done.done() and not gen.done.cancelled():
        return {"message.done": "complete", "message.cancelled": "cancelled"}.get(
            gen.done.result()["type"], "error"
        )
    return "cancelled"


async def charge(gen: Generation) -> None:
    """The generation ended: charge its call to its payer (the thread's owner if none was named) and
    settle its budget reservation with the real usage. Never raises: a run must end whatever this meets."""
    try:
        await _charge(gen)
    except RuntimeError as exc:  # the process is stopping: its database threads are gone
        log.warning("usage of %s not recorded: %s", gen.request_id, exc)
    except Exception:
        log.exception("usage of %s not recorded", gen.request_id)
        await release(gen.reservation)


async def _charge(gen: Generation) -> None:
    text, status = gen.text(), _status(gen)
    # No report, no text and never asked (cancelled before the call, or refused by the pacer): no call.
    if gen.completion is None and not text and not (status == "cancelled" and gen.called):
        await release(gen.reservation)
        return
    inp, out, estimated = call_usage(gen.completion, text, gen.history)
    cost = cost_usd(input_tokens=inp, output_tokens=out, prices=await aprices_for(gen.provider, gen.model))
    await budgets.settle(gen.reservation, tokens=inp + out, cost=cost)
    payer = gen.payer_id
    if payer is None:
        payer = await db_async(_owner_of)(thread_id=gen.thread_id)
        if payer is None:
            return  # the thread was deleted with its owner
    try:
        saved = await finish.save(
            services.usage_charge,
            user_id=payer,
            message_id=gen.message_id,
            request_id=gen.request_id,
            provider=gen.provider,
            model=gen.model,
            input_tokens=inp,
            output_tokens=out,
            cost_usd=cost,
            estimated=estimated,
            status=status,
        )
    except DATABASE_DOWN:
        log.warning("usage of %s not recorded: the database is down", gen.request_id)
        return
    if saved:
        metrics.usage(gen.provider, gen.model, input_tokens=inp, output_tokens=out, cost_usd=float(cost))
        followers = await db_async(services.usage_saved_count)(message_id=gen.message_id)
        metrics.coalesce_saved(cost_usd=float(cost) * followers)


def _owner_of(*, thread_id: int) -> int | None:
    return Thread.objects.filter(pk=thread_id).values_list("owner_id", flat=True).first()


_background: set[asyncio.Task[Any]] = set()


def charge_soon(gen: Generation) -> None:
    """`charge(gen)` in a task of its own (the run's cleanup neither waits for it nor can cancel it)."""
    _spawn(charge(gen))


_draining: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _spawn(coro: Any) -> None:
    loop = asyncio.get_running_loop()
    if loop not in _draining:  # a closing loop finishes its records before its Redis client closes
        _draining.add(loop)
        loopres.register(drain, stage=loopres.Stage.CLIENT)
    task = asyncio.create_task(coro, context=contextvars.Context())
    _background.add(task)
    task.add_done_callback(_background.discard)


async def drain() -> None:
    """Wait for the usage records being written (tests; a process stopping)."""
    loop = asyncio.get_running_loop()
    while mine := [t for t in _background if t.get_loop() is loop]:
        await asyncio.gather(*mine, return_exceptions=True)


def note_saved(*, user_id: int, info: Info, thread: Thread) -> None:
    """A follower's send saved one call: recorded in the background (the follower's answer waits for
    nothing). Its tokens and cost are those of the followed call's charge."""
    metrics.coalesce_saved(calls=1)
    _spawn(_note_saved(user_id, info["assistant_message"]["id"], info["request_id"], thread))


async def _note_saved(user_id: int, message_id: int, request_id: str, thread: Thread) -> None:
    try:
        cost = await db_async(services.usage_saved)(
            user_id=user_id,
            message_id=message_id,
            request_id=request_id,
            provider=thread.provider,
            model=thread.model,
        )
    except DATABASE_DOWN:
        log.warning("saving of follower %s not recorded: the database is down", request_id)
        return
    if cost is not None:  # the call had already ended (a result reused): its cost is known now
        metrics.coalesce_saved(cost_usd=float(cost))
