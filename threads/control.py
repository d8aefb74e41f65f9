"""Cross-process control: Stop pressed on a socket of one process cancels a generation another process
runs. Every process listens on one channel in CONTROL_GROUP; a cancel that finds no local generation is
sent to the group, and the process running it cancels it."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable

from channels.layers import BaseChannelLayer

from core.cancelguard import raise_if_cancelling
from core.outages import REDIS_DOWN
from threads import groups

log = logging.getLogger(__name__)

# How long a send waits for the control channel (Redis) before going on without cross-process cancel.
CONTROL_READY_TIMEOUT_S = 2.0
CONTROL_RETRY_S = 1.0
# A cancel heard for a generation this process does not run (yet) is kept this long: the generation may
# be starting here (its row written, start() waiting for this channel up to CONTROL_READY_TIMEOUT_S).
# Every process hears every cancel, so the set is capped too; 30 s is 15 such waits.
HEARD_TTL_S = 30.0
HEARD_MAX = 10_000


async def send_cancel(layer: BaseChannelLayer, message_id: int) -> None:
    """Ask every process to cancel the generation of assistant message `message_id`."""
    await layer.group_send(groups.CONTROL_GROUP, {"type": groups.CONTROL_CANCEL, "message_id": message_id})


async def send_thread_changed(layer: BaseChannelLayer, thread_id: int) -> None:
    """Tell every process that thread `thread_id` changed (its cached copy is stale)."""
    await layer.group_send(
        groups.CONTROL_GROUP, {"type": groups.CONTROL_THREAD_CHANGED, "thread_id": thread_id}
    )


def _no_thread_cache(thread_id: int) -> None:
    """Until threads/chat.py (which imports this module) installs its own."""


# Called with a changed thread's id in every process.
on_thread_changed: Callable[[int], None] = _no_thread_cache


class RecentCancels:
    """Message ids cancelled while no generation of theirs ran here, each for HEARD_TTL_S (oldest first)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._at: dict[int, float] = {}  # insertion order is age order

    def add(self, message_id: int) -> None:
        self._at.pop(message_id, None)
        self._prune(room=1)
        self._at[message_id] = self._clock()

    def take(self, message_id: int) -> bool:
        """Whether `message_id` was cancelled lately (forgotten once taken)."""
        self._prune(room=0)
        return self._at.pop(message_id, None) is not None

    def _prune(self, *, room: int) -> None:
        """Forget the expired, and the oldest until `room` more fit under HEARD_MAX."""
        now = self._clock()
        while self._at:
            oldest, at = next(iter(self._at.items()))
            if now - at < HEARD_TTL_S and len(self._at) + room <= HEARD_MAX:
                return
            del self._at[oldest]


class ControlListener:
    """This process's side: a task that hands each cancel it receives to `on_cancel(message_id)`."""

    def __init__(self, layer: BaseChannelLayer, on_cancel: Callable[[int], bool]) -> None:
        self.layer = layer
        self._on_cancel = on_cancel  # False: no such generation here (yet)
        self.heard = RecentCancels()
        self._ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening (once)."""
        if self.task is None:
            # A fresh context: started during a request, it must not inherit that request's executor.
            self.task = asyncio.create_task(
                self._listen(), name="generation-control", context=contextvars.Context()
            )

    async def wait_ready(self) -> None:
        """Until the group is joined, so a cancel sent from another process is not missed. Bounded: with
        Redis down the join keeps failing, and a send must fail or go on, not hang."""
        self.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), CONTROL_READY_TIMEOUT_S)

    async def _listen(self) -> None:
        # Default prefix on purpose: channels_redis keeps one Redis inbox per (prefix, process) and
        # only the receiver holding its receive lock pops it, so a channel with its own prefix that
        # waits for a long time would starve every consumer of this process.
        channel = await self.layer.new_channel()
        down = False
        try:
            while True:
                try:
                    # (Re-)join: after Redis restarts empty, the group no longer lists us.
                    await self.layer.group_add(groups.CONTROL_GROUP, channel)
                    self._ready.set()
                    if down:
                        log.warning("control channel back")
                        down = False
                    await self._receive(channel)
                except REDIS_DOWN:
                    # Redis is away: local cancels still work; retry (and re-join) until it is back.
                    if not down:
                        log.warning("control channel lost Redis; retrying every %.0f s", CONTROL_RETRY_S)
                        down = True
                    raise_if_cancelling()
                    await asyncio.sleep(CONTROL_RETRY_S)
        finally:
            # Runs on loop shutdown (CancelledError): leave the group so senders stop queueing for us.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.layer.group_discard(groups.CONTROL_GROUP, channel))

    async def _receive(self, channel: str) -> None:
        while True:
            raise_if_cancelling()  # channels_redis receives through redis-py, which may swallow a cancel
            msg = await self.layer.receive(channel)
            if msg.get("type") == groups.CONTROL_CANCEL and isinstance(msg.get("message_id"), int):
                if not self._on_cancel(msg["message_id"]):
                    self.heard.add(msg["message_id"])
            elif msg.get("type") == groups.CONTROL_THREAD_CHANGED and isinstance(msg.get("thread_id"), int):
                on_thread_changed(msg["thread_id"])
