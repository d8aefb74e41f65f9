"""The sweeps against the leases (#16, suspected findings, confirmed): the backstop fails only rows no
generation holds a lease on, and the orphan sweep sees every `streaming` row, not the first 500. Runs on
the embedded defaults (this process's liveness) and on Redis (leases of every process)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from core.dbasync import db_async
from tests.threads.recording import RecordingChannelLayer, ScriptedProvider
from threads import liveness, services, sweep
from threads.generation import generation_service
from threads.liveness import live_generations
from threads.models import Message, Thread
from threads.validation import parse_send

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.both,
    pytest.mark.usefixtures("no_background_sweeps"),
]

TIMEOUT = 10.0


@sync_to_async
def _streaming_rows(thread: Thread, prefix: str, n: int) -> list[int]:
    asked = Message.objects.bulk_create(
        Message(thread=thread, role="user", content="hi", request_id=f"{prefix}-{i}") for i in range(n)
    )
    replies = Message.objects.bulk_create(
        Message(thread=thread, role="assistant", status="streaming", request_id=f"{prefix}-{i}", parent=u)
        for i, u in enumerate(asked)
    )
    return [int(m.pk) for m in replies]


async def _status(message_id: int) -> tuple[str, str]:
    row = await sync_to_async(Message.objects.get)(pk=message_id)
    return row.status, row.error_code


async def test_the_backstop_spares_a_long_reply_whose_lease_is_alive(
    thread: Thread,
    layer: RecordingChannelLayer,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each retry of a provider call gets fresh deadlines, so a reply may legitimately run past the
    provider's total timeout: the window is cut to nothing here, and only the row without a lease fails."""
    settings.PROVIDER_TIMEOUTS = {**settings.PROVIDER_TIMEOUTS, "total": 0.0}
    monkeypatch.setattr(sweep, "STALE_AFTER_MARGIN_S", -1.0)  # every row counts as old
    thinking = asyncio.Event()
    provider = ScriptedProvider(hold=thinking)  # a reasoning model, thinking
    monkeypatch.setattr("threads.generation.get_provider", lambda name: provider)
    req = parse_send({"content": "Think hard"}, max_chars=100)
    prepared = await db_async(services.send_prepare)(
        thread_id=thread.pk, thread=thread, req=req, parent_id=None
    )
    gen = await generation_service().start(prepared)
    await asyncio.wait_for(provider.held.wait(), TIMEOUT)
    elsewhere, lost = await _streaming_rows(thread, "row", 2)
    await live_generations().renew(elsewhere)  # running in another process, lease renewed
    assert await sweep.sweep_stale() == 1
    assert await _status(gen.message_id) == ("streaming", "")
    assert await _status(elsewhere) == ("streaming", "")
    assert await _status(lost) == ("error", "generation_lost")
    thinking.set()
    final = await asyncio.wait_for(asyncio.shield(gen.done), TIMEOUT)
    assert final["type"] == "message.done" and final["message"]["content"] == "Hello"


async def test_the_orphan_sweep_finds_an_orphan_behind_more_than_500_live_rows(
    thread: Thread, layer: RecordingChannelLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = await _streaming_rows(thread, "live", 520)
    (orphan,) = await _streaming_rows(thread, "orphan", 1)
    registry = live_generations()
    for message_id in live:  # generations of other processes, each renewing its lease
        await registry.renew(message_id)
    # Every row predates this process (without Redis an orphan is then failed at the first pass).
    monkeypatch.setattr(liveness, "PROCESS_STARTED", 2**40)
    svc = generation_service()
    later = time.time() + sweep.FIRST_LEASE_GRACE_S  # with Redis: two passes once the rows are that old
    suspects = await sweep.sweep_orphans(svc, set(), now=later)
    await sweep.sweep_orphans(svc, suspects, now=later + sweep.ORPHAN_SWEEP_EVERY_S)
    assert await _status(orphan) == ("error", "interrupted")
    statuses = await sync_to_async(
        lambda: set(Message.objects.filter(pk__in=live).values_list("status", flat=True))
    )()
    assert statuses == {"streaming"}
