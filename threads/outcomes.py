"""A send's outcome, and how whoever sent it hears the end, wherever its generation runs: the terminal
event (`wait_terminal`), the stream of its events for an SSE subscriber (`stream_events`), and a leader
in another process watched through its lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from core.dbasync import db_async
from core.singleflight import Singleflight
from threads import coalescing, events, fanout, services, usage
from threads.coalescing import LEASE_S
from threads.generation import generation_service
from threads.generation_state import Generation
from threads.models import Message


@dataclass(slots=True)
class SendOutcome:
    request_id: str
    coalesced: str  # "leader" | "follower" | "bypass"
    user_message: events.MessageData
    assistant_message: events.MessageData
    generation: Generation | None  # set when this process runs (or ran) the generation
    key: str | None = None  # the coalesce key, for followers watching the leader's lease


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
