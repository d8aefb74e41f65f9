"""Coalescing through the HTTP API against the fake provider server over real sockets."""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db.models import F
from django.test import AsyncClient

from providers.fake.server import FakeProviderServer
from tests.threads.recording import FakeClock, in_process_coalescer
from threads.models import Message, Thread
from threads.validation import InvalidInput

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture
async def fake(settings: Any) -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(ttft_ms=50, tps=200, tokens=20) as server:
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
    return int(resp.json()["id"])


async def _send(api: AsyncClient, thread_id: int, **body: Any) -> Any:
    return await api.post(f"/api/threads/{thread_id}/messages", body, content_type="application/json")


async def _rows() -> int:
    return await sync_to_async(Message.objects.count)()


async def test_burst_of_identical_sends_is_one_call_and_one_pair(
    api: AsyncClient, fake: FakeProviderServer
) -> None:
    tid = await _thread(api)
    resps = await asyncio.gather(*[_send(api, tid, content="What is a burst?") for _ in range(200)])
    assert [r.status_code for r in resps] == [200] * 200
    bodies = [r.json() for r in resps]
    assert fake.stats.calls == 1 and await _rows() == 2
    roles = sorted(b["coalesced"] for b in bodies)
    assert roles.count("leader") == 1 and roles.count("follower") == 199
    assert len({(b["user_message"]["id"], b["assistant_message"]["id"]) for b in bodies}) == 1
    assert {b["assistant_message"]["status"] for b in bodies} == {"complete"}
    assert len({b["assistant_message"]["content"] for b in bodies}) == 1


async def test_a_burst_answering_a_named_parent_coalesces_without_reading_the_head(
    api: AsyncClient, fake: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tid = await _thread(api)
    first = (await _send(api, tid, content="First question")).json()
    parent = first["assistant_message"]["id"]

    def no_head_read(**_: Any) -> None:
        raise AssertionError("the head was read although the send named its parent")

    monkeypatch.setattr("threads.selectors.last_exchange", no_head_read)
    resps = await asyncio.gather(*[_send(api, tid, content="Next?", parent_id=parent) for _ in range(20)])
    assert [r.status_code for r in resps] == [200] * 20
    assert fake.stats.calls == 2 and await _rows() == 4
    assert {r.json()["user_message"]["parent_id"] for r in resps} == {parent}


async def test_completed_result_reused_then_a_later_repeat_is_new(
    api: AsyncClient, fake: FakeProviderServer
) -> None:
    tid = await _thread(api)
    first = (await _send(api, tid, content="Same words")).json()
    again = (await _send(api, tid, content="Same words")).json()
    assert (
        again["coalesced"] == "follower"
        and again["assistant_message"]["id"] == first["assistant_message"]["id"]
    )
    assert fake.stats.calls == 1
    await _send(api, tid, content="Something else")
    later = (await _send(api, tid, content="Same words")).json()
    assert (
        later["coalesced"] == "leader"
        and later["assistant_message"]["id"] != first["assistant_message"]["id"]
    )
    assert fake.stats.calls == 3 and await _rows() == 6


async def _let_time_pass(seconds: float, clock: FakeClock) -> None:
    """What `seconds` passing does to a burst, without waiting for it: the coalescer's entries age (its
    clock moves in process; in Redis, whose TTLs run on its own clock, each key's TTL is cut by as
    much), and so do the rows the database compares with its own now()."""
    from threads.coalesce_redis import RedisCoalescer
    from threads.coalesce_store import coalescer

    clock.advance(seconds)
    co = coalescer()
    if isinstance(co, RedisCoalescer):
        rows = await sync_to_async(
            lambda: list(Message.objects.exclude(coalesce_key=None).values_list("coalesce_key", flat=True))
        )()
        keys = [key for key in rows if key is not None]
        for key in keys:
            left_ms = await co._redis.pttl(co._k(key)) - int(seconds * 1000)
            if left_ms > 0:
                await co._redis.pexpire(co._k(key), left_ms)
            else:
                await co._redis.delete(co._k(key))

    def age_rows() -> None:
        ago = datetime.timedelta(seconds=seconds)
        Message.objects.update(created_at=F("created_at") - ago, updated_at=F("updated_at") - ago)

    await sync_to_async(age_rows)()


async def test_error_reused_within_error_ttl_then_new_call(
    api: AsyncClient, fake: FakeProviderServer, settings: Any
) -> None:
    settings.PROVIDER_MAX_RETRIES = 0
    # Redis's TTLs run on its own clock: what is left of one after _let_time_pass must outlast the
    # next request on a loaded machine (2 s less 1.9 left 100 ms, and a slow send saw the key gone).
    settings.COALESCE_ERROR_TTL_S = 20.0  # under COALESCE_RESULT_TTL_S (30), which bounds a burst's anchor
    clock = FakeClock()
    if not settings.REDIS_URL:
        in_process_coalescer(clock)
    tid = await _thread(api)
    fake.queue_faults("http:500")
    failed = await _send(api, tid, content="fail please")
    first = failed.json()
    assert failed.status_code == 502 and first["error"]["code"] == "provider_overloaded"
    assert first["assistant_message"]["status"] == "error"
    await _let_time_pass(15.0, clock)  # within the error TTL: the failure answers
    reused = (await _send(api, tid, content="fail please")).json()
    assert (
        reused["coalesced"] == "follower"
        and reused["assistant_message"]["id"] == first["assistant_message"]["id"]
    )
    assert fake.stats.calls == 1
    await _let_time_pass(5.5, clock)  # past it
    fresh = (await _send(api, tid, content="fail please")).json()
    assert fresh["coalesced"] == "leader" and fresh["assistant_message"]["status"] == "complete"
    assert fake.stats.calls == 2


async def test_flag_off_means_one_call_per_send(
    api: AsyncClient, fake: FakeProviderServer, settings: Any
) -> None:
    settings.FLAG_DEFAULTS = {**settings.FLAG_DEFAULTS, "COALESCE_ENABLED": False}
    tid = await _thread(api)
    bodies = [r.json() for r in await asyncio.gather(*[_send(api, tid, content="same") for _ in range(5)])]
    assert {b["coalesced"] for b in bodies} == {"leader"}
    assert fake.stats.calls == 5 and await _rows() == 10


async def test_non_idempotent_and_tools_bypass(api: AsyncClient, fake: FakeProviderServer) -> None:
    tid = await _thread(api)
    sends = [_send(api, tid, content="same", idempotent=False) for _ in range(3)]
    sends += [_send(api, tid, content="same", tools=[{"name": "calc"}]) for _ in range(2)]
    bodies = [r.json() for r in await asyncio.gather(*sends)]
    assert {b["coalesced"] for b in bodies} == {"bypass"}
    assert fake.stats.calls == 5


async def test_request_id_replay_and_mismatch(api: AsyncClient, fake: FakeProviderServer) -> None:
    tid = await _thread(api)
    first = (await _send(api, tid, content="Hello", request_id="idem-1")).json()
    replay = (await _send(api, tid, content="Hello", request_id="idem-1")).json()
    assert replay["assistant_message"]["id"] == first["assistant_message"]["id"]
    mismatch = await _send(api, tid, content="Different", request_id="idem-1")
    assert mismatch.status_code == 422 and mismatch.json()["error"]["code"] == "idempotency_mismatch"
    assert fake.stats.calls == 1 and await _rows() == 2


async def test_never_across_users(api: AsyncClient, fake: FakeProviderServer, other_user: Any) -> None:
    from accounts.tokens import api_token_create

    _, raw = await sync_to_async(api_token_create)(user=other_user)
    other = AsyncClient(AUTHORIZATION=f"Bearer {raw}")
    mine, theirs = await _thread(api), await _thread(other)
    a, b = await asyncio.gather(_send(api, mine, content="secret?"), _send(other, theirs, content="secret?"))
    assert a.json()["assistant_message"]["thread_id"] == mine
    assert b.json()["assistant_message"]["thread_id"] == theirs
    assert fake.stats.calls == 2


async def test_a_late_follower_stream_gets_the_text_so_far_then_the_rest(
    fake: FakeProviderServer, user: Any
) -> None:
    """What an SSE follower is sent (threads.outcomes.stream_events), driven without an HTTP client."""
    from threads import chat, groups, outcomes
    from threads.generation import generation_service
    from threads.models import Thread
    from threads.validation import parse_send

    fake.configure(ttft_ms=0, tps=100, tokens=100)
    thread = await sync_to_async(Thread.objects.create)(owner=user, provider="openai", model="fake-model")
    body = {"content": "stream to a late follower"}
    layer = generation_service().layer
    channel = await layer.new_channel()
    await layer.group_add(groups.thread_group(thread.pk), channel)
    leader = await chat.send(user=user, thread=thread, req=parse_send(body, max_chars=100))
    assert leader.generation is not None
    async with asyncio.timeout(5):  # the leader has streamed two deltas (this subscriber saw them go)
        while (await layer.receive(channel))["event"].get("seq", 0) < 2:
            pass
    follower = await chat.send(user=user, thread=thread, req=parse_send(body, max_chars=100))
    assert follower.coalesced == "follower"
    evs = [e async for e in outcomes.stream_events(follower, thread_id=thread.pk, channel=channel)]
    assert evs[0]["type"] == "message.start" and evs[-1]["type"] == "message.done"
    deltas = [e for e in evs if e["type"] == "message.delta"]
    seqs = [d["seq"] for d in deltas]
    assert seqs[0] >= 2 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # catch-up, then contiguous
    assert "".join(d["text"] for d in deltas) == evs[-1]["message"]["content"]
    assert fake.stats.calls == 1


async def test_a_generation_cut_short_by_a_bug_stops_answering_its_burst_from_memory(
    fake: FakeProviderServer, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from threads import chat, finish
    from threads.coalesce_redis import RedisCoalescer
    from threads.coalesce_store import InProcessCoalescer, coalescer
    from threads.validation import parse_send

    async def broken(gen: Any, layer: Any, completion: Any) -> None:
        raise RuntimeError("a bug after the stream ended")

    monkeypatch.setattr(finish, "complete", broken)
    thread = await sync_to_async(Thread.objects.create)(owner=user, provider="openai", model="fake-model")
    req = parse_send({"content": "Will it end?"}, max_chars=1000)
    outcome = await chat.send(user=user, thread=thread, req=req)
    assert outcome.generation is not None and outcome.generation.task is not None
    key = outcome.generation.coalesce_key
    assert key is not None
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(outcome.generation.task, 10)
    co = coalescer()
    if isinstance(co, InProcessCoalescer):
        assert co._entries[key].expires is not None  # lapses like an unrenewed lease, not kept for good
    else:
        assert (
            isinstance(co, RedisCoalescer) and key not in co._leading
        )  # Redis answers, until the lease lapses


async def test_a_thread_created_through_the_api_is_sent_to_without_looking_it_up(
    api: AsyncClient, fake: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tid = await _thread(api)

    def no_lookup(**_: Any) -> None:
        raise AssertionError("the new thread was looked up again")

    monkeypatch.setattr("threads.selectors.thread_by_id", no_lookup)
    resps = await asyncio.gather(*[_send(api, tid, content="First words") for _ in range(20)])
    assert [r.status_code for r in resps] == [200] * 20 and fake.stats.calls == 1


async def test_a_deleted_thread_is_forgotten_at_once(api: AsyncClient, fake: FakeProviderServer) -> None:
    tid = await _thread(api)
    assert (await _send(api, tid, content="Hello")).status_code == 200
    assert (await api.delete(f"/api/threads/{tid}")).status_code == 204
    resp = await _send(api, tid, content="Still there?")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    assert fake.stats.calls == 1


async def test_a_burst_to_a_thread_deleted_elsewhere_fails_with_not_found_for_every_sender(
    fake: FakeProviderServer, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted by another process while this one still has the thread in its cache: the leader's write
    finds no thread, and the followers waiting on it get the same 404, not a generic failure. Driven
    through threads.chat in one event loop (the test client runs each request's view in its own)."""
    from threads import chat, services
    from threads.coalesce_store import coalescer
    from threads.validation import parse_send

    thread = await sync_to_async(Thread.objects.create)(owner=user, provider="openai", model="fake-model")
    # A delete this process's signals do not see, as in another server process.
    await sync_to_async(lambda: Thread.objects.filter(pk=thread.pk)._raw_delete("default"))()
    # The leader's write waits until the 19 others follow it.
    following: set[int] = set()
    all_follow = threading.Event()
    real_claim, real_prepare = type(coalescer()).claim, services.send_prepare

    async def counting_claim(self: Any, key: str) -> Any:
        claim = await real_claim(self, key)
        if claim.role == "follower":
            following.add(id(asyncio.current_task()))
            if len(following) == 19:
                all_follow.set()
        return claim

    def gated_prepare(**kwargs: Any) -> Any:
        assert all_follow.wait(10), "the followers never claimed"
        return real_prepare(**kwargs)

    monkeypatch.setattr(type(coalescer()), "claim", counting_claim)
    monkeypatch.setattr(services, "send_prepare", gated_prepare)
    req = parse_send({"content": "Anyone?"}, max_chars=100)
    sends = [chat.send(user=user, thread=thread, req=req) for _ in range(20)]
    outcomes = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 30)
    leaders = [o for o in outcomes if isinstance(o, services.NotFound)]
    followers = [o for o in outcomes if isinstance(o, InvalidInput)]
    assert len(leaders) == 1 and len(followers) == 19
    assert {(f.code, f.status) for f in followers} == {("not_found", 404)}
    assert fake.stats.calls == 0 and await _rows() == 0


async def test_an_edited_thread_is_read_again(api: AsyncClient, user: Any) -> None:
    """Staff change a thread's model in admin: this process's next send uses the new one."""
    from threads import chat

    # The demo: an OpenAI connection without a key or a server of its own is not offered (#22 item 8).
    tid = int((await api.post("/api/threads", {}, content_type="application/json")).json()["id"])
    before = await chat.thread_for_send(user=user, thread_id=tid)
    assert before is not None and before.model != "other-model"

    def edit() -> None:
        thread = Thread.objects.get(pk=tid)
        thread.model = "other-model"
        thread.save()

    await sync_to_async(edit)()
    after = await chat.thread_for_send(user=user, thread_id=tid)
    assert after is not None and after.model == "other-model"
