"""The HTTP API of docs/api.md, through Django's ASGI handler: every route's success and error answers.
Who may do what (another user's thread is 404 everywhere, CSRF): tests/threads/test_access.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture
def api(token: str) -> AsyncClient:
    # Django 5.2's AsyncClient(headers=...) mangles names into "Http-Authorization"; ASGI-style works.
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def anon() -> AsyncClient:
    return AsyncClient()


def _err(resp: Any) -> tuple[int, str]:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return resp.status_code, body["error"]["code"]


async def _new_thread(api: AsyncClient, **body: Any) -> dict[str, Any]:
    resp = await api.post("/api/threads", body, content_type="application/json")
    assert resp.status_code == 201, resp.content
    return resp.json()


async def test_create_list_get_delete(api: AsyncClient) -> None:
    t1 = await _new_thread(api, title="First")
    t2 = await _new_thread(api)
    assert (t1["title"], t1["provider"], t1["model"]) == ("First", "demo", "demo-1")
    assert set(t1) == {
        "id",
        "title",
        "provider",
        "model",
        "model_id",
        "system_prompt",
        "created_at",
        "updated_at",
        "current_leaf_id",
        "archived",
        "usage",
    }
    assert t1["usage"] == {"input_tokens": 0, "output_tokens": 0, "cost_usd": "0"}
    listing = (await api.get("/api/threads")).json()
    assert [t["id"] for t in listing["threads"]] == [t2["id"], t1["id"]]
    detail = (await api.get(f"/api/threads/{t1['id']}")).json()
    assert detail["messages"] == [] and detail["id"] == t1["id"]
    assert (await api.delete(f"/api/threads/{t1['id']}")).status_code == 204
    assert _err(await api.get(f"/api/threads/{t1['id']}")) == (404, "not_found")


async def test_list_is_paginated(api: AsyncClient) -> None:
    ids = [(await _new_thread(api))["id"] for _ in range(3)]
    from threads import selectors

    page = await sync_to_async(selectors.thread_list_for_user)(user=await _owner(ids[0]), limit=2)
    assert [t["id"] for t in page["threads"]] == ids[::-1][:2]
    rest = (await api.get(f"/api/threads?before={page['next_before']}")).json()
    assert [t["id"] for t in rest["threads"]] == [ids[0]] and rest["next_before"] is None
    assert _err(await api.get("/api/threads?before=x")) == (400, "invalid_cursor")


async def test_lists_answer_next_cursor_as_api_md_names_it(api: AsyncClient) -> None:
    """docs/api.md (v1.1): every list is paginated with `?cursor=` (opaque) and answers `next_cursor`."""
    ids = [(await _new_thread(api))["id"] for _ in range(3)]
    from threads import selectors

    page = await sync_to_async(selectors.thread_list_for_user)(user=await _owner(ids[0]), limit=2)
    assert isinstance(page["next_cursor"], str)
    rest = (await api.get("/api/threads", {"cursor": page["next_cursor"]})).json()
    assert [t["id"] for t in rest["threads"]] == [ids[0]] and rest["next_cursor"] is None
    assert _err(await api.get("/api/threads?cursor=zz")) == (400, "invalid_cursor")
    for path in ("/api/threads?q=anything", "/api/models", "/api/tokens"):
        body = (await api.get(path)).json()
        assert "next_cursor" in body and body["next_cursor"] is None, path


@sync_to_async
def _owner(thread_id: int) -> Any:
    return Thread.objects.select_related("owner").get(pk=thread_id).owner


async def test_unknown_provider_is_400(api: AsyncClient) -> None:
    resp = await api.post("/api/threads", {"provider": "nope"}, content_type="application/json")
    assert _err(resp) == (400, "unknown_provider")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/threads"),
        ("post", "/api/threads"),
        ("get", "/api/threads/1"),
        ("delete", "/api/threads/1"),
        ("post", "/api/threads/1/messages"),
        ("post", "/api/threads/cancel/abc"),
    ],
)
async def test_unauthenticated_is_401(anon: AsyncClient, method: str, path: str) -> None:
    resp = await getattr(anon, method)(path)
    assert _err(resp) == (401, "unauthenticated")


async def test_bad_token_is_401() -> None:
    client = AsyncClient(AUTHORIZATION="Bearer cht_not-a-real-token")
    assert _err(await client.get("/api/threads")) == (401, "unauthenticated")


async def test_invalid_json_is_400(api: AsyncClient) -> None:
    t = await _new_thread(api)
    for path in ("/api/threads", f"/api/threads/{t['id']}/messages"):
        resp = await api.post(path, "{not json", content_type="application/json")
        assert _err(resp) == (400, "invalid_json")


async def test_bad_send_bodies(api: AsyncClient) -> None:
    t = await _new_thread(api)
    path = f"/api/threads/{t['id']}/messages"
    assert _err(await api.post(path, {"content": ""}, content_type="application/json")) == (
        400,
        "invalid_content",
    )
    big = {"content": "x" * 40_000}
    assert _err(await api.post(path, big, content_type="application/json")) == (413, "content_too_large")
    assert _err(await api.post(path, "content=hi", content_type="text/plain")) == (
        415,
        "unsupported_media_type",
    )
    bad_parent = {"content": "hi", "parent_id": 999999}
    assert _err(await api.post(path, bad_parent, content_type="application/json")) == (
        400,
        "invalid_parent_id",
    )


async def test_wrong_method_and_unknown_api_path(api: AsyncClient) -> None:
    resp = await api.put("/api/threads")
    assert _err(resp) == (405, "method_not_allowed") and resp["Allow"] == "GET, POST"
    assert _err(await api.get("/api/nothing-here")) == (404, "not_found")


async def test_send_without_stream_returns_both_messages(api: AsyncClient) -> None:
    t = await _new_thread(api)
    resp = await api.post(
        f"/api/threads/{t['id']}/messages",
        {"content": "Hello there", "request_id": "req-1"},
        content_type="application/json",
    )
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["request_id"] == "req-1" and body["coalesced"] in {"leader", "bypass"}
    user_msg, bot = body["user_message"], body["assistant_message"]
    assert (user_msg["role"], user_msg["content"], user_msg["status"]) == ("user", "Hello there", "complete")
    assert (bot["role"], bot["status"]) == ("assistant", "complete") and bot["content"]
    assert set(body["timings"]) == {"queue_wait_ms", "ttft_ms", "total_ms"}
    detail = (await api.get(f"/api/threads/{t['id']}")).json()
    assert [m["id"] for m in detail["messages"]] == [user_msg["id"], bot["id"]]
    assert detail["messages"][1]["content"] == bot["content"]
    assert detail["title"] == "Hello there"


async def test_replayed_request_id_returns_same_messages_and_writes_nothing(api: AsyncClient) -> None:
    t = await _new_thread(api)
    path = f"/api/threads/{t['id']}/messages"
    first = (
        await api.post(path, {"content": "Hi", "request_id": "r-same"}, content_type="application/json")
    ).json()
    again = (
        await api.post(path, {"content": "Hi", "request_id": "r-same"}, content_type="application/json")
    ).json()
    assert again["user_message"]["id"] == first["user_message"]["id"]
    assert again["assistant_message"] == first["assistant_message"]
    assert await sync_to_async(Message.objects.count)() == 2


async def test_send_with_stream_is_server_sent_events(api: AsyncClient) -> None:
    t = await _new_thread(api)
    resp = await api.post(
        f"/api/threads/{t['id']}/messages",
        {"content": "Stream me", "stream": True, "request_id": "s1"},
        content_type="application/json",
    )
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/event-stream")
    raw = b"".join([chunk async for chunk in resp.streaming_content]).decode()  # type: ignore[attr-defined]
    frames = [f for f in raw.split("\n\n") if f]
    evs = [json.loads(f.split("data: ", 1)[1]) for f in frames]
    kinds = [e["type"] for e in evs]
    assert kinds[0] == "message.start" and kinds[-1] == "message.done"
    deltas = [e for e in evs if e["type"] == "message.delta"]
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1)) and deltas
    assert "".join(d["text"] for d in deltas) == evs[-1]["message"]["content"]
    assert all(f.startswith(f"event: {e['type']}\n") for f, e in zip(frames, evs, strict=True))


async def test_cancel_unknown_and_finished(api: AsyncClient) -> None:
    assert _err(await api.post("/api/threads/cancel/nope")) == (404, "not_found")
    t = await _new_thread(api)
    await api.post(
        f"/api/threads/{t['id']}/messages",
        {"content": "Hi", "request_id": "done-1"},
        content_type="application/json",
    )
    assert _err(await api.post("/api/threads/cancel/done-1")) == (409, "conflict")


async def test_healthz() -> None:
    resp = await AsyncClient().get("/healthz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok" and body["checks"] == {"database": "ok", "channel_layer": "ok"}
