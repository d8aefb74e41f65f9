"""Fan-out: a thread's events reach its viewers through the channel layer.

`subscribe` is the one way a channel joins a thread's group (a socket, an SSE stream, the followers in
this process of a leader elsewhere); `broadcast` sends one event; `run_sender` turns a generation's
tokens into batched deltas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from channels.layers import BaseChannelLayer

from threads import events, groups
from threads.streamstate import stream_state

if TYPE_CHECKING:
    from threads.generation_state import Generation

log = logging.getLogger(__name__)


async def broadcast(
    layer: BaseChannelLayer, thread_id: int, event: events.ClientEvent, *, only: str | None = None
) -> None:
    """Send `event` to the thread's group, or to the channel `only` (fan-out off: the sender alone)."""
    message = groups.layer_message(event)
    if only is not None:
        await layer.send(only, message)
    else:
        await layer.group_send(groups.thread_group(thread_id), message)


@dataclass(slots=True)
class Subscription:
    """A channel in a thread's group: it receives every event broadcast to the thread until `close`."""

    layer: BaseChannelLayer
    group: str
    channel: str

    async def close(self) -> None:
        await self.layer.group_discard(self.group, self.channel)


async def subscribe(layer: BaseChannelLayer, thread_id: int, *, channel: str | None = None) -> Subscription:
    """Join the thread's group with `channel` (a consumer's own), or a new channel of the layer's default
    prefix (channels_redis keeps one inbox per prefix and process: a channel with its own prefix that
    waits long would starve every consumer of this process). Join before reading any state (a snapshot,
    a terminal row): every event after it then reaches the channel."""
    if channel is None:
        channel = await layer.new_channel()
    group = groups.thread_group(thread_id)
    await layer.group_add(group, channel)
    return Subscription(layer, group, channel)


@contextlib.asynccontextmanager
async def subscribed(layer: BaseChannelLayer, thread_id: int) -> AsyncIterator[Subscription]:
    """`subscribe` for the length of a block."""
    sub = await subscribe(layer, thread_id)
    try:
        yield sub
    finally:
        await sub.close()


async def run_sender(gen: Generation, layer: BaseChannelLayer, *, flush_s: float) -> None:
    """Send the generation's start event, then at most one delta per `flush_s` holding every token since
    the last one (the first as soon as its token arrives), until the stream ends and nothing is pending."""
    if gen.start_event is not None:
        try:
            await broadcast(layer, gen.thread_id, gen.start_event)
        except Exception:  # viewers that miss it still get the deltas and the final message
            log.warning("start event of %s not delivered", gen.request_id, exc_info=True)
    while True:
        await gen.wake.wait()
        gen.wake.clear()
        if gen.pending:
            await _send_delta(gen, layer)
        if gen.finished and not gen.pending:
            return
        # The batching window: tokens arriving now wait for the next delta, unless the stream ends.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gen.ended.wait(), flush_s)


async def _send_delta(gen: Generation, layer: BaseChannelLayer) -> None:
    text = "".join(gen.pending)
    gen.pending.clear()
    seq = gen.seq + 1
    # The generation's own text first: the reply is saved from it, with every token, whether or not
    # Redis records this delta (it answers snapshots here; a viewer that misses seq N re-syncs).
    gen.sent.append(text)
    gen.seq = seq
    event = events.message_delta(request_id=gen.request_id, message_id=gen.message_id, seq=seq, text=text)
    try:
        # Recorded before it is sent: a snapshot reporting seq N then holds all text to N. After a
        # failed write, the next one carries the deltas Redis missed (and registers, if it was the first).
        shared = stream_state()
        if shared is not None:
            missed = "".join(gen.sent[gen.recorded :])
            await shared.append(
                request_id=gen.request_id,
                thread_id=gen.thread_id,
                message_id=gen.message_id,
                seq=seq,
                text=missed,
                offset=gen.recorded_bytes,
                first=gen.recorded == 0,
            )
            gen.recorded, gen.recorded_bytes = seq, gen.recorded_bytes + len(missed.encode())
        await broadcast(layer, gen.thread_id, event, only=gen.reply_channel)
    except Exception:  # a full channel must not stop the generation; seq lets clients re-sync
        log.warning("delta %s/%s not delivered", gen.request_id, seq, exc_info=True)
