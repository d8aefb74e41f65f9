"""Who pays for a generation, and what coalescing saved (billing/ keeps the records and budgets).

    outcome = await paid(user_id=..., thread=..., context=..., lead=lambda reservation: ...)
    ... the run ends -> finish.terminal -> await charge(gen, status=...)   # before its terminal event
    await note_saved(user_id=..., info=..., thread=...)   # a follower, before its answer

A coalesced burst is one call, charged once, to the user whose send led it; each follower records what
it saved (the tokens and cost of the call it followed, read with that call's charge). Both are written
before the answer they belong to is told, so a client that reads its usage after `done` finds them.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, TypeVar

from billing import budgets, services
from billing.budgets import Reservation
from billing.prices import aprices_for
from billing.rules import cost_usd, estimate_prompt_tokens, estimate_tokens
from core.dbasync import db_async
from core.outages import DATABASE_DOWN
from ops import metrics
from providers import Completion
from threads import events, finish
from threads.models import Thread

if TYPE_CHECKING:
    from threads.coalescing import Info
    from threads.generation_state import Generation

log = logging.getLogger(__name__)

# The (role, content) context a generation would be sent, read only when a budget applies.
ContextLoader = Callable[[], Awaitable[Sequence[tuple[str, str]]]]


class _Led(Protocol):
    @property
    def generation(self) -> Generation | None: ...


Led = TypeVar("Led", bound=_Led)


async def paid(
    *,
    user_id: int,
    thread: Thread,
    context: ContextLoader,
    lead: Callable[[Reservation | None], Awaitable[Led]],
) -> Led:
    """The one place a generation is paid for (a send's and a regenerate's leaders): a call's worth of
    the user's budgets is reserved first (raises BudgetExceeded), `lead(reservation)` starts the
    generation, and the reservation is given back unless a generation holding it started (a failure,
    a replay of rows written earlier). The generation's end settles it (`charge`)."""
    reservation = await admit(user_id=user_id, thread=thread, context=context)
    try:
        outcome = await lead(reservation)
    except BaseException:
        await asyncio.shield(release(reservation))
        raise
    if outcome.generation is None or outcome.generation.reservation is not reservation:
        await release(reservation)
    return outcome


async def admit(*, user_id: int, thread: Thread, context: ContextLoader) -> Reservation | None:
    """Reserve a call's worth of the user's budgets: the estimated input of the context the call would
    be sent (the system prompt and the path's messages, as the context builder bounds them) plus
    BUDGET_RESERVE_OUTPUT_TOKENS of output. The context is read only when a budget applies."""

    async def prompt_tokens() -> int:
        messages = list(await context())
        if thread.system_prompt:
            messages.insert(0, ("system", thread.system_prompt))
        return estimate_prompt_tokens(messages)

    return await budgets.admit(
        user_id=user_id, provider=thread.provider, model=thread.model, prompt_tokens=prompt_tokens
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


def status_of(gen: Generation) -> str:
    """How the run ended, by its terminal event (still running: cancelled)."""
    if gen.done.done() and not gen.done.cancelled():
        return STATUS_OF_EVENT.get(gen.done.result()["type"], "error")
    return "cancelled"


STATUS_OF_EVENT = {"message.done": "complete", "message.cancelled": "cancelled", "message.error": "error"}


async def charge(gen: Generation, *, status: str) -> None:
    """The generation ended as `status`: charge its call to its payer (the thread's owner if none was
    named) and settle its budget reservation with the real usage. Once per generation (the first
    ending told wins); never raises: a run must end whatever this meets."""
    if gen.charged:
        return
    gen.charged = True
    try:
        await _charge(gen, status)
    except RuntimeError as exc:  # the process is stopping: its database threads are gone
        log.warning("usage of %s not recorded: %s", gen.request_id, exc)
    except Exception:
        log.exception("usage of %s not recorded", gen.request_id)
        await release(gen.reservation)


async def _charge(gen: Generation, status: str) -> None:
    text = gen.text()
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
        followers = await finish.save(
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
    gen.usage = events.usage_data(input_tokens=inp, output_tokens=out, cost_usd=cost)
    if followers is not None:
        metrics.usage(gen.provider, gen.model, input_tokens=inp, output_tokens=out, cost_usd=float(cost))
        metrics.coalesce_saved(cost_usd=float(cost) * followers)


def _owner_of(*, thread_id: int) -> int | None:
    return Thread.objects.filter(pk=thread_id).values_list("owner_id", flat=True).first()


async def note_saved(*, user_id: int, info: Info, thread: Thread) -> None:
    """A follower's send saved one call: recorded before the follower is answered (its tokens and cost
    are those of the followed call's charge). The savings noted in one turn of the loop are written
    together: a burst of a thousand followers is a few writes, not a thousand."""
    metrics.coalesce_saved(calls=1)
    entry = services.Saved(
        user_id=user_id,
        message_id=info["assistant_message"]["id"],
        request_id=info["request_id"],
        provider=thread.provider,
        model=thread.model,
    )
    loop = asyncio.get_running_loop()
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = _SavedBatch(loop)
        loop.call_soon(_flush, loop)
    batch.entries.append(entry)
    # Shielded: a follower that goes away leaves the batch's write to finish for the others.
    await asyncio.shield(batch.written)


class _SavedBatch:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.entries: list[services.Saved] = []
        self.written: asyncio.Future[None] = loop.create_future()


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SavedBatch] = weakref.WeakKeyDictionary()


def _flush(loop: asyncio.AbstractEventLoop) -> None:
    batch = _batches.pop(loop)
    task = loop.create_task(_write_saved(batch))
    _writing.add(task)
    task.add_done_callback(_writing.discard)


_writing: set[asyncio.Task[None]] = set()


async def _write_saved(batch: _SavedBatch) -> None:
    try:
        costs = await finish.save(services.usage_saved_many, entries=batch.entries)
    except DATABASE_DOWN:
        log.warning("saving of %d followers not recorded: the database is down", len(batch.entries))
    except Exception:  # a follower's answer never fails for its bookkeeping
        log.exception("saving of %d followers not recorded", len(batch.entries))
    else:  # calls already charged (a result reused): their cost is known now
        metrics.coalesce_saved(cost_usd=float(sum(costs, Decimal(0))))
    finally:
        batch.written.set_result(None)
