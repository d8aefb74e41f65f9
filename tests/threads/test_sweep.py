"""The orphan sweep (threads/sweep.py) in one process (no Redis: this process's running set is the whole
truth): a channel layer that records broadcasts, the process's start time moved by the test."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from accounts import retention
from accounts.audit import audit_record
from accounts.models import AuditEvent
from tests.threads.recording import RecordingChannelLayer
from tests.waiting import wait_until_async
from threads import groups, liveness, sweep
from threads.generation import generation_service
from threads.generation_state import Generation
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
    later = orphan.created_at.timestamp() + sweep.FIRST_LEASE_GRACE_S
    suspects = await sweep.sweep_orphans(svc, set(), now=later)
    assert suspects == {orphan.pk} and await _status(orphan) == "streaming" and layer.broadcasts == []
    await sweep.sweep_orphans(svc, suspects, now=later + sweep.ORPHAN_SWEEP_EVERY_S)
    assert await _status(orphan) == "error"
    assert [e["error"]["code"] for e in layer.events(groups.thread_group(thread.pk))] == ["interrupted"]


async def test_a_row_written_moments_ago_is_not_failed_before_its_generation_could_write_its_lease(
    thread: Thread, layer: RecordingChannelLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's generation writes its lease just after its row; a process starting a thousand
    at once (a burst with coalescing off) wrote some seconds late, and a sweep meanwhile failed the live
    generation: its reply lost, the sender answered 502 (fails on the old code: failed at the second
    sweep, 2.5 s after the row). Past FIRST_LEASE_GRACE_S a row without a lease is swept as before."""
    young = await _streaming(thread, "lease-on-its-way")
    monkeypatch.setattr(liveness, "PROCESS_STARTED", young.created_at.timestamp() - 1)
    svc = generation_service()
    born = young.created_at.timestamp()
    suspects: set[int] = set()
    for now in (born, born + sweep.ORPHAN_SWEEP_EVERY_S, born + 2 * sweep.ORPHAN_SWEEP_EVERY_S - 0.1):
        suspects = await sweep.sweep_orphans(svc, suspects, now=now)
    assert await _status(young) == "streaming" and layer.broadcasts == []
    for now in (
        born + sweep.FIRST_LEASE_GRACE_S,
        born + sweep.FIRST_LEASE_GRACE_S + sweep.ORPHAN_SWEEP_EVERY_S,
    ):
        suspects = await sweep.sweep_orphans(svc, suspects, now=now)
    assert await _status(young) == "error"


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


@pytest.mark.both
async def test_the_background_sweep_prunes_old_audit_rows_by_itself(
    user: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails on the old code: only `manage.py prune_audit` (from cron) deleted them."""
    settings.REDIS_KEY_PREFIX = f"test-{uuid.uuid4().hex}"  # today's claim (with Redis) is this test's
    # Without Redis, today's claim is the process's: an earlier test's service may have pruned today.
    monkeypatch.setattr(retention, "_memory_claims", retention.MemoryClaims())
    old = timezone.now() - timedelta(days=settings.AUDIT_RETENTION_DAYS + 1)
    await sync_to_async(audit_record)(kind=AuditEvent.LOGIN, user=user, at=old)
    await sync_to_async(audit_record)(kind=AuditEvent.LOGIN, user=user)

    generation_service().ensure_started()  # as a process's first socket, send or health check does

    async def pruned() -> bool:  # the database announces nothing: polled
        return not await sync_to_async(AuditEvent.objects.filter(at__lte=old).exists)()

    await wait_until_async(pruned, within=10, interval=0.05)
    assert await sync_to_async(AuditEvent.objects.count)() == 1
