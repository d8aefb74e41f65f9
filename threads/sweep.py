"""The sweep of `streaming` rows that no generation will finish: their process died (killed, crashed,
restarted), perhaps while it waited for the database to save a result (whose text it left in the stream
state, saved here). Each process runs it every ORPHAN_SWEEP_EVERY_S from its
first health check, socket or send (GenerationService.ensure_started); the compare-and-set on the row
makes concurrent sweeps of several processes harmless (one wins, only the winner broadcasts). The same
loop runs the daily audit retention (accounts/retention.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING

from django.conf import settings

from accounts.retention import audit_retention
from core.cancelguard import raise_if_cancelling
from core.dbasync import db_async
from threads import events, selectors, services
from threads.coalesce_store import LEASE_S
from threads.liveness import live_generations
from threads.selectors import StreamingRow
from threads.streamstate import stream_state

if TYPE_CHECKING:
    from threads.generation import GenerationService

log = logging.getLogger(__name__)

# Half a lease: a dead process's rows are failed within about LEASE_S + 2 sweeps (< 15 s; a row it wrote
# in its last seconds, within FIRST_LEASE_GRACE_S + 2 sweeps of its creation).
ORPHAN_SWEEP_EVERY_S = LEASE_S / 2
# A row younger than this is nobody's orphan yet: its generation writes its first lease just after the
# row, and a loaded process (a thousand generations starting at once) can write it seconds late; a live
# generation failed as `interrupted` loses its reply. A dead process's young rows wait this much longer.
FIRST_LEASE_GRACE_S = LEASE_S
# A row idle this long past the provider's total timeout, with no lease, is failed as `generation_lost`:
# the backstop behind the orphan sweep. Never a row whose lease lives: each retry of a provider call
# gets fresh deadlines, and a result waiting for the database keeps its lease, so both may run longer.
STALE_AFTER_MARGIN_S = 60.0
# Rows read per query: a pass reads them all, a page at a time (live rows do not hide orphans).
SWEEP_PAGE = 500
INTERRUPTED_MESSAGE = (
    "The server process generating this reply stopped (it crashed or was restarted); the text so far is kept."
)


async def sweep_forever(svc: GenerationService) -> None:
    suspects: set[int] = set()
    while True:
        try:
            suspects = await sweep_orphans(svc, suspects)
            if swept := await sweep_stale(running=svc.running):
                log.warning("marked %d abandoned streaming message(s) as errors", swept)
        except Exception:  # the database or Redis may be briefly away; the next sweep retries
            log.warning("stale-message sweep failed", exc_info=True)
        try:
            # Once a UTC day, by one process (accounts/retention.py); otherwise no query at all.
            await audit_retention().prune_if_due()
        except Exception:  # as above: the next pass retries
            log.warning("audit retention pass failed", exc_info=True)
        raise_if_cancelling()  # a cancel redis-py swallowed mid-pass stops the loop here
        await asyncio.sleep(ORPHAN_SWEEP_EVERY_S)


async def streaming_pages(
    *, exclude: Collection[int] = (), idle_for_s: float | None = None
) -> AsyncIterator[tuple[list[StreamingRow], set[int]]]:
    """Every `streaming` row but `exclude`, a page at a time, oldest first, with the ids of the page whose
    generation holds a live lease: orphans are found however many live rows come before them."""
    after = 0
    while True:
        rows = await db_async(selectors.messages_streaming)(
            after_id=after, exclude=exclude, idle_for_s=idle_for_s, limit=SWEEP_PAGE
        )
        if not rows:
            return
        yield rows, await live_generations().alive(r["id"] for r in rows)
        if len(rows) < SWEEP_PAGE:
            return
        after = rows[-1]["id"]


async def sweep_orphans(svc: GenerationService, suspects: set[int], *, now: float | None = None) -> set[int]:
    """Fail the `streaming` rows that no live generation owns: `interrupted`, the text streamed so far
    kept (from the shared stream state), viewers told. A row is failed when its lease was missing at two
    sweeps in a row (ORPHAN_SWEEP_EVERY_S apart, more than a renewal period: a Redis restart that lost
    the leases is healed by the next renewal first) once it is FIRST_LEASE_GRACE_S old, or at once when
    it is older than this process and there is no other process (no Redis). Returns this pass's
    suspects (missing once). `now`: the wall clock (time.time()), the rows' `created` clock."""
    liveness = live_generations()
    now = time.time() if now is None else now
    missing: set[int] = set()
    async for rows, alive in streaming_pages(exclude=list(svc.running)):
        for row in rows:
            if row["id"] in alive or row["id"] in svc.running:
                continue
            ownerless = liveness.owns_everything_before(row["created"])
            if not ownerless and now - row["created"] < FIRST_LEASE_GRACE_S:
                continue  # its generation may not have written its first lease yet
            missing.add(row["id"])
            if row["id"] in suspects or ownerless:
                await _interrupt(svc, row)
    return missing


async def _interrupt(svc: GenerationService, row: StreamingRow) -> None:
    shared = stream_state()
    text = ""
    if shared is not None:
        text = await shared.text_of(message_id=row["id"]) or ""
    final = await db_async(services.message_finalize)(
        message_id=row["id"],
        status="error",
        content=text,
        error_code="interrupted",
        error_message=INTERRUPTED_MESSAGE,
    )
    if final is None:  # it finished meanwhile, or another process's sweep won
        return
    log.warning("generation %s was interrupted (its process stopped)", row["request_id"])
    event = events.message_error(
        request_id=row["request_id"], code="interrupted", message=INTERRUPTED_MESSAGE, assistant=final
    )
    try:
        await svc.broadcast(row["thread_id"], event)
        if shared is not None:
            await shared.remove(message_id=row["id"], thread_id=row["thread_id"])
    except Exception:  # viewers that miss it see the row in their next snapshot
        log.warning("interrupted event of %s not delivered", row["request_id"], exc_info=True)


async def sweep_stale(*, running: Collection[int] = ()) -> int:
    """The backstop: fail rows idle past any generation's lifetime, but never one whose generation holds
    its lease or runs here (each retry of a provider call gets fresh deadlines, so a live reply may
    outlast the total timeout). Returns how many were failed."""
    older_than = settings.PROVIDER_TIMEOUTS["total"] + STALE_AFTER_MARGIN_S
    spare, doomed = set(running), False
    async for rows, alive in streaming_pages(exclude=running, idle_for_s=older_than):
        spare |= alive
        doomed = doomed or any(r["id"] not in alive for r in rows)
    if not doomed:
        return 0
    return int(await db_async(services.messages_fail_stale)(older_than_s=older_than, spare=spare))
