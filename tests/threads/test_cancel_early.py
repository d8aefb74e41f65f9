"""A cancel that arrives before its generation is registered (#16, suspected finding, confirmed): the row
is written first, then `start()` may wait up to CONTROL_READY_TIMEOUT_S for the control channel; a cancel
in that window won the database race and answered 200 while nothing stopped the provider call, which
then ran (and billed) to its end. Now the cancel stands: the provider is never asked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from core.dbasync import db_async
from tests.threads.recording import RecordingChannelLayer, ScriptedProvider
from threads import chat, control, groups, outcomes, services
from threads.generation import GenerationService, generation_service
from threads.models import Message, Thread
from threads.validation import parse_send

# The service's background sweep reads `streaming` rows beside the test's writes: on SQLite's shared
# in-memory database that read could lock threads_message under the test's cancel (about 1 run in 16).
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.both,
    pytest.mark.usefixtures("no_background_sweeps"),
]

TIMEOUT = 10.0


class SlowControlLayer(RecordingChannelLayer):
    """Joining the control group waits until the test opens `gate` (a Redis that is slow to answer)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.joining = asyncio.Event()
        self.gate = asyncio.Event()

    async def group_add(self, group: str, channel: str) -> None:
        if group == groups.CONTROL_GROUP:
            self.joining.set()
            await self.gate.wait()
        await super().group_add(group, channel)


@pytest.fixture
def layer(settings: Any) -> SlowControlLayer:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": f"{__name__}.SlowControlLayer"}}
    from channels.layers import get_channel_layer

    found = get_channel_layer()
    assert isinstance(found, SlowControlLayer)
    return found


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> ScriptedProvider:
    scripted = ScriptedProvider()
    monkeypatch.setattr("threads.generation.get_provider", lambda name: scripted)
    return scripted


async def _saved(message_id: int) -> tuple[str, str]:
    row = await sync_to_async(Message.objects.get)(pk=message_id)
    return row.status, row.content


async def test_a_cancel_while_start_waits_for_the_control_channel_stops_the_reply_before_the_provider(
    user: Any, thread: Thread, layer: SlowControlLayer, provider: ScriptedProvider
) -> None:
    req = parse_send({"content": "Tell me", "request_id": "early-1"}, max_chars=100)
    sending = asyncio.create_task(chat.send(user=user, thread=thread, req=req))
    await asyncio.wait_for(layer.joining.wait(), TIMEOUT)  # the rows exist; start() waits
    cancelled = await chat.cancel(user=user, request_id="early-1")
    assert cancelled["status"] == "cancelled"  # the cancel won the row: the API answers 200
    layer.gate.set()
    outcome = await asyncio.wait_for(sending, TIMEOUT)
    final = await asyncio.wait_for(outcomes.wait_terminal(outcome, thread_id=thread.pk), TIMEOUT)
    assert final["type"] == "message.cancelled"
    assert provider.calls == 0, "the provider was asked (and billed) for a reply already cancelled"
    assert await _saved(outcome.assistant_message["id"]) == ("cancelled", "")


async def test_a_cancel_from_another_process_before_start_registers_stops_the_reply(
    thread: Thread, layer: SlowControlLayer, provider: ScriptedProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    heard = asyncio.Event()
    real = GenerationService.cancel_local

    def spy(self: GenerationService, message_id: int) -> bool:
        found = real(self, message_id)
        heard.set()
        return found

    monkeypatch.setattr(GenerationService, "cancel_local", spy)
    layer.gate.set()
    svc = generation_service()
    svc.ensure_started()
    await asyncio.wait_for(svc.control.wait_ready(), TIMEOUT)
    req = parse_send({"content": "Tell me"}, max_chars=100)
    prepared = await db_async(services.send_prepare)(
        thread_id=thread.pk, thread=thread, req=req, parent_id=None
    )
    message_id = prepared.assistant_message["id"]
    # Another process won the row, then asked every process to stop it: this one hears it first.
    assert await db_async(services.message_cancel_by_id)(message_id=message_id)
    await control.send_cancel(layer, message_id)
    await asyncio.wait_for(heard.wait(), TIMEOUT)
    gen = await svc.start(prepared)
    final = await asyncio.wait_for(asyncio.shield(gen.done), TIMEOUT)
    assert final["type"] == "message.cancelled"
    assert provider.calls == 0
    assert await _saved(message_id) == ("cancelled", "")
