"""One account flooding identical sends (#16 item 1): what each send may store, and what it costs.

A follower of a send in flight calls no provider and writes no rows, but each one with a fresh
request_id writes a 24 h idempotency record; these tests hold that record small, and make every send
(followers and replays too) cost something from its user's budget. benchmarks/flood_bench.py measures
the same flood against daphne, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.test import AsyncClient

from providers.fake.server import FakeProviderServer
from tests.asgi_http import Response, asgi_request
from threads.coalesce_store import InProcessCoalescer, coalescer
from threads.models import Message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]

LONG = "漢" * 32_000  # json.dumps escapes each as \uXXXX: about 192 KB


@pytest.fixture
async def fake(settings: Any) -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(ttft_ms=0, tps=200, tokens=40) as server:
        settings.PROVIDERS = {
            **settings.PROVIDERS,
            "openai": {"base_url": server.openai_base_url, "api_key": "sk-test", "model": "fake-model"},
        }
        yield server


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


async def _thread(api: AsyncClient) -> int:
    resp = await api.post("/api/threads", {"provider": "openai"}, content_type="application/json")
    assert resp.status_code == 201, resp.content
    return int(resp.json()["id"])


async def _send(api: AsyncClient, thread_id: int, **body: Any) -> Response:
    """POST straight into the ASGI application: sends gathered together really run at once (the test
    client's requests take turns)."""
    auth = cast(dict[str, str], api.defaults)["AUTHORIZATION"]
    return await asgi_request(
        "POST",
        f"/api/threads/{thread_id}/messages",
        body=json.dumps(body).encode(),
        headers={"authorization": auth, "content-type": "application/json"},
    )


def _rid() -> str:
    return uuid.uuid4().hex


async def _record_bytes(user_id: int, request_id: str) -> int:
    """What the idempotency record of `request_id` occupies where it is stored."""
    co = coalescer()
    alias = f"rid:{user_id}:{request_id}"
    if isinstance(co, InProcessCoalescer):
        found = co._aliases.get(alias)
        assert found is not None, f"no record for {alias}"
        return len(repr(found).encode())
    from core.redisconn import redis_for_loop

    used = await redis_for_loop().memory_usage(f"{django_settings.REDIS_KEY_PREFIX}:co:{alias}")
    assert used is not None, f"no record for {alias}"
    return int(used)


async def test_a_followers_record_holds_no_content(
    api: AsyncClient, fake: FakeProviderServer, user: Any
) -> None:
    fake.configure(tps=20, tokens=40)  # the leader generates for about 2 s
    tid = await _thread(api)
    leader = asyncio.create_task(_send(api, tid, content=LONG, request_id=_rid()))
    await fake.wait_until(lambda s: s.calls >= 1)
    rid = _rid()
    follower = await _send(api, tid, content=LONG, request_id=rid)
    assert follower.status == 200 and follower.json()["coalesced"] == "follower"
    assert (await leader).status == 200
    assert await _record_bytes(user.pk, rid) < 1024  # was about 192 KB: the whole message, escaped


async def test_a_replay_reads_its_rows_back(api: AsyncClient, fake: FakeProviderServer) -> None:
    """The record names the rows; the replay answers with them as they are now (the reply finished)."""
    tid = await _thread(api)
    rid_lead, rid_follow = _rid(), _rid()
    lead, follow = await asyncio.gather(
        _send(api, tid, content=LONG, request_id=rid_lead),
        _send(api, tid, content=LONG, request_id=rid_follow),
    )
    assert (lead.status, follow.status) == (200, 200)
    for rid in (rid_lead, rid_follow):
        replay = await _send(api, tid, content=LONG, request_id=rid)
        assert replay.status == 200, replay.body
        body = replay.json()
        assert body["user_message"] == lead.json()["user_message"]
        assert body["assistant_message"]["id"] == lead.json()["assistant_message"]["id"]
        assert body["assistant_message"]["status"] == "complete"
        assert body["assistant_message"]["content"] == lead.json()["assistant_message"]["content"]
    assert fake.stats.calls == 1 and await sync_to_async(Message.objects.count)() == 2


async def test_a_replay_of_deleted_rows_is_not_found(api: AsyncClient, fake: FakeProviderServer) -> None:
    tid = await _thread(api)
    rid = _rid()
    assert (await _send(api, tid, content="soon gone", request_id=rid)).status == 200
    other = await _thread(api)
    await sync_to_async(Message.objects.filter(thread_id=tid).delete)()
    replay = await _send(api, tid, content="soon gone", request_id=rid)
    assert replay.status == 404 and replay.json()["error"]["code"] == "not_found"
    assert other  # the thread itself still exists; only its rows are gone


@pytest.fixture
def tight_budget(settings: Any) -> None:
    """Two sends at once, then one every 10 s."""
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = 6, 2


async def test_a_flood_of_identical_sends_meets_429(
    api: AsyncClient, fake: FakeProviderServer, tight_budget: None
) -> None:
    fake.configure(tps=40, tokens=40)  # one generation of about 1 s runs through the flood
    tid = await _thread(api)
    answers = await asyncio.gather(*(_send(api, tid, content="flood", request_id=_rid()) for _ in range(40)))
    statuses = [a.status for a in answers]
    assert set(statuses) == {200, 429}, statuses
    assert statuses.count(200) >= 2  # the send and a double click
    assert statuses.count(429) >= 30
    for refused in (a for a in answers if a.status == 429):
        assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
    assert fake.stats.calls == 1


async def test_a_flood_of_replays_meets_429(
    api: AsyncClient, fake: FakeProviderServer, tight_budget: None
) -> None:
    tid = await _thread(api)
    rid = _rid()
    assert (await _send(api, tid, content="once", request_id=rid)).status == 200
    answers = [await _send(api, tid, content="once", request_id=rid) for _ in range(20)]
    statuses = [a.status for a in answers]
    assert statuses[0] == 200  # a client's retry is answered
    assert 429 in statuses and set(statuses) == {200, 429}, statuses


async def test_a_person_sending_twice_is_never_refused(
    api: AsyncClient, fake: FakeProviderServer, settings: Any
) -> None:
    """The production budget: a double click, a retry and a few messages all go through."""
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = 30.0, 10
    tid = await _thread(api)
    rid = _rid()
    twice = await asyncio.gather(
        _send(api, tid, content="hello", request_id=rid), _send(api, tid, content="hello", request_id=_rid())
    )
    assert [a.status for a in twice] == [200, 200]
    assert (await _send(api, tid, content="hello", request_id=rid)).status == 200
    for i in range(5):
        assert (await _send(api, tid, content=f"message {i}")).status == 200


async def test_another_user_is_not_limited_by_a_flood(
    api: AsyncClient, fake: FakeProviderServer, tight_budget: None, other_user: Any
) -> None:
    from accounts.tokens import api_token_create

    _, raw = await sync_to_async(api_token_create)(user=other_user)
    person = AsyncClient(AUTHORIZATION=f"Bearer {raw}")
    tid, theirs = await _thread(api), await _thread(person)
    flood = await asyncio.gather(*(_send(api, tid, content="flood", request_id=_rid()) for _ in range(20)))
    assert 429 in [a.status for a in flood]
    assert (await _send(person, theirs, content="hello")).status == 200
