"""The orphan sweep (threads/sweep.py) in one process (no Redis: this process's running set is the whole
truth): a channel layer that records broadcasts, the process's start time moved by the test."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from tests.threads.recording import RecordingChannelLayer
from threads import groups, liveness, sweep
from threads.generation import Generation, generation_service
from threads.models import Message, Thread

pytestmark = pytest.mark.django_db(transaction=True)


async def _streaming(thread: Thread, rid: str) -> Message:
    def create() -> Message:
        asked = Message.objects.create(thread=thread, role="user", content="hi", request_id=rid)
        return Message.objects.create(
            thread=thread, role="assistant", status="streaming", request_id=rid, parent=asked
        )

    found: Message = await sync_to_async(create)()
    return found


async def _status(message: Message) -> str:
    return str(await sync_to_async(lambda: Message.objects.get(pk=message.pk).status)())


async def test_a_row_older_than_this_process_is_interrupted_at_once_and_viewers_told(
    thread: Thread, layer: RecordingChannelLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    orphan = await _streaming(thread, "before-restart")
    # This process started after the row was written: only a previous process could have owned it.
    monkeypatch.setattr(liveness, "PROCESS_STARTED", orphan.created_at.timestamp() + 1)
    assert await sweep.sweep_orphans(generation_service(), set()) == {orphan.pk}
    assert await _status(orphan) == "error"
    (event,) = layer.events(groups.thread_group(thread.pk))
    assert event["type"] == "message.error" and event["request_id"] == "before-restart"
    assert event["error"]["code"] == "interrupted" and event["message"]["status"] == "error"


async def test_a_row_of_this_process_s_lifetime_is_failed_only_when_missing_at_two_sweeps(
    thread: Thread, layer: RecordingChannelLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    orphan = await _streaming(thread, "lost")
    monkeypatch.setattr(liveness, "PROCESS_STARTED", orphan.created_at.timestamp() - 1)
    svc = generation_service()
    suspects = await sweep.sweep_orphans(svc, set())
    assert suspects == {orphan.pk} and await _status(orphan) == "streaming" and layer.broadcasts == []
    await sweep.sweep_orphans(svc, suspects)
    assert await _status(orphan) == "error"
    assert [e["error"]["code"] for e in layer.events(groups.thread_group(thread.pk))] == ["interrupted"]


async def test_a_generation_this_process_runs_is_never_swept(
    thread: Thread, layer: RecordingChannelLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = await _streaming(thread, "running-here")
    monkeypatch.setattr(liveness, "PROCESS_STARTED", mine.created_at.timestamp() + 1)
    svc = generation_service()
    svc.running[mine.pk] = Generation(request_id="running-here", thread_id=thread.pk, message_id=mine.pk)
    try:
        assert await sweep.sweep_orphans(svc, {mine.pk}) == set()
    finally:
        svc.running.pop(mine.pk)
    assert await _status(mine) == "streaming" and layer.broadcasts == []
