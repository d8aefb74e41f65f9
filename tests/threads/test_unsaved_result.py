"""A reply whose final write meets a database that is down (#16 item 5): the text is kept until a write
succeeds. In one process: a scripted provider, a channel layer that records broadcasts, and the finishing
write failing as a dropped connection does (OperationalError) until the test brings the database back.
The same outage through real daphne and a real cut connection: tests/threads/test_unsaved_result_daphne.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError

from core.dbasync import db_async
from tests.threads.recording import RecordingChannelLayer, ScriptedProvider
from threads import groups, services, sweep
from threads.generation import GenerationService, generation_service
from threads.generation_state import Generation
from threads.models import Message, Thread
from threads.streamstate import stream_state
from threads.validation import parse_send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_background_sweeps")]

TIMEOUT = 10.0


class FinalWriteOutage:
    """`services.message_finalize` fails as a dropped connection does while `down` is set."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.down = True
        self.refused = 0

    def __call__(self, **kwargs: Any) -> Any:
        if self.down:
            self.refused += 1
            raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")
        return self.real(**kwargs)


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> ScriptedProvider:
    scripted = ScriptedProvider(chunks=("Hel", "lo, ", "world"))
    monkeypatch.setattr("threads.generation.get_provider", lambda name: scripted)
    return scripted


@pytest.fixture
def outage(monkeypatch: pytest.MonkeyPatch) -> FinalWriteOutage:
    down = FinalWriteOutage(services.message_finalize)
    monkeypatch.setattr(services, "message_finalize", down)
    # The retries' pauses, cut short: what is tested is what happens once they are spent.
    monkeypatch.setattr("threads.finish.SAVE_RETRY_DELAYS_S", (0.01, 0.01))
    monkeypatch.setattr("threads.generation.UNSAVED_RETRY_S", 0.01, raising=False)
    return down


async def _start(thread: Thread, svc: GenerationService) -> Generation:
    req = parse_send({"content": "Tell me"}, max_chars=100)
    prepared = await db_async(services.send_prepare)(
        thread_id=thread.pk, thread=thread, req=req, parent_id=None
    )
    return await svc.start(prepared)


async def _row(message_id: int) -> Message:
    found: Message = await sync_to_async(Message.objects.get)(pk=message_id)
    return found


async def test_a_finished_reply_is_saved_complete_once_the_database_is_back(
    thread: Thread, layer: RecordingChannelLayer, provider: ScriptedProvider, outage: FinalWriteOutage
) -> None:
    gen = await _start(thread, generation_service())
    told = await asyncio.wait_for(asyncio.shield(gen.done), TIMEOUT)
    # Nobody waits for the database: the sender and the viewers hear it is not answering.
    assert told["type"] == "message.error" and told["error"]["code"] == "database_unavailable"
    assert outage.refused >= 3 and (await _row(gen.message_id)).status == "streaming"
    outage.down = False
    assert gen.task is not None
    await asyncio.wait_for(asyncio.shield(gen.task), TIMEOUT)
    saved = await _row(gen.message_id)
    assert (saved.status, saved.content, saved.finish_reason) == ("complete", "Hello, world", "stop")
    last = layer.events(groups.thread_group(thread.pk))[-1]
    assert last["type"] == "message.done" and last["message"]["content"] == "Hello, world"
    shared = stream_state()
    if shared is not None:  # saved: the shared copy of the text has done its job
        assert await shared.text_of(message_id=gen.message_id) is None
    assert generation_service().running == {}


@pytest.mark.services
async def test_a_process_that_stops_before_the_database_is_back_leaves_the_text_for_the_sweep(
    thread: Thread, layer: RecordingChannelLayer, provider: ScriptedProvider, outage: FinalWriteOutage
) -> None:
    svc = generation_service()
    gen = await _start(thread, svc)
    told = await asyncio.wait_for(asyncio.shield(gen.done), TIMEOUT)
    assert told["type"] == "message.error" and told["error"]["code"] == "database_unavailable"
    await svc.aclose()  # the process stops (a deploy) while the database is still away
    shared = stream_state()
    assert shared is not None
    assert await shared.text_of(message_id=gen.message_id) == "Hello, world"
    outage.down = False
    other = GenerationService(layer)  # another process's sweep, two passes
    later = time.time() + sweep.FIRST_LEASE_GRACE_S  # the row is past its first lease's grace
    suspects = await sweep.sweep_orphans(other, set(), now=later)
    await sweep.sweep_orphans(other, suspects, now=later + sweep.ORPHAN_SWEEP_EVERY_S)
    saved = await _row(gen.message_id)
    assert (saved.status, saved.error_code, saved.content) == ("error", "interrupted", "Hello, world")
