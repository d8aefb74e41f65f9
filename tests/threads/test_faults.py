"""Provider faults and cancel races through the whole stack (HTTP sender + two WebSocket viewers),
against the fake provider server over real sockets: every failure ends the assistant message in exactly
one terminal state, keeps the partial text, and tells every viewer once. Nothing hangs: every wait
has a deadline."""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import OperationalError, connection
from django.test import AsyncClient

from chatapp.asgi import application
from providers.fake.server import FakeProviderServer
from tests.deadlines import deadlines
from threads import chat, events, groups, outcomes, services, sweep
from threads.generation import generation_service
from threads.generation_state import Generation
from threads.liveness import live_generations
from threads.models import Message, Thread
from threads.streamstate import stream_state
from threads.validation import SendRequest

T = TypeVar("T")
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]

TIMEOUT = 10.0


@pytest.fixture
async def fake(settings: Any) -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(ttft_ms=0, tps=0, tokens=8) as server:
        settings.PROVIDERS = {
            **settings.PROVIDERS,
            "openai": {"base_url": server.openai_base_url, "api_key": "sk-test", "model": "fake-model"},
        }
        settings.PROVIDER_MAX_RETRIES = 0  # one call per send: the fault is what the viewers see
        settings.PROVIDER_TIMEOUTS = deadlines(expects_timeout=False)
        yield server


@pytest.fixture
async def thread(user: Any) -> Thread:
    return await sync_to_async(Thread.objects.create)(owner=user, provider="openai", model="fake-model")


async def _viewer(thread: Thread, token: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(
        application, f"/ws/threads/{thread.pk}/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    assert (await comm.connect(timeout=TIMEOUT))[0]
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
    return comm


async def _until_terminal(comm: WebsocketCommunicator) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["type"] not in ("message.done", "message.cancelled", "message.error"):
        seen.append(await comm.receive_json_from(timeout=TIMEOUT))
    return seen


def _streamed(evs: list[dict[str, Any]]) -> str:
    deltas = [e for e in evs if e["type"] == "message.delta"]
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    return "".join(d["text"] for d in deltas)


# fault, fake server knobs, expected code, HTTP status, tokens streamed before the fault
PROVIDER_FAULTS = [
    pytest.param("http:503", {}, "provider_overloaded", 502, 0, id="5xx"),
    pytest.param("drop", {}, "provider_connection_error", 502, 0, id="drop-before-answer"),
    pytest.param("hang", {}, "provider_timeout", 504, 0, id="timeout-first-byte-no-headers"),
    pytest.param("stall", {}, "provider_timeout", 504, 0, id="timeout-first-byte-after-headers"),
    pytest.param("stall_after:3", {}, "provider_timeout", 504, 3, id="stall-mid-stream-idle-timeout"),
    pytest.param("disconnect_after:3", {}, "provider_connection_error", 502, 3, id="disconnect-mid-stream"),
    pytest.param("error_after:3", {}, "provider_stream_error", 502, 3, id="in-band-error-mid-stream"),
    pytest.param("malformed_after:2", {}, "provider_malformed_stream", 502, 2, id="malformed-mid-stream"),
    # 400 tokens at 40/s would take 10 s; the total deadline ends it after 0.6 s with a few tokens.
    pytest.param("none", {"tps": 40, "tokens": 400}, "provider_timeout", 504, None, id="timeout-total"),
]


@pytest.mark.parametrize(("fault", "knobs", "code", "status", "partial"), PROVIDER_FAULTS)
async def test_provider_fault_ends_in_error_for_every_viewer_with_partial_text_kept(
    fake: FakeProviderServer,
    thread: Thread,
    token: str,
    settings: Any,
    fault: str,
    knobs: dict[str, Any],
    code: str,
    status: int,
    partial: int | None,
) -> None:
    settings.PROVIDER_TIMEOUTS = deadlines(expects_timeout=code == "provider_timeout")
    if partial is None:
        settings.PROVIDER_TIMEOUTS["total"] = 0.6
    fake.configure(**knobs)
    fake.queue_faults(fault)
    viewers = [await _viewer(thread, token), await _viewer(thread, token)]
    api = AsyncClient(AUTHORIZATION=f"Bearer {token}")
    started = time.monotonic()
    resp = await asyncio.wait_for(
        api.post(
            f"/api/threads/{thread.pk}/messages",
            {"content": f"fault {fault}", "request_id": "fault-1"},
            content_type="application/json",
        ),
        TIMEOUT,
    )
    assert time.monotonic() - started < 5, "a provider fault must not hang the sender"
    body = resp.json()
    assert resp.status_code == status, body
    assert body["error"]["code"] == code and body["error"]["message"]
    saved = await sync_to_async(Message.objects.get)(request_id="fault-1", role="assistant")
    assert saved.status == "error" and saved.error_code == code
    assert body["assistant_message"]["status"] == "error"
    assert body["assistant_message"]["content"] == saved.content
    if partial is None:
        assert saved.content, "the text streamed before the total deadline is kept"
    elif partial == 0:
        assert saved.content == ""
    else:
        assert len(saved.content.split()) >= partial, saved.content
    for comm in viewers:
        evs = await _until_terminal(comm)
        assert evs[0]["type"] == "message.start"
        terminal = evs[-1]
        assert terminal["type"] == "message.error" and terminal["error"]["code"] == code
        assert terminal["message"]["status"] == "error"
        assert _streamed(evs) == saved.content, "viewers saw exactly the text that was kept"
        assert await comm.receive_nothing(timeout=0.05), "one terminal event per viewer, then quiet"
        await comm.disconnect()
    assert fake.stats.calls == 1


async def test_provider_fault_reaches_a_streaming_http_sender(
    fake: FakeProviderServer, thread: Thread, token: str
) -> None:
    """The SSE sender is a viewer too: it gets the deltas so far, then `message.error`, then the end."""
    fake.queue_faults("disconnect_after:3")
    api = AsyncClient(AUTHORIZATION=f"Bearer {token}")
    resp = await asyncio.wait_for(
        api.post(
            f"/api/threads/{thread.pk}/messages",
            {"content": "stream then break", "request_id": "sse-fault", "stream": True},
            content_type="application/json",
        ),
        TIMEOUT,
    )
    chunks = [c async for c in resp.streaming_content]  # type: ignore[attr-defined]  # ends after the error
    text = b"".join(chunks).decode()
    kinds = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "message.start" and kinds[-1] == "message.error" and kinds.count("message.error") == 1
    assert "provider_connection_error" in text


# --- cancel racing the last token -----------------------------------------------------------------


async def _as_a_client_would(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, retried when SQLite's shared-cache test database reports a table lock (what a client
    does with the 503 it would get; file databases wait on their busy timeout instead)."""
    for _ in range(50):
        try:
            return await call()
        except OperationalError as exc:
            if "locked" not in str(exc):
                raise
            await asyncio.sleep(0.01)
    return await call()


RACE_ITERATIONS = 300
RACE_LANES = 6
# Generous: SQLite's shared-cache test database makes concurrent writers retry on table locks.
RACE_TIMEOUT = 30.0
TERMINAL_OF = {"complete": "message.done", "cancelled": "message.cancelled"}


async def _end_of(gen: Generation) -> events.TerminalEvent:
    """The generation's terminal event; a failure that shows where it is stuck if it never comes."""
    try:
        return await asyncio.wait_for(asyncio.shield(gen.done), RACE_TIMEOUT)
    except TimeoutError:
        stack = io.StringIO()
        if gen.task is not None:
            gen.task.print_stack(file=stack)
        row = await sync_to_async(lambda: list(Message.objects.filter(pk=gen.message_id).values()))()
        raise AssertionError(
            f"{gen.request_id} never ended: {gen.task!r}\n{stack.getvalue()}\n{row}"
        ) from None


async def _collect_terminals(layer: Any, channel: str, sentinel: str) -> dict[str, list[str]]:
    """Terminal event types per request_id received on `channel`, up to the `sentinel` message."""
    out: dict[str, list[str]] = {}
    while True:
        async with asyncio.timeout(TIMEOUT):  # a quiet channel for this long: something hangs
            msg = await layer.receive(channel)
        event = msg.get("event") or {}
        if event.get("type") == sentinel:
            return out
        if event.get("type") in ("message.done", "message.cancelled", "message.error"):
            out.setdefault(event["request_id"], []).append(event["type"])


async def test_cancel_racing_completion_ends_in_exactly_one_terminal_state(
    settings: Any, user: Any, thread: Thread
) -> None:
    """Hundreds of cancels at random moments around the expected end of a short reply: the message
    ends `complete` xor `cancelled`, matching what cancel answered; each viewer hears one terminal
    event per send; a second cancel is a 409 (Conflict)."""
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = (
        1e6,
        100_000,
    )  # the per-user budget is not tested here
    async with FakeProviderServer(ttft_ms=1, tps=2000, tokens=12) as server:
        settings.PROVIDERS = {
            **settings.PROVIDERS,
            "openai": {"base_url": server.openai_base_url, "api_key": "sk-test", "model": "fake-model"},
        }
        svc = generation_service()
        layer = svc.layer
        viewers = [await layer.new_channel() for _ in range(2)]
        for channel in viewers:
            await layer.group_add(groups.thread_group(thread.pk), channel)
        # Drained as they go (a channel holds 100 messages), up to the sentinel sent at the end.
        collectors = [asyncio.create_task(_collect_terminals(layer, c, "test.sentinel")) for c in viewers]

        async def send(i: int) -> outcomes.SendOutcome:
            req = SendRequest(
                content=f"race {i}",
                request_id=f"race-{i}",
                request_id_given=True,
                parent_id=None,
                stream=False,
                idempotent=False,
                tools=False,
            )
            return await _as_a_client_would(lambda: chat.send(user=user, thread=thread, req=req))

        async def race(i: int, expected: float | None) -> float:
            """One send, cancelled after a random delay around `expected` (None: never; returns the
            send-to-end time)."""
            t0 = time.monotonic()
            outcome = await send(i)
            gen = outcome.generation
            rid = outcome.request_id
            if gen is None:  # SQLite only: a retried send replayed rows written before its lock error
                await asyncio.wait_for(outcomes.wait_terminal(outcome, thread_id=thread.pk), TIMEOUT)
                return 0.0
            if expected is None:
                await _end_of(gen)
                return time.monotonic() - t0
            delay = rng.uniform(0.3 * expected, 1.5 * expected)
            await asyncio.sleep(max(0.0, t0 + delay - time.monotonic()))  # the race itself: cancel now
            try:
                await _as_a_client_would(lambda: chat.cancel(user=user, request_id=rid))
                answers[rid] = "cancelled"
            except services.Conflict:
                answers[rid] = "complete"
            final = await _end_of(gen)
            assert final["type"] == TERMINAL_OF[answers[rid]], (i, final)
            with pytest.raises(services.Conflict):  # already finished: 409, and nothing changes
                await _as_a_client_would(lambda: chat.cancel(user=user, request_id=rid))
            return 0.0

        async def lane(lane_no: int, expected: float | None, count: int) -> list[float]:
            return [await race(lane_no * 10_000 + k, expected) for k in range(count)]

        # Lanes of sends run side by side (as under load), each lane one after the other. SQLite
        # serialises writers anyway, and its shared-cache test database answers contention with
        # table-lock errors: fewer lanes there. The expected end is the median send-to-done time of
        # uncancelled warm-up sends under that same load.
        lanes = 2 if connection.vendor == "sqlite" else RACE_LANES
        rng = random.Random(1234)
        answers: dict[str, str] = {}
        warm = await asyncio.gather(*[lane(-1 - n, None, 3) for n in range(lanes)])
        expected = sorted(d for durations in warm for d in durations)[len(warm) * 3 // 2]
        per_lane = RACE_ITERATIONS // lanes
        await asyncio.gather(*[lane(n, expected, per_lane) for n in range(lanes)])
        assert not svc.running, "no generation left running"
        for channel in viewers:
            await layer.send(channel, groups.layer_message({"type": "test.sentinel"}))
        rows = await sync_to_async(
            lambda: dict(
                Message.objects.filter(thread=thread, role="assistant", request_id__startswith="race-")
                .filter(request_id__in=list(answers))
                .values_list("request_id", "status")
            )
        )()
        assert rows == answers, "the database agrees with what each cancel answered"
        outcomes = sorted(set(answers.values()))
        assert outcomes == ["cancelled", "complete"], f"the race was not exercised: only {outcomes}"
        for collector in collectors:
            terminals = await collector
            for rid, status in answers.items():
                assert terminals.get(rid) == [TERMINAL_OF[status]], (rid, terminals.get(rid))


# --- rows left `streaming` by a dead process --------------------------------------------------------


async def test_orphan_sweep_interrupts_rows_no_live_generation_owns(user: Any, thread: Thread) -> None:
    """The sweep fails a `streaming` row whose generation holds no lease (its process died) after two
    passes, keeps the text streamed so far, tells the viewers; a row with a live lease is left alone."""

    @sync_to_async
    def streaming_pair(rid: str) -> int:
        asked = Message.objects.create(thread=thread, role="user", content=rid, request_id=rid)
        reply = Message.objects.create(
            thread=thread, role="assistant", status="streaming", request_id=rid, parent=asked
        )
        return int(reply.pk)

    orphan = await streaming_pair("orphan-1")
    living = await streaming_pair("alive-1")
    svc = generation_service()
    shared = stream_state()
    if shared is not None:  # Redis: what the dead process had streamed is still there
        await shared.append(
            request_id="orphan-1",
            thread_id=thread.pk,
            message_id=orphan,
            seq=1,
            text="so far",
            offset=0,
            first=True,
        )
    await live_generations().renew(living)
    viewer = await svc.layer.new_channel()
    await svc.layer.group_add(groups.thread_group(thread.pk), viewer)
    later = time.time() + sweep.FIRST_LEASE_GRACE_S  # the rows are past their first lease's grace
    suspects = await sweep.sweep_orphans(svc, set(), now=later)
    assert suspects == {orphan}, "missing once: only a suspect (a restarted Redis may have lost it)"
    await sweep.sweep_orphans(svc, suspects, now=later + sweep.ORPHAN_SWEEP_EVERY_S)
    saved = await sync_to_async(Message.objects.get)(pk=orphan)
    assert saved.status == "error" and saved.error_code == "interrupted"
    assert saved.content == ("so far" if shared is not None else "")
    assert (await sync_to_async(Message.objects.get)(pk=living)).status == "streaming"
    event = (await asyncio.wait_for(svc.layer.receive(viewer), TIMEOUT))["event"]
    assert event["type"] == "message.error" and event["request_id"] == "orphan-1"
    assert event["error"]["code"] == "interrupted" and event["message"]["content"] == saved.content
    await live_generations().remove(living)
