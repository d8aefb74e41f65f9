"""Export and import (#18): GET /api/threads/{id}/export?format=json|md, POST /api/threads/import with our
JSON (the whole tree comes back) and a ChatGPT conversations.json (its mapping tree onto ours); a broken
file is 400 with the reason and writes nothing. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from threads.models import ChatPreferences, Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


def _tree(owner: Any) -> Thread:
    """one -> Answer 1 -> (two -> Answer 2 | two, better -> Answer 3): the edit's branch current."""
    thread = Thread.objects.create(owner=owner, title="Trip plans", provider="demo", model="demo-1")

    def add(role: str, content: str, parent: Message | None, rid: str) -> Message:
        return Message.objects.create(
            thread=thread, role=role, content=content, request_id=rid, parent=parent
        )

    u1 = add("user", "one", None, "a")
    a1 = add("assistant", "Answer 1", u1, "a")
    u2 = add("user", "two", a1, "b")
    add("assistant", "Answer 2", u2, "b")
    u3 = add("user", "two, better", a1, "c")
    a3 = add("assistant", "Answer **3**", u3, "c")
    thread.current_leaf_id = a3.pk
    thread.save()
    return thread


CHATGPT = [
    {
        "title": "From ChatGPT",
        "current_node": "n4",
        "mapping": {
            "root": {"id": "root", "message": None, "parent": None, "children": ["sys"]},
            "sys": {
                "id": "sys",
                "message": {"author": {"role": "system"}, "content": {"content_type": "text", "parts": [""]}},
                "parent": "root",
                "children": ["n1"],
            },
            "n1": {
                "id": "n1",
                "message": {
                    "author": {"role": "user"},
                    "content": {"content_type": "text", "parts": ["hi there"]},
                },
                "parent": "sys",
                "children": ["n2", "n3"],
            },
            "n2": {
                "id": "n2",
                "message": {
                    "author": {"role": "assistant"},
                    "content": {"content_type": "text", "parts": ["first"]},
                },
                "parent": "n1",
                "children": [],
            },
            "n3": {
                "id": "n3",
                "message": {
                    "author": {"role": "assistant"},
                    "content": {"content_type": "text", "parts": ["second"]},
                },
                "parent": "n1",
                "children": ["n4"],
            },
            "n4": {
                "id": "n4",
                "message": {
                    "author": {"role": "user"},
                    "content": {"content_type": "text", "parts": ["thanks"]},
                },
                "parent": "n3",
                "children": [],
            },
        },
    }
]


async def _import(api: AsyncClient, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body)
    return await api.post("/api/threads/import", raw, content_type="application/json")


async def test_export_json_is_the_whole_tree_and_imports_back(api: AsyncClient, user: Any) -> None:
    thread = await sync_to_async(_tree)(user)
    resp = await api.get(f"/api/threads/{thread.pk}/export", {"format": "json"})
    assert resp.status_code == 200 and 'attachment; filename="trip-plans-' in resp["Content-Disposition"]
    data = json.loads(resp.content)
    assert data["format"] == "chatapp.thread.v1" and len(data["messages"]) == 6
    made = await _import(api, data)
    assert made.status_code == 201, made.content
    (copy,) = made.json()["threads"]
    assert copy["id"] != thread.pk and copy["title"] == "Trip plans"
    again = json.loads((await api.get(f"/api/threads/{copy['id']}/export")).content)
    shape = [(m["role"], m["content"]) for m in again["messages"]]
    assert shape == [(m["role"], m["content"]) for m in data["messages"]]
    ids = {m["id"]: i for i, m in enumerate(again["messages"])}
    parents = [None if m["parent_id"] is None else ids[m["parent_id"]] for m in again["messages"]]
    assert parents == [None, 0, 1, 2, 1, 4]  # the same tree
    assert ids[copy["current_leaf_id"]] == 5  # the same branch shown


async def test_an_import_keeps_the_files_system_prompt_else_takes_the_owners_default(
    api: AsyncClient, user: Any, settings: Any
) -> None:
    thread = await sync_to_async(_tree)(user)
    thread.system_prompt = "Answer in French."
    await sync_to_async(thread.save)(update_fields=["system_prompt"])
    data = json.loads((await api.get(f"/api/threads/{thread.pk}/export")).content)
    await sync_to_async(ChatPreferences.objects.create)(user=user, system_prompt="Be brief.")
    (copy,) = (await _import(api, data)).json()["threads"]
    assert copy["system_prompt"] == "Answer in French."  # an export of ours keeps it
    (chatgpt,) = (await _import(api, CHATGPT[:1])).json()["threads"]
    assert chatgpt["system_prompt"] == "Be brief."  # none in the file: the owner's default
    settings.MAX_SYSTEM_PROMPT_CHARS = 10
    resp = await _import(api, data)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_import"
    assert "system prompt" in resp.json()["error"]["message"]


async def test_export_markdown_is_the_branch_shown(api: AsyncClient, user: Any, other_user: Any) -> None:
    thread = await sync_to_async(_tree)(user)
    resp = await api.get(f"/api/threads/{thread.pk}/export", {"format": "md"})
    text = resp.content.decode()
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/markdown")
    assert text.startswith("# Trip plans") and "two, better" in text and "Answer **3**" in text
    assert "Answer 2" not in text
    bad = await api.get(f"/api/threads/{thread.pk}/export", {"format": "pdf"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_format"
    foreign = await sync_to_async(Thread.objects.create)(owner=other_user, provider="demo", model="demo-1")
    assert (await api.get(f"/api/threads/{foreign.pk}/export")).status_code == 404


async def test_a_chatgpt_export_maps_onto_the_tree(api: AsyncClient) -> None:
    resp = await _import(api, CHATGPT)
    assert resp.status_code == 201, resp.content
    (thread,) = resp.json()["threads"]
    rows: list[Message] = await sync_to_async(
        lambda: list(Message.objects.filter(thread_id=thread["id"]).order_by("id"))
    )()
    by_text = {m.content: m for m in rows}
    assert set(by_text) == {"hi there", "first", "second", "thanks"}  # the system node skipped
    assert by_text["hi there"].parent_id is None
    assert by_text["first"].parent_id == by_text["second"].parent_id == by_text["hi there"].pk
    assert by_text["thanks"].parent_id == by_text["second"].pk
    assert thread["current_leaf_id"] == by_text["thanks"].pk and thread["title"] == "From ChatGPT"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        {"hello": 1},
        {
            "format": "chatapp.thread.v1",
            "thread": {},
            "messages": [{"id": 1, "role": "robot", "content": "x"}],
        },
        {
            "format": "chatapp.thread.v1",
            "thread": {},
            "messages": [{"id": 2, "parent_id": 1, "role": "user", "content": "x"}],
        },
        {"format": "chatapp.thread.v1", "thread": {}, "messages": []},
        # A good conversation, then a broken one: nothing of either is written.
        [
            CHATGPT[0],
            {
                "title": "x",
                "mapping": {"a": {"message": {"author": {"role": "user"}, "content": {"parts": ["\x00"]}}}},
            },
        ],
        [
            {
                "title": "loop",
                "mapping": {"a": {"parent": "b", "children": ["b"]}, "b": {"parent": "a", "children": ["a"]}},
            }
        ],
    ],
)
async def test_a_broken_file_is_400_with_its_reason_and_nothing_written(api: AsyncClient, body: Any) -> None:
    resp = await _import(api, body)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_import", resp.content
    assert resp.json()["error"]["message"].startswith("The file cannot be imported")
    assert await sync_to_async(Thread.objects.count)() == 0
    assert await sync_to_async(Message.objects.count)() == 0
