"""The conversation tree (#18) through the HTTP API: the context is the path from the root, regenerate
makes a sibling (coalesced while it runs, never answered from a finished one), an edit is a new branch,
PATCH switches branch, renames and archives, and every error answers with its code. SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from tests.threads.recording import Recorder, RecordingChannelLayer
from threads import branches, groups
from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    scripted = Recorder(chunks=("An", "swer"))
    monkeypatch.setattr("threads.generation.get_provider", lambda name: scripted)
    return scripted


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def other_api(other_user: Any) -> AsyncClient:
    from accounts.tokens import api_token_create

    _, raw = api_token_create(user=other_user)
    return AsyncClient(AUTHORIZATION=f"Bearer {raw}")


def _err(resp: Any) -> tuple[int, str]:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return resp.status_code, body["error"]["code"]


async def _thread(api: AsyncClient) -> int:
    resp = await api.post("/api/threads", {"title": "Tree"}, content_type="application/json")
    assert resp.status_code == 201
    return int(resp.json()["id"])


async def _send(api: AsyncClient, tid: int, content: str, **extra: Any) -> dict[str, Any]:
    resp = await api.post(
        f"/api/threads/{tid}/messages", {"content": content, **extra}, content_type="application/json"
    )
    assert resp.status_code == 200, resp.content
    return resp.json()


async def _regenerate(api: AsyncClient, tid: int, mid: int, **body: Any) -> Any:
    return await api.post(
        f"/api/threads/{tid}/messages/{mid}/regenerate", body, content_type="application/json"
    )


async def _patch(api: AsyncClient, tid: int, body: Any) -> Any:
    return await api.patch(f"/api/threads/{tid}", body, content_type="application/json")


async def _leaf(tid: int) -> int | None:
    return await sync_to_async(lambda: Thread.objects.get(pk=tid).current_leaf_id)()


async def _branch(tid: int) -> list[int]:
    page = await sync_to_async(branches.branch_page)(thread=tid)
    return [m["id"] for m in page["messages"]]


async def test_sends_chain_into_one_branch_and_the_context_is_its_path(
    api: AsyncClient, provider: Recorder
) -> None:
    tid = await _thread(api)
    a = await _send(api, tid, "one")
    b = await _send(api, tid, "two")
    assert a["user_message"]["parent_id"] is None
    assert b["user_message"]["parent_id"] == a["assistant_message"]["id"]
    assert b["assistant_message"]["parent_id"] == b["user_message"]["id"]
    assert await _leaf(tid) == b["assistant_message"]["id"]
    assert provider.contexts[-1] == [("user", "one"), ("assistant", "Answer"), ("user", "two")]
    detail = (await api.get(f"/api/threads/{tid}")).json()
    assert detail["current_leaf_id"] == b["assistant_message"]["id"]


async def test_regenerate_makes_a_sibling_answering_the_same_question(
    api: AsyncClient, provider: Recorder
) -> None:
    tid = await _thread(api)
    a = await _send(api, tid, "one")
    b = await _send(api, tid, "two")
    old = b["assistant_message"]["id"]
    resp = await _regenerate(api, tid, old)
    assert resp.status_code == 200, resp.content
    body = resp.json()
    new = body["assistant_message"]
    assert new["id"] != old and new["parent_id"] == b["user_message"]["id"] and new["status"] == "complete"
    assert body["user_message"]["id"] == b["user_message"]["id"]
    # The same context again: the old reply is not part of it.
    assert provider.contexts[-1] == [("user", "one"), ("assistant", "Answer"), ("user", "two")]
    assert await _leaf(tid) == new["id"]
    assert await _branch(tid) == [
        a["user_message"]["id"],
        a["assistant_message"]["id"],
        b["user_message"]["id"],
        new["id"],
    ]
    page = await sync_to_async(branches.branch_page)(thread=tid)
    assert page["siblings"] == {str(new["id"]): [old, new["id"]]}
    assert await sync_to_async(Message.objects.filter(thread_id=tid, role="user").count)() == 2


async def test_regenerate_errors(api: AsyncClient, other_api: AsyncClient, provider: Recorder) -> None:
    tid = await _thread(api)
    a = await _send(api, tid, "one")
    assert _err(await _regenerate(api, tid, a["user_message"]["id"])) == (400, "not_regenerable")
    assert _err(await _regenerate(api, tid, 10**9)) == (404, "not_found")
    assert _err(await _regenerate(other_api, tid, a["assistant_message"]["id"])) == (404, "not_found")
    assert _err(await _regenerate(api, tid, a["assistant_message"]["id"], strem=True)) == (
        400,
        "unknown_field",
    )
    assert _err(await _regenerate(api, tid, a["assistant_message"]["id"], request_id="bad id")) == (
        400,
        "invalid_request_id",
    )
    # The send's own request_id names another request: refused, nothing written.
    rid = a["request_id"]
    assert _err(await _regenerate(api, tid, a["assistant_message"]["id"], request_id=rid)) == (
        422,
        "idempotency_mismatch",
    )
    other = await _thread(api)
    assert _err(await _regenerate(api, other, a["assistant_message"]["id"])) == (404, "not_found")
    assert await sync_to_async(Message.objects.filter(thread_id=tid).count)() == 2
    # A request_id reused for the same regenerate is a replay: the same reply, no new call.
    first = await _regenerate(api, tid, a["assistant_message"]["id"], request_id="regen-1")
    assert first.status_code == 200, first.content
    calls = provider.calls
    again = await _regenerate(api, tid, a["assistant_message"]["id"], request_id="regen-1")
    assert again.json()["assistant_message"]["id"] == first.json()["assistant_message"]["id"], again.json()
    assert provider.calls == calls


# PostgreSQL only: two regenerates writing at once meet SQLite's in-memory shared-cache table lock
# ("database table is locked"), an artefact of the test database (a file with WAL waits instead).
@pytest.mark.services
async def test_identical_concurrent_regenerates_share_one_call_and_a_later_one_calls_again(
    api: AsyncClient, provider: Recorder, user: Any
) -> None:
    from threads import outcomes, regenerate

    tid = await _thread(api)
    a = await _send(api, tid, "one")
    calls = provider.calls
    thread = await sync_to_async(Thread.objects.get)(pk=tid)
    mid = a["assistant_message"]["id"]

    def req(rid: str) -> regenerate.RegenerateRequest:
        return regenerate.RegenerateRequest(message_id=mid, request_id=rid)

    first, second = await asyncio.gather(
        regenerate.regenerate(user=user, thread=thread, req=req("r1")),
        regenerate.regenerate(user=user, thread=thread, req=req("r2")),
    )
    assert sorted((first.coalesced, second.coalesced)) == ["follower", "leader"]
    assert first.assistant_message["id"] == second.assistant_message["id"]
    done = await asyncio.wait_for(outcomes.wait_terminal(second, thread_id=tid), 10)
    assert done["type"] == "message.done" and provider.calls == calls + 1
    # Finished: the next regenerate is a new call, never the finished result.
    third = await regenerate.regenerate(user=user, thread=thread, req=req("r3"))
    assert third.coalesced == "leader" and third.assistant_message["id"] != first.assistant_message["id"]
    await asyncio.wait_for(outcomes.wait_terminal(third, thread_id=tid), 10)
    assert provider.calls == calls + 2


async def test_an_edit_is_a_new_branch_and_the_old_one_stays(api: AsyncClient, provider: Recorder) -> None:
    tid = await _thread(api)
    a = await _send(api, tid, "one")
    b = await _send(api, tid, "two")
    edited = await _send(api, tid, "two, better", parent_id=a["assistant_message"]["id"])
    assert edited["user_message"]["parent_id"] == a["assistant_message"]["id"]
    assert provider.contexts[-1] == [("user", "one"), ("assistant", "Answer"), ("user", "two, better")]
    assert await _leaf(tid) == edited["assistant_message"]["id"]
    page = await sync_to_async(branches.branch_page)(thread=tid)
    assert page["siblings"][str(edited["user_message"]["id"])] == [
        b["user_message"]["id"],
        edited["user_message"]["id"],
    ]
    # The next send continues the branch shown.
    c = await _send(api, tid, "three")
    assert c["user_message"]["parent_id"] == edited["assistant_message"]["id"]
    # Editing the first message: parent_id null is a new root.
    root = await _send(api, tid, "uno", parent_id=None)
    assert root["user_message"]["parent_id"] is None
    assert provider.contexts[-1] == [("user", "uno")]
    assert await _branch(tid) == [root["user_message"]["id"], root["assistant_message"]["id"]]


async def test_a_bad_parent_is_400_and_writes_nothing(api: AsyncClient, provider: Recorder) -> None:
    tid, other = await _thread(api), await _thread(api)
    a = await _send(api, other, "elsewhere")
    resp = await api.post(
        f"/api/threads/{tid}/messages",
        {"content": "x", "parent_id": a["assistant_message"]["id"]},
        content_type="application/json",
    )
    assert _err(resp) == (400, "invalid_parent_id")
    assert await sync_to_async(Message.objects.filter(thread_id=tid).count)() == 0


async def test_patch_switches_branch_and_every_tab_hears_it(
    api: AsyncClient, provider: Recorder, settings: Any
) -> None:
    layer = RecordingChannelLayer()
    from threads import generation

    tid = await _thread(api)
    a = await _send(api, tid, "one")
    b = await _send(api, tid, "two")
    c = await _send(api, tid, "three")
    edited = await _send(api, tid, "two, better", parent_id=a["assistant_message"]["id"])
    svc = generation.generation_service()
    svc.layer = layer
    # Switch back to the old question: the branch through it, down to its newest end, is shown.
    resp = await _patch(api, tid, {"current_leaf_id": b["user_message"]["id"]})
    assert resp.status_code == 200, resp.content
    assert resp.json()["current_leaf_id"] == c["assistant_message"]["id"]
    assert (await _branch(tid))[-1] == c["assistant_message"]["id"]
    sent = layer.events(groups.thread_group(tid))
    assert (
        sent[-1]["type"] == "thread.updated"
        and sent[-1]["thread"]["current_leaf_id"] == c["assistant_message"]["id"]
    )
    resp = await _patch(api, tid, {"current_leaf_id": edited["user_message"]["id"]})
    assert resp.json()["current_leaf_id"] == edited["assistant_message"]["id"]


async def test_patch_renames_and_archives(api: AsyncClient, provider: Recorder) -> None:
    tid = await _thread(api)
    resp = await _patch(api, tid, {"title": "Holiday plans", "archived": False})
    assert resp.status_code == 200 and resp.json()["title"] == "Holiday plans"
    renamed_at = resp.json()["updated_at"]
    resp = await _patch(api, tid, {"archived": True})
    assert resp.json()["archived"] is True
    assert resp.json()["updated_at"] == renamed_at  # archiving is no activity: the list keeps its order
    listed = (await api.get("/api/threads")).json()["threads"]
    assert tid not in [t["id"] for t in listed]
    archived = (await api.get("/api/threads?archived=true")).json()["threads"]
    assert [t["id"] for t in archived] == [tid]
    assert (await _patch(api, tid, {"model": None, "system_prompt": None})).status_code == 200  # null: as is
    resp = await _patch(api, tid, {"archived": False})
    assert tid in [t["id"] for t in (await api.get("/api/threads")).json()["threads"]]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"archived": True, "titel": "x"}, 400, "unknown_field"),
        ({"archived": True, "title": "   "}, 400, "invalid_title"),
        ({"archived": True, "title": 5}, 400, "invalid_field"),
        ({"archived": True, "title": "x" * 201}, 400, "title_too_long"),
        ({"archived": "yes"}, 400, "invalid_field"),
        ({"current_leaf_id": "3"}, 400, "invalid_leaf"),
        ({"current_leaf_id": 10**9}, 400, "invalid_leaf"),
        ({"title": "   "}, 400, "invalid_title"),
        ({}, 400, "empty_change"),
        ({"model": "nowhere/none", "archived": True}, 400, "model_not_allowed"),
        ({"system_prompt": 5, "current_leaf_id": 1}, 400, "invalid_field"),
    ],
)
async def test_patch_errors(api: AsyncClient, body: Any, status: int, code: str) -> None:
    tid = await _thread(api)
    assert _err(await _patch(api, tid, body)) == (status, code)


async def test_one_patch_takes_every_field(api: AsyncClient, provider: Recorder) -> None:
    """A body mixing #17's fields (model, system prompt) with the tree's (archived, current_leaf_id) was
    refused as unknown_field by whichever of the two handlers it reached."""
    tid = await _thread(api)
    a = await _send(api, tid, "one")
    b = await _send(api, tid, "two")
    edited = await _send(api, tid, "one, edited", parent_id=None)  # a second branch, now shown
    assert await _leaf(tid) == edited["assistant_message"]["id"]
    model = (await api.get(f"/api/threads/{tid}")).json()["model_id"]
    body = {
        "model": model,
        "system_prompt": "Be brief.",
        "title": "  Both   kinds ",
        "archived": True,
        "current_leaf_id": a["user_message"]["id"],
    }
    resp = await _patch(api, tid, body)
    assert resp.status_code == 200, resp.content
    got = resp.json()
    assert (got["title"], got["system_prompt"], got["archived"], got["model_id"]) == (
        "Both kinds",
        "Be brief.",
        True,
        model,
    )
    # The first branch, down to its newest end.
    assert got["current_leaf_id"] == b["assistant_message"]["id"] == await _leaf(tid)


@pytest.mark.parametrize(
    "bad",
    [
        {"model": "nowhere/none"},
        {"current_leaf_id": 10**9},
        {"title": ""},
        {"archived": "yes"},
    ],
)
async def test_a_patch_with_one_bad_field_writes_nothing(
    api: AsyncClient, provider: Recorder, bad: dict[str, Any]
) -> None:
    tid = await _thread(api)
    a = await _send(api, tid, "one")
    await _send(api, tid, "two")
    before = await sync_to_async(lambda: Thread.objects.values().get(pk=tid))()
    body = {
        "title": "New",
        "system_prompt": "Other.",
        "archived": True,
        "current_leaf_id": a["user_message"]["id"],
    }
    resp = await _patch(api, tid, {**body, **bad})
    assert resp.status_code == 400, resp.content
    assert await sync_to_async(lambda: Thread.objects.values().get(pk=tid))() == before


async def test_patch_of_a_foreign_thread_or_a_message_elsewhere(
    api: AsyncClient, other_api: AsyncClient, provider: Recorder
) -> None:
    tid, other = await _thread(api), await _thread(api)
    a = await _send(api, other, "elsewhere")
    assert _err(await _patch(other_api, tid, {"title": "mine"})) == (404, "not_found")
    assert _err(await _patch(api, tid, {"current_leaf_id": a["user_message"]["id"]})) == (400, "invalid_leaf")
    assert await sync_to_async(lambda: Thread.objects.get(pk=tid).title)() == "Tree"
