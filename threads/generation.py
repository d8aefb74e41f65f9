"""The generation service: runs provider streams as tasks it owns (never inside a consumer's task),
batches deltas, broadcasts events to the thread's group, persists the result, and cancels on request
from any process.

One service per event loop (`generation_service()`); a daphne process has one loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable

from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings

from core import loopres, urgent
from core.cancelguard import raise_if_cancelling
from core.gcra import Limit
from core.outages import DATABASE_DOWN
from ops import metrics
from providers import (
    ChatMessage,
    Completion,
    GenerationParams,
    ProviderError,
    catalog,
    get_provider,
    stream_with_retries,
)
from providers.pacer import PacerRejected, pacer_for_loop
from threads import charging, coalescing, control, events, fanout, finish, sweep
from threads.coalescing import LEASE_S
from threads.generation_state import Generation
from threads.liveness import live_generations
from threads.services import PreparedSend
from threads.streamstate import stream_state

log = logging.getLogger(__name__)

# A result the database refused even after finish's retries is saved again every UNSAVED_RETRY_S, for up to
# UNSAVED_KEEP_S (the stream state keeps its text for ENTRY_TTL_S, an hour: after this, the sweep can
# still save it as `interrupted`).
UNSAVED_RETRY_S = 5.0
UNSAVED_KEEP_S = 1800.0


# How a run ended, as a step that saves the result and tells everyone (threads/finish.py).
Ending = Callable[[], Awaitable[None]]


class GenerationService:
    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        # By assistant message id: request_ids are the clients' (unique per thread, not per process).
        self.running: dict[int, Generation] = {}
        self.control = control.ControlListener(layer, self.cancel_local)
        self._sweeper: asyncio.Task[None] | None = None

    # --- public ---------------------------------------------------------------------------------

    async def start(
        self,
        prepared: PreparedSend,
        *,
        reply_channel: str | None = None,
        coalesce_key: str | None = None,
        payer_id: int | None = None,
        reservation: charging.Reservation | None = None,
        keep_result: bool = True,
    ) -> Generation:
        gen = Generation(
            request_id=prepared.request_id,
            thread_id=prepared.thread_id,
            message_id=prepared.assistant_message["id"],
            reply_channel=reply_channel,
            coalesce_key=coalesce_key,
            payer_id=payer_id,
            reservation=reservation,
            provider=prepared.provider,
            model=prepared.model,
            history=_sent(prepared),
            keep_result=keep_result,
        )
        # Registered before the wait below: a Stop pressed meanwhile (its row is already written, so
        # the cancel wins the database and answers 200) finds the generation and stops it.
        self.running[gen.message_id] = gen
        try:
            await self._join_control(gen)
        except BaseException:  # (the caller gives the reservation back: charging.paid)
            self.running.pop(gen.message_id, None)
            raise
        # Sent by the generation's sender, first and before any delta, while the provider call is
        # already under way: with a thousand viewers the fan-out of this event takes a while.
        gen.start_event = events.message_start(
            request_id=gen.request_id, user_message=prepared.user_message, message_id=gen.message_id
        )
        params = GenerationParams(model=prepared.model)
        history = [ChatMessage(role, content) for role, content in prepared.history]  # type: ignore[arg-type]
        if prepared.system_prompt:  # each provider sends it its own way (providers/_*.py)
            history.insert(0, ChatMessage("system", prepared.system_prompt))
        # A fresh context: a task created during a request would inherit that request's
        # thread-sensitive executor, and its database calls would fail once the request ended.
        # Urgent (core/urgent.py) until the provider's first token: its way to the provider goes before
        # the intake of the burst that is still arriving.
        gen.task = asyncio.create_task(
            self._run(gen, prepared.provider, params, history),
            name=f"gen:{gen.request_id}",
            context=urgent.urgent_context(),
        )
        return gen

    async def in_flight(self, thread_id: int) -> list[events.InFlight]:
        """Generations of the thread in flight, in every process (Redis) or in this one."""
        shared = stream_state()
        if shared is not None:
            return await shared.in_flight(thread_id)
        return [g.snapshot_entry() for g in self.running.values() if g.thread_id == thread_id]

    def cancel_local(self, message_id: int) -> bool:
        gen = self.running.get(message_id)
        if gen is None or (gen.task is not None and gen.task.done()):
            return False
        if gen.cancel_at is None:
            gen.cancel_at = time.monotonic()
        # Still starting: it never asks the provider. Settling: the stream is over and the result's
        # save is retried; the row's compare-and-set decides, and the text is kept either way.
        if gen.task is not None and not gen.settling:
            gen.task.cancel()
        return True

    async def cancel_everywhere(self, message_id: int) -> None:
        """Stop the generation of assistant message `message_id` in whichever process runs it."""
        if not self.cancel_local(message_id):
            await control.send_cancel(self.layer, message_id)

    async def cancel_all(self, message_ids: Iterable[int]) -> None:
        """Stop these generations wherever they run (those of a deleted thread)."""
        for message_id in message_ids:
            await self.cancel_everywhere(message_id)

    async def broadcast(self, thread_id: int, event: events.ClientEvent, *, only: str | None = None) -> None:
        await fanout.broadcast(self.layer, thread_id, event, only=only)

    async def aclose(self) -> None:
        for gen in list(self.running.values()):
            if gen.task is not None:
                gen.task.cancel()
        tasks = [g.task for g in self.running.values() if g.task is not None]
        for background in (self.control.task, self._sweeper):
            if background is not None:
                background.cancel()
                tasks.append(background)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _join_control(self, gen: Generation) -> None:
        """Wait (bounded) until this process hears cancels from the others, then catch a cancel heard
        for this message before it was registered. (The channel is joined at the process's first
        health check or socket, so a send rarely waits here.)"""
        self.ensure_started()
        await self.control.wait_ready()
        if self.control.heard.take(gen.message_id):
            gen.cancel_at = gen.cancel_at or time.monotonic()

    # --- the run --------------------------------------------------------------------------------

    async def _run(
        self, gen: Generation, provider_name: str, params: GenerationParams, history: list[ChatMessage]
    ) -> None:
        # Not urgent (core/urgent.py): only the way to the provider is.
        lease = asyncio.create_task(self._keep_lease(gen), context=urgent.urgent_context(False))
        # How the run ends, saved and told; what is retried if the database refuses it (a cancel's,
        # unless the stream ended otherwise).
        ending: Ending = functools.partial(finish.cancelled, gen, self.layer)
        try:
            ending = await self._generate(gen, provider_name, params, history)
            await ending()
        except asyncio.CancelledError:
            # Cancelled after the stream ended, while the result was being drained or saved (a cancel
            # whose compare-and-set won the race against completion): the cancel stands.
            if not gen.done.done():
                try:
                    await asyncio.shield(finish.cancelled(gen, self.layer))
                except DATABASE_DOWN:  # (the sibling clause below does not catch what this one raises)
                    gen.unsaved = True
                    await asyncio.shield(finish.unsaved(gen, self.layer))
            raise
        except DATABASE_DOWN as exc:
            # Not saved, even after finish's retries: the sender and the viewers hear the end now
            # (nothing may wait forever), and the text is kept until a write succeeds.
            log.warning("generation %s: result not saved (%s)", gen.request_id, type(exc).__name__)
            gen.unsaved = True
            await asyncio.shield(finish.unsaved(gen, self.layer))
            await self._save_later(gen, ending)
        finally:
            lease.cancel()
            self.running.pop(gen.message_id, None)
            if gen.coalesce_key is not None:
                # Normally `finish` has run (then this changes nothing); a generation cut short by a
                # bug must not leave its burst answered from this process's memory for good.
                coalescing.release(gen.coalesce_key)
            try:
                # Shielded: on cancel this still runs, or the entries would linger until their TTLs.
                await asyncio.shield(live_generations().remove(gen.message_id))
                shared = stream_state()
                # Unsaved (the process stops before the database is back): the sweep saves this text.
                if shared is not None and not gen.unsaved:
                    await asyncio.shield(shared.remove(message_id=gen.message_id, thread_id=gen.thread_id))
            except Exception:
                log.warning("stream state of %s not removed", gen.request_id, exc_info=True)
            # Normally charged by its ending (finish.terminal), before its terminal event; a run whose
            # result was never saved (or cut short by a bug) is charged here: what it generated.
            if not gen.charged:
                await asyncio.shield(charging.charge(gen, status=charging.status_of(gen)))

    async def _generate(
        self, gen: Generation, provider_name: str, params: GenerationParams, history: list[ChatMessage]
    ) -> Ending:
        """Stream the reply; returns how it ended, to be saved and told (a cancel is saved here)."""
        if gen.cancel_at is not None:  # stopped while start() waited: the provider is never asked
            raise asyncio.CancelledError
        sender = asyncio.create_task(
            fanout.run_sender(gen, self.layer, flush_s=settings.STREAM_FLUSH_MS / 1000),
            name=f"gen-send:{gen.request_id}",
            context=urgent.urgent_context(False),
        )
        try:
            completion = await self._stream(gen, provider_name, params, history)
        except asyncio.CancelledError:
            # Cancel (Stop, or the service closing): the provider stream's context managers already
            # closed the upstream connection. Save the partial text, tell viewers, then re-raise.
            metrics.provider_call(provider_name, "cancelled")
            sender.cancel()
            await asyncio.shield(finish.cancelled(gen, self.layer))
            raise
        except ProviderError as exc:
            if not isinstance(exc, PacerRejected):  # a rejected request never reached the provider
                metrics.provider_call(provider_name, exc.code)
            await self._drain(gen, sender)
            return functools.partial(
                finish.error,
                gen,
                self.layer,
                exc.code,
                exc.message,
                retry_after=exc.retry_after,
                detail=exc.detail,
            )
        except Exception as exc:  # a bug must not leave the message `streaming` forever
            log.exception("generation %s failed", gen.request_id)
            metrics.provider_call(provider_name, "error")
            await self._drain(gen, sender)
            failure = f"The reply failed: {type(exc).__name__}."
            return functools.partial(finish.error, gen, self.layer, "internal_error", failure)
        metrics.provider_call(provider_name, "ok")
        await self._drain(gen, sender)
        return functools.partial(finish.complete, gen, self.layer, completion)

    async def _stream(
        self, gen: Generation, provider_name: str, params: GenerationParams, history: list[ChatMessage]
    ) -> Completion | None:
        """Queue under the provider's rate limit, then hand each token to the sender. Inside the
        generation's task on purpose: Stop cancels it, and a cancelled waiter gives its slot back. Only
        leaders get here: followers take no token."""
        provider = get_provider(provider_name)
        pacer = pacer_for_loop()
        bucket, limit = _pacing(provider_name)
        gen.queue_wait_ms = await pacer.acquire(bucket, limit)
        raise_if_cancelling()  # Stop during the pacer's Redis call: the provider is never asked
        gen.called = True
        metrics.observe_queue_wait_ms(gen.queue_wait_ms)
        completion: Completion | None = None
        async for ev in stream_with_retries(
            provider,
            history,
            params,
            max_retries=settings.PROVIDER_MAX_RETRIES,
            on_rate_limited=functools.partial(pacer.pause, bucket),
        ):
            if isinstance(ev, Completion):
                completion = gen.completion = ev
            elif ev.text:
                if gen.ttft_ms is None:
                    gen.ttft_ms = (time.monotonic() - gen.started) * 1000
                    metrics.observe_ttft_ms(gen.ttft_ms)
                    # The provider answers: the rest of the stream takes its turns with the others
                    # (a thousand urgent streams would leave the process's other work behind).
                    urgent.mark(False)
                gen.pending.append(ev.text)
                gen.wake.set()
        return completion

    async def _keep_lease(self, gen: Generation) -> None:
        """Renew the leases while generating: the coalesce lease (followers elsewhere know the leader
        lives) and the generation's own (the orphan sweep knows its `streaming` row is not abandoned)."""
        while True:
            try:
                await live_generations().renew(gen.message_id)
                if gen.coalesce_key is not None:
                    await coalescing.renew(gen.coalesce_key)
            except Exception:  # Redis blips: the next renewal retries; the lease outlives one miss
                log.warning("lease renewal of %s failed", gen.request_id, exc_info=True)
            raise_if_cancelling()  # a cancel redis-py swallowed must not keep the lease alive
            await asyncio.sleep(LEASE_S / 3)

    async def _save_later(self, gen: Generation, ending: Ending) -> None:
        """Save the result once the database is back: retried every UNSAVED_RETRY_S for up to
        UNSAVED_KEEP_S, the lease renewed meanwhile (no sweep takes the row). Once saved, the viewers
        get the real terminal event (message.done with the whole text)."""
        gen.settling = True
        # A fixed wait and a deadline: not worth tenacity's AsyncRetrying (finish.save says the same).
        deadline = time.monotonic() + UNSAVED_KEEP_S
        while time.monotonic() < deadline:
            await asyncio.sleep(UNSAVED_RETRY_S)
            try:
                await ending()
            except DATABASE_DOWN:
                continue
            gen.unsaved = False
            log.warning("generation %s: result saved once the database came back", gen.request_id)
            return
        log.error(
            "generation %s: result not saved in %.0f s; the sweep saves its text",
            gen.request_id,
            UNSAVED_KEEP_S,
        )

    async def _drain(self, gen: Generation, sender: asyncio.Task[None]) -> None:
        gen.finished = True
        gen.ended.set()
        gen.wake.set()
        await sender

    # --- background work -------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start this process's background work once: the control listener (cancels from other
        processes) and the sweep of orphaned `streaming` rows. Called on the first generation, socket
        connect or health check, so a restarted process cleans up after its predecessor without waiting
        for a send (daphne has no ASGI lifespan)."""
        self.control.start()
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(
                sweep.sweep_forever(self), name="generation-sweeper", context=contextvars.Context()
            )


def _sent(prepared: PreparedSend) -> list[tuple[str, str]]:
    """What the call is sent, system prompt first: its input's estimate when no usage is reported."""
    if not prepared.system_prompt:
        return prepared.history
    return [("system", prepared.system_prompt), *prepared.history]


def _pacing(connection: str) -> tuple[str, Limit | None]:
    """The connection's pacer bucket (shared by the connections naming it) and limit, from the catalog
    the send's access check just read; a name it lacks keeps the settings' bucket of that name."""
    known = catalog.peek()
    info = known.connections.get(connection) if known is not None else None
    if info is None:
        return connection, None
    return info.bucket, Limit.per_second(info.rps, max(1, info.burst))


_services: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GenerationService] = (
    weakref.WeakKeyDictionary()
)


def generation_service() -> GenerationService:
    """The service of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    svc = _services.get(loop)
    if svc is None:
        layer = get_channel_layer()
        assert layer is not None, "CHANNEL_LAYERS is not configured"
        svc = _services[loop] = GenerationService(layer)
        loopres.register(_close_service, stage=loopres.Stage.WORKER)
    return svc


async def _close_service() -> None:
    """Stop the running loop's service: its generations and background tasks are cancelled."""
    svc = _services.pop(asyncio.get_running_loop(), None)
    if svc is not None:
        await svc.aclose()
