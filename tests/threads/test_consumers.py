"""The WebSocket consumer through the full ASGI stack (auth, origin check, routing)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from chatapp.asgi import application
from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]

TIMEOUT = 10


def _ws(path: str, *, token: str | None = None, origin: str | None = None) -> WebsocketCommunicator:
    headers = []
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if origin:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def _connected(thread: Thread, token: str) -> WebsocketCommunicator:
    comm = _ws(f"/ws/threads/{thread.pk}/", token=token)
    ok, _ = await comm.connect(timeout=TIMEOUT)
    assert ok
    snap = await comm.receive_json_from(timeout=TIMEOUT)
    assert snap["type"] == "snapshot"
    return comm


async def _until(comm: WebsocketCommunicator, kind: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while True:
        ev = await comm.receive_json_from(timeout=TIMEOUT)
        seen.append(ev)
        if ev["type"] == kind:
            return seen


def _text(evs: list[dict[str, Any]]) -> str:
    deltas = [e for e in evs if e["type"] == "message.delta"]
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    return "".join(d["text"] for d in deltas)


async def test_unauthenticated_handshake_is_refused(thread: Thread, settings: Any) -> None:
    # A browser-like handshake from our own origin that carries no credentials: the consumer says 4401.
    settings.ALLOWED_HOSTS = ["app.example.com"]
    comm = _ws(f"/ws/threads/{thread.pk}/", origin="https://app.example.com")
    ok, code = await comm.connect(timeout=TIMEOUT)
    assert not ok and code == 4401


async def test_session_cookie_authenticates(thread: Thread, user: Any, settings: Any) -> None:
    from django.test import Client

    settings.ALLOWED_HOSTS = ["app.example.com"]
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    comm = WebsocketCommunicator(
        application,
        f"/ws/threads/{thread.pk}/",
        headers=[(b"cookie", cookie.encode()), (b"origin", b"https://app.example.com")],
    )
    ok, _ = await comm.connect(timeout=TIMEOUT)
    assert ok
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
    await comm.disconnect()


async def test_stream_and_second_connection_sees_the_same(thread: Thread, token: str) -> None:
    a = await _connected(thread, token)
    b = await _connected(thread, token)
    await a.send_json_to({"type": "send", "content": "Tell me about streams", "request_id": "ws-1"})
    evs_a, evs_b = await asyncio.gather(_until(a, "message.done"), _until(b, "message.done"))
    for evs in (evs_a, evs_b):
        assert evs[0]["type"] == "message.start" and evs[0]["request_id"] == "ws-1"
        assert evs[0]["user_message"]["content"] == "Tell me about streams"
        assert _text(evs) == evs[-1]["message"]["content"] != ""
    assert evs_a[-1]["message"] == evs_b[-1]["message"]
    rows = await sync_to_async(
        lambda: list(Message.objects.filter(thread=thread).values_list("role", "status"))
    )()
    assert rows == [("user", "complete"), ("assistant", "complete")]
    await a.disconnect()
    await b.disconnect()


async def test_snapshot_lists_saved_messages(thread: Thread, token: str) -> None:
    await sync_to_async(Message.objects.create)(
        thread=thread, role="user", content="earlier", request_id="e1"
    )
    comm = _ws(f"/ws/threads/{thread.pk}/", token=token)
    await comm.connect(timeout=TIMEOUT)
    snap = await comm.receive_json_from(timeout=TIMEOUT)
    assert [m["content"] for m in snap["messages"]] == ["earlier"] and snap["in_flight"] == []
    await comm.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        (json.dumps({"type": "dance"}), "unknown_type"),
        (json.dumps({"type": "send", "content": ""}), "invalid_content"),
        (json.dumps({"type": "cancel", "request_id": 3}), "invalid_request_id"),
        (json.dumps({"type": "cancel", "request_id": "unknown-1"}), "not_found"),
    ],
)
async def test_bad_frames_get_error_and_socket_stays_open(
    thread: Thread, token: str, frame: str, code: str
) -> None:
    comm = await _connected(thread, token)
    await comm.send_to(text_data=frame)
    ev = await comm.receive_json_from(timeout=TIMEOUT)
    assert ev["type"] == "error" and ev["error"]["code"] == code
    await comm.send_to(text_data=json.dumps({"type": "send", "content": "still there?"}))
    assert (await _until(comm, "message.done"))[-1]["message"]["status"] == "complete"
    await comm.disconnect()


async def test_cancel_frame_stops_generation(thread: Thread, token: str, settings: Any) -> None:
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "demo": {**settings.PROVIDERS["demo"], "tokens_per_s": 20.0, "max_tokens": 400},
    }
    comm = await _connected(thread, token)
    other = await _connected(thread, token)
    await comm.send_json_to({"type": "send", "content": "a long one please", "request_id": "c-1"})
    await _until(comm, "message.delta")
    await comm.send_json_to({"type": "cancel", "request_id": "c-1"})
    evs = await _until(comm, "message.cancelled")
    other_evs = await _until(other, "message.cancelled")
    final = evs[-1]["message"]
    assert final["status"] == "cancelled" and other_evs[-1]["message"] == final
    saved = await sync_to_async(Message.objects.get)(pk=final["id"])
    assert saved.status == "cancelled" and saved.content == final["content"] != ""
    await comm.disconnect()
    await other.disconnect()


async def test_generation_survives_its_socket_leaving(thread: Thread, token: str, settings: Any) -> None:
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "demo": {**settings.PROVIDERS["demo"], "tokens_per_s": 200.0, "max_tokens": 60},
    }
    comm = await _connected(thread, token)
    await comm.send_json_to({"type": "send", "content": "keep going without me", "request_id": "gone-1"})
    start = await comm.receive_json_from(timeout=TIMEOUT)
    assert start["type"] == "message.start"
    await comm.disconnect()
    from threads.generation import generation_service

    gone = [g for g in generation_service().running.values() if g.request_id == "gone-1"]
    gen = gone[0] if gone else None
    if gen is not None:  # still running: wait for its end (not a sleep: the generation's own future)
        await asyncio.wait_for(asyncio.shield(gen.done), TIMEOUT)
    saved = await sync_to_async(Message.objects.get)(request_id="gone-1", role="assistant")
    assert saved.status == "complete" and saved.content


async def test_viewer_joining_mid_stream_gets_snapshot_then_the_rest(
    thread: Thread, token: str, settings: Any
) -> None:
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "demo": {**settings.PROVIDERS["demo"], "tokens_per_s": 60.0, "max_tokens": 60},
    }
    sender = await _connected(thread, token)
    await sender.send_json_to({"type": "send", "content": "resume me", "request_id": "mid-1"})
    evs = await _until(sender, "message.delta")
    while evs[-1].get("seq", 0) < 3:  # a few deltas in, well before the end
        evs.append(await sender.receive_json_from(timeout=TIMEOUT))
    late = _ws(f"/ws/threads/{thread.pk}/", token=token)
    assert (await late.connect(timeout=TIMEOUT))[0]
    snap = await late.receive_json_from(timeout=TIMEOUT)
    (entry,) = snap["in_flight"]
    assert entry["request_id"] == "mid-1" and entry["seq"] >= 3 and entry["text"]
    rest = await _until(late, "message.done")
    deltas = [e for e in rest if e["type"] == "message.delta"]
    assert [d["seq"] for d in deltas] == list(range(entry["seq"] + 1, entry["seq"] + 1 + len(deltas)))
    assert entry["text"] + "".join(d["text"] for d in deltas) == rest[-1]["message"]["content"]
    await sender.disconnect()
    await late.disconnect()


async def test_viewer_that_stops_acknowledging_is_closed_others_are_not(
    thread: Thread, token: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from threads import flow

    monkeypatch.setattr(flow, "MAX_UNACKED", 10)  # a short reply is then "far behind"
    monkeypatch.setattr(flow, "ACK_EVERY", 4)  # the healthy viewer stays well within it
    settings.STREAM_FLUSH_MS = 1.0  # many small deltas
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        # ~70 tokens 5 ms apart: about one delta each, so well over MAX_UNACKED frames even when the
        # Redis layer's slower group_send lets the sender batch (at 2000 tokens/s it sometimes sent < 10).
        "demo": {**settings.PROVIDERS["demo"], "tokens_per_s": 200.0, "max_tokens": 400},
    }
    slow = await _connected(thread, token)
    healthy = await _connected(thread, token)
    await slow.send_json_to({"type": "ack", "count": 1})  # opts in, then never acks again
    received = 1  # the healthy viewer's snapshot
    await healthy.send_json_to({"type": "send", "content": "a long one", "request_id": "flow-1"})
    while True:  # the healthy viewer acknowledges as the page does
        ev = await healthy.receive_json_from(timeout=TIMEOUT)
        received += 1
        if received % flow.ACK_EVERY == 0:
            await healthy.send_json_to({"type": "ack", "count": received})
        if ev["type"] == "message.done":
            break
    frames = 0
    while True:
        out = await slow.receive_output(timeout=TIMEOUT)
        if out["type"] == "websocket.close":
            assert out["code"] == flow.CLOSE_TOO_SLOW
            break
        frames += 1
    assert frames <= flow.MAX_UNACKED
    await healthy.disconnect()


async def test_the_same_request_id_in_two_users_threads_stays_two_generations(
    thread: Thread, token: str, other_user: Any, settings: Any
) -> None:
    """request_ids are the clients' and unique only per thread: two users (or two threads) may use the
    same one at once. Each keeps its own generation, stream and cancel."""
    from accounts.tokens import api_token_create

    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "demo": {**settings.PROVIDERS["demo"], "tokens_per_s": 20.0, "max_tokens": 40},
    }
    theirs = await sync_to_async(Thread.objects.create)(
        owner=other_user, title="theirs", provider="demo", model="demo-1"
    )
    _, their_token = await sync_to_async(api_token_create)(user=other_user)
    mine, them = await _connected(thread, token), await _connected(theirs, their_token)
    await mine.send_json_to({"type": "send", "content": "my question", "request_id": "same-1"})
    my_evs = await _until(mine, "message.delta")
    await them.send_json_to({"type": "send", "content": "their question", "request_id": "same-1"})
    their_evs = await _until(them, "message.delta")
    await mine.send_json_to({"type": "cancel", "request_id": "same-1"})  # the first one started
    my_evs += await _until(mine, "message.cancelled")
    their_evs += await _until(them, "message.done")
    assert not [e for e in their_evs if e["type"] == "message.cancelled"], "my cancel stopped their reply"
    their_saved = await sync_to_async(Message.objects.get)(thread=theirs, role="assistant")
    assert their_saved.status == "complete" and _text(their_evs) == their_saved.content != ""
    my_saved = await sync_to_async(Message.objects.get)(thread=thread, role="assistant", request_id="same-1")
    assert my_saved.status == "cancelled" and my_saved.content == my_evs[-1]["message"]["content"]
    assert _text(my_evs) and my_saved.content.startswith(_text(my_evs)[:1])
    await mine.disconnect()
    await them.disconnect()
