"""The coalescer's store failing after a leader wrote its rows (#16, suspected): `publish` or the
request_id record raising must not leave the burst's fast path (`_running_bursts`) behind for good,
where every later identical send of this process would join a key that no longer means anything."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from redis.exceptions import ConnectionError as RedisConnectionError

from threads import chat, coalescing
from threads.coalesce_store import coalescer
from threads.models import Thread
from threads.validation import parse_send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


async def _fail(*args: Any, **kwargs: Any) -> None:
    raise RedisConnectionError("Redis went away")


@pytest.mark.parametrize("step", ["publish", "alias_set"])
async def test_a_store_failing_after_the_rows_leaves_no_running_burst(
    user: Any, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    thread = await sync_to_async(Thread.objects.create)(owner=user, provider="demo", model="demo-1")
    co = coalescer()
    monkeypatch.setattr(co, step, _fail)
    req = parse_send({"content": "will it stick?", "request_id": "rid-fault"}, max_chars=100)
    with pytest.raises(RedisConnectionError):
        await chat.send(user=user, thread=thread, req=req)
    # The generation started before the store failed; once it ends nothing of the burst remains here.
    from threads.generation import generation_service

    svc = generation_service()
    for gen in list(svc.running.values()):
        await asyncio.wait_for(asyncio.shield(gen.done), 10)
    await asyncio.sleep(0)  # done callbacks run on the next turn
    assert coalescing._running_bursts() == {}
