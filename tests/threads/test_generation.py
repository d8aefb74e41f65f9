"""The generation run (threads/generation.py) in one process: a scripted provider, a channel layer that
records broadcasts, the coalescer on a clock the test moves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from core.dbasync import db_async
from providers import ProviderOverloaded
from tests.threads.recording import (
    FakeClock,
    RecordingChannelLayer,
    ScriptedProvider,
)
from threads import groups, services
from threads.coalesce_store import InProcessCoalescer
from threads.generation import generation_service
from threads.generation_state import Generation
from threads.models import Message, Thread
from threads.validation import parse_send

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10.0
KEY = "coal:test-generation"


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> ScriptedProvider:
    scripted = ScriptedProvider()
    monkeypatch.setattr("threads.generation.get_provider", lambda name: scripted)
    return scripted


async def _start(thread: Thread, co: InProcessCoalescer) -> Generation:
    """A leader's generation, as chat.send starts it: its key claimed, its rows written."""
    assert (await co.claim(KEY)).role == "leader"
    req = parse_send({"content": "Tell me"}, max_chars=100)
    prepared = await db_async(services.send_prepare)(
        thread_id=thread.pk, thread=thread, req=req, parent_id=None, coalesce_key=KEY
    )
    return await generation_service().start(prepared, coalesce_key=KEY)


async def _row(gen: Generation) -> Message:
    found: Message = await sync_to_async(Message.objects.get)(pk=gen.message_id)
    return found


async def test_a_provider_error_mid_stream_keeps_the_text_tells_viewers_and_keeps_the_error_briefly(
    thread: Thread,
    layer: RecordingChannelLayer,
    provider: ScriptedProvider,
    co: InProcessCoalescer,
    clock: FakeClock,
    settings: Any,
) -> None:
    settings.PROVIDER_MAX_RETRIES = 0
    settings.COALESCE_ERROR_TTL_S = 2.0
    provider.error = ProviderOverloaded("upstream said 529")
    gen = await _start(thread, co)
    final = await asyncio.wait_for(asyncio.shield(gen.done), TIMEOUT)
    assert final["type"] == "message.error" and final["error"]["code"] == "provider_overloaded"
    saved = await _row(gen)
    assert (saved.status, saved.content, saved.error_code) == ("error", "Hello", "provider_overloaded")
    sent = layer.events(groups.thread_group(thread.pk))
    assert [e["type"] for e in sent][0] == "message.start" and sent[-1] == final
    assert "".join(e["text"] for e in sent if e["type"] == "message.delta") == "Hello"
    assert co._entries[KEY].expires == clock.now + 2.0  # a failure answers identical sends for 2 s only
    await asyncio.wait_for(asyncio.shield(gen.task), TIMEOUT)  # type: ignore[arg-type]
    assert generation_service().running == {}


async def test_a_cancel_mid_stream_saves_the_partial_text_and_ends_every_waiter(
    thread: Thread, layer: RecordingChannelLayer, provider: ScriptedProvider, co: InProcessCoalescer
) -> None:
    provider.hold = asyncio.Event()  # streams "Hel", then waits until cancelled
    gen = await _start(thread, co)
    await asyncio.wait_for(provider.held.wait(), TIMEOUT)
    assert generation_service().cancel_local(gen.message_id)
    final = await asyncio.wait_for(asyncio.shield(gen.done), TIMEOUT)
    assert final["type"] == "message.cancelled" and final["message"]["content"] == "Hel"
    assert (await _row(gen)).status == "cancelled"
    assert layer.events(groups.thread_group(thread.pk))[-1] == final
    assert not generation_service().cancel_local(gen.message_id)  # nothing left to cancel


async def test_with_fan_out_off_only_the_sender_gets_deltas_and_everyone_gets_the_end(
    thread: Thread, layer: RecordingChannelLayer, provider: ScriptedProvider, co: InProcessCoalescer
) -> None:
    assert (await co.claim(KEY)).role == "leader"
    req = parse_send({"content": "Tell me"}, max_chars=100)
    prepared = await db_async(services.send_prepare)(
        thread_id=thread.pk, thread=thread, req=req, parent_id=None, coalesce_key=KEY
    )
    gen = await generation_service().start(prepared, reply_channel="sender-channel", coalesce_key=KEY)
    final = await asyncio.wait_for(asyncio.shield(gen.done), TIMEOUT)
    to_thread = [e["type"] for e in layer.events(groups.thread_group(thread.pk))]
    to_sender = [e["type"] for e in layer.events("sender-channel")]
    assert to_thread == ["message.start", "message.done"] and final["type"] == "message.done"
    assert to_sender and set(to_sender) == {"message.delta"}
