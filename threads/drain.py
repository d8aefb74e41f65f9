"""A stopping process's generations: let them finish, and save whatever is still running at the deadline.

Used by the graceful shutdown (chatapp/shutdown.py): the process's sockets are already closed, so the
viewers follow the generation from other processes (the stream state and the thread group live in
Redis); this process keeps streaming until its replies end or the grace period does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from threads import charging, events, finish, services
from threads.generation import generation_service
from threads.generation_state import Generation

log = logging.getLogger(__name__)

RECHECK_S = 0.25
RESTART_CODE = "interrupted"
RESTART_MESSAGE = (
    "The server process generating this reply was restarted before it finished; the text so far is kept."
)


def time_left(*, deadline: float, now: float) -> float:
    """Seconds until `deadline`, never negative."""
    return max(0.0, deadline - now)


async def generations_finish(
    *, deadline: Callable[[], float], clock: Callable[[], float] = time.monotonic
) -> int:
    """Wait until no generation runs in this loop's service or `deadline()` (on `clock`; it may move
    closer meanwhile) passes; then interrupt those still running. Generations that start meanwhile (a
    send already on its way) are waited for too. Returns how many were interrupted."""
    svc = generation_service()
    while svc.running:
        left = time_left(deadline=deadline(), now=clock())
        tasks = {g.task for g in svc.running.values() if g.task is not None}
        if left <= 0:
            break
        if not tasks:  # registered, task not created yet: the next turn creates it
            await asyncio.sleep(min(left, 0.01))
            continue
        # In slices: a second SIGTERM brings the deadline forward.
        await asyncio.wait(tasks, timeout=min(left, RECHECK_S), return_when=asyncio.FIRST_COMPLETED)
    left_running = list(svc.running.values())
    for gen in left_running:
        await generation_interrupt(gen)
    return len(left_running)


async def generation_interrupt(gen: Generation) -> None:
    """Save the text so far as an `interrupted` error (the page offers Retry), tell everyone, stop the
    run. The row is written before the task is cancelled: a cancel first would save it as `cancelled`
    (Stop's outcome, which offers no Retry). A result waiting for the database is left to the sweep,
    which saves its text from the stream state."""
    svc = generation_service()
    if gen.settling or gen.task is None or gen.task.done():
        if gen.task is not None:
            gen.task.cancel()
        return
    try:
        final = await finish.save(
            services.message_finalize,
            message_id=gen.message_id,
            status="error",
            content=gen.text(),
            error_code=RESTART_CODE,
            error_message=RESTART_MESSAGE,
        )
    except Exception:  # the database is away: the sweep of another process saves the streamed text
        log.warning("generation %s not saved at shutdown", gen.request_id, exc_info=True)
        final = None
    if final is not None:  # charged before anyone hears the end, like every ending (finish.terminal)
        await charging.charge(gen, status="error")
        if gen.done.done():  # it ended meanwhile: its own ending told everyone what the row says
            gen.task.cancel()
            return
    # No await between the cancel and `terminal` setting `done`: the run's cancel path then finds the
    # row finished and `done` set, and tells nobody a second time.
    gen.task.cancel()
    if final is None:
        return
    log.warning("generation %s interrupted by shutdown after %d chars", gen.request_id, len(final["content"]))
    event = events.message_error(
        request_id=gen.request_id, code=RESTART_CODE, message=RESTART_MESSAGE, assistant=final
    )
    await finish.terminal(gen, svc.layer, event)
