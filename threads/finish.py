"""How a generation ends: its result saved (retried while the database blips), its call charged
(threads/charging.py), then its burst key finished (threads/coalescing.py), the event broadcast to the
thread, and its terminal event given to its waiters in this process. Every ending goes through `terminal`
once the row says how it ended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from channels.layers import BaseChannelLayer

from core.dbasync import db_async
from core.outages import DATABASE_DOWN, DATABASE_UNAVAILABLE
from ops import metrics
from providers import Completion
from threads import charging, coalescing, events, fanout, selectors, services

if TYPE_CHECKING:
    from threads.generation_state import Generation

log = logging.getLogger(__name__)

# Finalizing writes retried while the database blips: about 3 s in all. Not tenacity (providers/_retry.py
# uses it for its backoff and Retry-After): a fixed list of delays on one exception family is this loop.
SAVE_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.5)
# How long this process's waiters wait for the other processes to be told first (a Redis round trip or
# two, normally a few ms): past it (Redis slow or away) they hear the end anyway.
TELL_FIRST_S = 0.05


async def save(fn: Any, **kwargs: Any) -> Any:
    """A finalizing write (`fn`, a service), retried while the database is briefly unreachable (or,
    with SQLite, locked): a result is worth a few seconds of retries. Raises DATABASE_DOWN errors
    once the retries are spent."""
    for delay in SAVE_RETRY_DELAYS_S:
        try:
            return await db_async(fn)(**kwargs)
        except DATABASE_DOWN:
            log.warning("saving %s failed; retrying in %.2f s", kwargs.get("message_id"), delay)
            await asyncio.sleep(delay)
    return await db_async(fn)(**kwargs)


async def unsaved(gen: Generation, layer: BaseChannelLayer) -> None:
    """The result could not be saved: the sender and the viewers still hear the end (the call is
    charged when the result is saved, later)."""
    await terminal(
        gen,
        layer,
        events.message_error(
            request_id=gen.request_id,
            code=DATABASE_UNAVAILABLE[0],
            message="The reply could not be saved: the database is not answering.",
        ),
        charge=False,
    )


async def complete(gen: Generation, layer: BaseChannelLayer, completion: Completion | None) -> None:
    """The stream ended well: save the text (unless a cancel got there first)."""
    final = await save(
        services.message_finalize,
        message_id=gen.message_id,
        status="complete",
        content=gen.text(),
        input_tokens=completion.input_tokens if completion else None,
        output_tokens=completion.output_tokens if completion else None,
        finish_reason=completion.finish_reason if completion else "stop",
    )
    if final is None:
        # Cancelled from another process while the last tokens arrived: the cancel won.
        await cancelled(gen, layer)
        return
    await terminal(gen, layer, events.message_done(request_id=gen.request_id, message=final))


async def cancelled(gen: Generation, layer: BaseChannelLayer) -> None:
    """Stop won: mark the row cancelled (if nobody did) and keep the text so far."""
    gen.finished = True
    await save(services.message_cancel_by_id, message_id=gen.message_id)
    final = await save(services.message_save_cancelled, message_id=gen.message_id, content=gen.text())
    if final is None:  # it completed or failed first: tell what it says, unless already told
        if not gen.done.done():
            await from_row(gen, layer)
        return
    await terminal(gen, layer, events.message_cancelled(request_id=gen.request_id, message=final))
    if gen.cancel_at is not None:
        metrics.observe_cancel_ms((time.monotonic() - gen.cancel_at) * 1000)


async def from_row(gen: Generation, layer: BaseChannelLayer) -> None:
    """The row was finalized by someone else first: its sender and viewers hear what it says."""
    data = await save(selectors.message_by_id, message_id=gen.message_id)
    event = None if data is None else events.terminal_event(request_id=gen.request_id, message=data)
    if event is None:  # deleted (or, impossibly, streaming): still end the waiters
        event = events.message_error(
            request_id=gen.request_id, code="not_found", message="The reply was deleted."
        )
    await terminal(gen, layer, event)


async def error(
    gen: Generation,
    layer: BaseChannelLayer,
    code: str,
    message: str,
    retry_after: float | None = None,
    detail: str = "",
) -> None:
    """The provider (or a bug) failed the stream: save the text so far with the error (`detail`, the
    provider's own words, for staff only: viewers get `code` and `message`)."""
    final = await save(
        services.message_finalize,
        message_id=gen.message_id,
        status="error",
        content=gen.text(),
        error_code=code,
        error_message=message,
        error_detail=detail,
    )
    if final is None:
        await cancelled(gen, layer)
        return
    await terminal(
        gen,
        layer,
        events.message_error(
            request_id=gen.request_id,
            code=code,
            message=message,
            assistant=final,
            retry_after=retry_after,
        ),
    )


async def terminal(
    gen: Generation, layer: BaseChannelLayer, event: events.TerminalEvent, *, charge: bool = True
) -> None:
    """Charge the call, tell the other processes (finish the burst key, tell the thread), then resolve
    this process's waiters. Charged first: whoever hears the end (and then reads its usage, or sends
    again) finds the charge written. Told before the waiters here are resolved: answering a burst's
    hundreds of waiters takes this loop a while, and the other processes' waiters would hear the end
    only after it; but the waiters here never wait on Redis longer than TELL_FIRST_S."""
    if charge:
        await charging.charge(gen, status=charging.STATUS_OF_EVENT.get(event["type"], "error"))
    message = event.get("message")
    if message is not None and gen.usage is not None:
        message["usage"] = gen.usage
    told = asyncio.ensure_future(_tell(gen, layer, event))
    try:
        await asyncio.wait({told}, timeout=TELL_FIRST_S)
    except BaseException:
        told.cancel()
        raise
    finally:
        if not gen.done.done():
            gen.done.set_result(event)
            metrics.observe_latency_ms((time.monotonic() - gen.started) * 1000)
    await told


async def _tell(gen: Generation, layer: BaseChannelLayer, event: events.TerminalEvent) -> None:
    """The other processes hear the end: the burst's key (its result answers identical sends) and the
    thread's group."""
    if gen.coalesce_key is not None:
        try:
            await coalescing.finish(
                gen.coalesce_key, ok=event["type"] == "message.done", keep=gen.keep_result
            )
        except Exception:
            log.warning("coalesce finish of %s failed", gen.request_id, exc_info=True)
    try:
        # Terminal events go to the whole group even with fan-out off: other viewers get the result.
        await fanout.broadcast(layer, gen.thread_id, event)
    except Exception:
        log.warning("terminal event of %s not delivered", gen.request_id, exc_info=True)
