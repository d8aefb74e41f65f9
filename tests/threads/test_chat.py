"""The send use case (threads/chat.py) and a coalesce key's life (threads/coalescing.py), in one process:
a channel layer that records broadcasts, a coalescer on a clock the test moves, a scripted provider."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from core import urgent
from providers.catalog import acatalog
from tests.threads.recording import (
    FakeClock,
    RecordingChannelLayer,
    ScriptedProvider,
)
from threads import chat, fanout, finish, groups, modelaccess, outcomes, quotas, sweep
from threads.coalesce_store import LEASE_S, CoalesceFailed, InProcessCoalescer
from threads.generation import generation_service
from threads.models import Message, Thread
from threads.validation import InvalidInput, parse_send

# The service's own sweeper stays idle: on the in-memory SQLite test database its reads lock tables
# under a send's writes ("table is locked"); the sweeps have tests of their own.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_background_sweeps")]

TIMEOUT = 10.0


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> ScriptedProvider:
    scripted = ScriptedProvider(chunks=("Hel", "lo", " there"))
    monkeypatch.setattr("threads.generation.get_provider", lambda name: scripted)
    return scripted


@pytest.fixture
async def thread(user: Any) -> Thread:
    found: Thread = await sync_to_async(Thread.objects.create)(owner=user, provider="demo", model="demo-1")
    chat.remember_created(found)
    return found


def _req(content: str = "Same words", **extra: Any) -> Any:
    return parse_send({"content": content, **extra}, max_chars=1000)


async def test_a_send_broadcasts_start_then_contiguous_deltas_then_done_to_the_thread(
    user: Any,
    thread: Thread,
    layer: RecordingChannelLayer,
    provider: ScriptedProvider,
    co: InProcessCoalescer,
) -> None:
    outcome = await chat.send(user=user, thread=thread, req=_req())
    final = await asyncio.wait_for(outcomes.wait_terminal(outcome, thread_id=thread.pk), TIMEOUT)
    sent = layer.events(groups.thread_group(thread.pk))
    assert [e["type"] for e in sent][0] == "message.start" and sent[-1] == final
    assert final["type"] == "message.done" and final["message"]["content"] == "Hello there"
    deltas = [e for e in sent if e["type"] == "message.delta"]
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert "".join(d["text"] for d in deltas) == "Hello there"
    assert {e["request_id"] for e in sent} == {outcome.request_id}
    assert provider.calls == 1 and outcome.coalesced == "leader"


async def test_identical_sends_share_one_generation_and_its_key_lives_for_the_result_ttl(
    user: Any,
    thread: Thread,
    layer: RecordingChannelLayer,
    provider: ScriptedProvider,
    co: InProcessCoalescer,
    clock: FakeClock,
    settings: Any,
) -> None:
    settings.COALESCE_RESULT_TTL_S = 30.0
    first, second = await asyncio.gather(
        chat.send(user=user, thread=thread, req=_req()), chat.send(user=user, thread=thread, req=_req())
    )
    assert sorted([first.coalesced, second.coalesced]) == ["follower", "leader"]
    assert first.assistant_message["id"] == second.assistant_message["id"]
    leader = first if first.coalesced == "leader" else second
    assert leader.generation is not None
    await asyncio.wait_for(outcomes.wait_terminal(leader, thread_id=thread.pk), TIMEOUT)
    key = leader.generation.coalesce_key
    assert key is not None and co._entries[key].expires == clock.now + 30.0  # finished: kept 30 s

    clock.advance(29.0)  # within the result TTL: answered from memory, no second call
    third = await chat.send(user=user, thread=thread, req=_req())
    assert third.coalesced == "follower" and third.assistant_message["id"] == leader.assistant_message["id"]

    clock.advance(2.0)  # past it: the coalescer forgot; the database still holds the burst's pair
    fourth = await chat.send(user=user, thread=thread, req=_req())
    assert fourth.generation is None and fourth.assistant_message["id"] == leader.assistant_message["id"]
    assert co._entries[key].expires == clock.now + LEASE_S  # replayed rows: released, no finish will come
    assert provider.calls == 1
    starts = [e for e in layer.events(groups.thread_group(thread.pk)) if e["type"] == "message.start"]
    assert len(starts) == 1


async def test_a_leader_refused_by_its_send_budget_gives_its_followers_the_same_refusal(
    user: Any,
    thread: Thread,
    layer: RecordingChannelLayer,
    provider: ScriptedProvider,
    co: InProcessCoalescer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    followers = 0
    all_follow = asyncio.Event()
    real_claim = InProcessCoalescer.claim

    async def counting_claim(self: InProcessCoalescer, key: str) -> Any:
        nonlocal followers
        claim = await real_claim(self, key)
        if claim.role == "follower":
            followers += 1
            if followers == 4:
                all_follow.set()
        return claim

    async def refuse(*, user_id: int) -> None:
        await all_follow.wait()  # the leader is refused once every follower waits on it
        raise InvalidInput("rate_limited", "Too many messages; wait a little.", 429, retry_after=7)

    monkeypatch.setattr(InProcessCoalescer, "claim", counting_claim)
    monkeypatch.setattr(quotas, "send_admit", refuse)
    sends = [chat.send(user=user, thread=thread, req=_req()) for _ in range(5)]
    results = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), TIMEOUT)
    assert all(isinstance(r, InvalidInput) for r in results), results
    assert {(r.code, r.status, r.retry_after) for r in results} == {("rate_limited", 429, 7)}  # type: ignore[union-attr]
    from_leader = [r for r in results if isinstance(r.__cause__, CoalesceFailed)]  # type: ignore[union-attr]
    assert len(from_leader) == 4
    assert provider.calls == 0 and layer.broadcasts == []
    assert await sync_to_async(Message.objects.count)() == 0


async def test_a_reused_request_id_with_another_body_is_refused_and_with_the_same_replays(
    user: Any,
    thread: Thread,
    layer: RecordingChannelLayer,
    provider: ScriptedProvider,
    co: InProcessCoalescer,
) -> None:
    first = await chat.send(user=user, thread=thread, req=_req(request_id="r-1"))
    await asyncio.wait_for(outcomes.wait_terminal(first, thread_id=thread.pk), TIMEOUT)
    again = await chat.send(user=user, thread=thread, req=_req(request_id="r-1"))
    assert again.coalesced == "follower" and again.assistant_message["id"] == first.assistant_message["id"]
    with pytest.raises(InvalidInput) as refused:
        await chat.send(user=user, thread=thread, req=_req("Other words", request_id="r-1"))
    assert (refused.value.code, refused.value.status) == ("idempotency_mismatch", 422)
    assert provider.calls == 1


CountQueries = Callable[[int], AbstractAsyncContextManager[Any]]


@pytest.fixture
def count_queries(monkeypatch: pytest.MonkeyPatch, django_assert_num_queries: Any) -> Iterator[CountQueries]:
    """django_assert_num_queries for db_async's queries: db_async runs on one worker thread here, and
    the assertion counts that thread's connection, entered and left on that thread (Django refuses
    to touch a connection from a thread with a running event loop)."""
    from django.db import connections

    from core import dbasync

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-test")
    monkeypatch.setattr(dbasync, "_EXECUTOR", executor)
    conn = executor.submit(lambda: connections["default"]).result()

    @contextlib.asynccontextmanager
    async def counted(n: int) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        assertion = django_assert_num_queries(n, connection=conn)
        captured = await loop.run_in_executor(executor, assertion.__enter__)
        try:
            yield captured
        except BaseException as exc:
            await loop.run_in_executor(executor, assertion.__exit__, type(exc), exc, exc.__traceback__)
            raise
        await loop.run_in_executor(executor, assertion.__exit__, None, None, None)

    yield counted
    executor.shutdown(wait=True)


async def test_a_send_to_a_remembered_thread_runs_only_its_head_read_and_its_writes_before_the_provider(
    user: Any,
    thread: Thread,
    layer: RecordingChannelLayer,
    provider: ScriptedProvider,
    co: InProcessCoalescer,
    count_queries: CountQueries,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """chat.THREAD_TTL_S's promise: a thread the send path remembers is not read again before the
    provider call; what runs is the burst key's head read and send_prepare's writes."""
    from billing import budgets
    from ops.flags import flags_ready

    async def no_sweep(svc: Any) -> None:  # the orphan sweep's reads run beside the send, not in it
        await asyncio.Event().wait()

    monkeypatch.setattr(sweep, "sweep_forever", no_sweep)
    await flags_ready()  # the flag cache's first load (off the loop, once per TTL) is not the send's
    # Nor are the model catalog's and the user's groups (per process, MODEL_CATALOG_TTL_S).
    await acatalog()
    await modelaccess.agroup_ids(user)
    await budgets.rules_for(user.pk)  # so is the budget rules' (once per user per BUDGET_RULES_TTL_S)
    provider.hold = asyncio.Event()  # the stream waits after its first chunk: no finishing writes yet
    # The head read; then send_prepare's transaction (SQLite logs its BEGIN IMMEDIATE and COMMIT): the
    # branch's end (#18: the thread's current_leaf_id alone), two INSERTs, the thread's UPDATE (title,
    # updated_at, current leaf) and the history's path. The thread row itself is not read again.
    async with count_queries(8) as ctx:
        visible = await chat.thread_for_send(user=user, thread_id=thread.pk)
        assert visible is thread  # remembered at creation
        outcome = await chat.send(user=user, thread=thread, req=_req())
        await asyncio.wait_for(provider.held.wait(), TIMEOUT)
    thread_reads = [q["sql"] for q in ctx.captured_queries if 'FROM "threads_thread"' in q["sql"]]
    assert all("current_leaf_id" in sql and '"provider"' not in sql for sql in thread_reads), thread_reads
    provider.hold.set()
    await asyncio.wait_for(outcomes.wait_terminal(outcome, thread_id=thread.pk), TIMEOUT)


@dataclass
class _Watching(ScriptedProvider):
    """Notes, as it hands over each event, whether the generation reading it is urgent."""

    urgency: list[bool] = field(default_factory=list)

    async def stream(self, messages: Any, params: Any) -> AsyncIterator[Any]:
        async for ev in super().stream(messages, params):
            self.urgency.append(urgent.is_urgent())
            yield ev


@pytest.mark.usefixtures("layer", "co")
async def test_a_send_from_an_urgent_request_stays_urgent_and_a_generation_is_until_its_first_token(
    user: Any, thread: Thread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """core/urgent.py: the turn's holder (threads/sendgate.py) and a generation on its way to the
    provider go ahead of a burst; once the provider answers, the stream takes its turns."""
    sends: list[bool] = []
    real = chat.thread_for_call
    provider = _Watching(chunks=("Hel", "lo", " there"))
    monkeypatch.setattr("threads.generation.get_provider", lambda name: provider)

    async def recording(**kwargs: Any) -> Thread:
        sends.append(urgent.is_urgent())  # the first step of the send's own task
        return await real(**kwargs)

    monkeypatch.setattr(chat, "thread_for_call", recording)

    async def send(content: str, *, marked: bool) -> None:
        urgent.mark(marked)
        outcome = await chat.send(user=user, thread=thread, req=_req(content))
        await asyncio.wait_for(outcomes.wait_terminal(outcome, thread_id=thread.pk), TIMEOUT)

    await asyncio.create_task(send("first", marked=True), context=contextvars.Context())
    await asyncio.create_task(send("second", marked=False), context=contextvars.Context())
    assert sends == [True, False]
    # Each generation: urgent until its first token is taken, then not (three tokens, the completion).
    assert provider.urgency == [True, False, False, False] * 2


def _before_the_done_broadcast(monkeypatch: pytest.MonkeyPatch, hook: Callable[[Any], Any]) -> None:
    """Await `hook(event)` before a message.done reaches the thread's group (threads/finish.py)."""
    real = fanout.broadcast

    async def wrapped(layer_: Any, thread_id: int, event: Any, **kwargs: Any) -> None:
        if event["type"] == "message.done":
            await hook(event)
        await real(layer_, thread_id, event, **kwargs)

    monkeypatch.setattr(finish.fanout, "broadcast", wrapped)


@pytest.mark.usefixtures("layer", "provider", "co")
async def test_the_other_processes_are_told_the_end_before_this_ones_waiters_hear_it(
    user: Any, thread: Thread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolving hundreds of waiters here takes a while: the terminal event must not wait behind it."""
    heard: list[bool] = []

    async def note(event: Any) -> None:
        heard.append(generation_service().running[event["message"]["id"]].done.done())

    _before_the_done_broadcast(monkeypatch, note)
    outcome = await chat.send(user=user, thread=thread, req=_req())
    final = await asyncio.wait_for(outcomes.wait_terminal(outcome, thread_id=thread.pk), TIMEOUT)
    assert final["type"] == "message.done"
    assert heard == [False]  # the waiters here had not heard it yet


@pytest.mark.usefixtures("layer", "provider", "co")
async def test_this_process_waiters_hear_the_end_while_telling_the_others_hangs(
    user: Any, thread: Thread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis slow or away: the waiters here are not held past finish.TELL_FIRST_S."""
    release = asyncio.Event()

    async def hang(event: Any) -> None:
        await release.wait()

    _before_the_done_broadcast(monkeypatch, hang)
    outcome = await chat.send(user=user, thread=thread, req=_req())
    assert outcome.generation is not None
    final = await asyncio.wait_for(outcomes.wait_terminal(outcome, thread_id=thread.pk), TIMEOUT)
    assert final["type"] == "message.done"
    assert outcome.generation.task is not None and not outcome.generation.task.done()  # still telling
    release.set()
    await asyncio.wait_for(asyncio.shield(outcome.generation.task), TIMEOUT)
