"""Test doubles for the chat engine's unit tests: a channel layer that records what is broadcast, a clock
tests move by hand, and a provider that streams a script."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from channels.layers import InMemoryChannelLayer

from providers import ChatMessage, Completion, GenerationParams, Provider, StreamEvent, TextDelta
from threads import groups
from threads.coalesce_store import CoalesceBackend, InProcessCoalescer

LAYER_SETTING = {"default": {"BACKEND": "tests.threads.recording.RecordingChannelLayer"}}

# Set while InMemoryChannelLayer.group_send fans a message out (its per-channel sends are tasks, which
# inherit the context): those sends are part of the recorded group_send, not sends of their own.
_fanning: contextvars.ContextVar[bool] = contextvars.ContextVar("fanning", default=False)


@dataclass(frozen=True, slots=True)
class Broadcast:
    target: str  # a group name, or a channel for a direct send
    to_group: bool
    message: dict[str, Any]


class RecordingChannelLayer(InMemoryChannelLayer):
    """The in-memory layer, recording every group_send and direct send in order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.broadcasts: list[Broadcast] = []

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.broadcasts.append(Broadcast(group, True, message))
        token = _fanning.set(True)
        try:
            await super().group_send(group, message)
        finally:
            _fanning.reset(token)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if not _fanning.get():
            self.broadcasts.append(Broadcast(channel, False, message))
        await super().send(channel, message)

    def events(self, target: str) -> list[dict[str, Any]]:
        """The client events sent to `target` (a thread's group or a channel), in order."""
        return [
            b.message["event"]
            for b in self.broadcasts
            if b.target == target and b.message.get("type") == groups.THREAD_EVENT
        ]


@dataclass
class FakeClock:
    """A monotonic clock that moves only when a test moves it."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def use_coalescer(backend: CoalesceBackend) -> None:
    """Make `backend` the running loop's coalescer (e.g. an InProcessCoalescer on a FakeClock)."""
    from threads import coalesce_store

    coalesce_store._per_loop[asyncio.get_running_loop()] = backend


def in_process_coalescer(clock: FakeClock) -> InProcessCoalescer:
    co = InProcessCoalescer(clock=clock)
    use_coalescer(co)
    return co


@dataclass
class ScriptedProvider(Provider):
    """Streams `chunks`, then raises `error` if set, else completes. With `hold` set, it waits on it
    after the first chunk (a stream a test cancels mid-way). `calls` counts streams opened."""

    chunks: Sequence[str] = ("Hel", "lo")
    error: Exception | None = None
    hold: asyncio.Event | None = None
    calls: int = 0
    name: str = "scripted"
    default_model: str = "scripted-1"
    on_call: list[Any] = field(default_factory=list)  # callbacks run when a stream opens
    held: asyncio.Event = field(default_factory=asyncio.Event)  # set once it waits on `hold`

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        self.calls += 1
        for callback in self.on_call:
            callback()
        for i, chunk in enumerate(self.chunks):
            yield TextDelta(chunk)
            if i == 0 and self.hold is not None:
                self.held.set()
                await self.hold.wait()
        if self.error is not None:
            raise self.error
        yield Completion("stop", input_tokens=3, output_tokens=len(self.chunks))


@dataclass
class Recorder(ScriptedProvider):
    """A scripted provider that keeps the context of every call."""

    contexts: list[list[tuple[str, str]]] = field(default_factory=list)

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Any:
        self.contexts.append([(m.role, m.content) for m in messages])
        async for ev in super().stream(messages, params):
            yield ev
