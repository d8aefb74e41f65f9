"""The model access table (#17): everyone, a group, withdrawn, unknown, over the API, the page form and
the WebSocket send; a thread switches model mid-thread and each reply records the model that answered."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.test import AsyncClient, Client

from chatapp.asgi import application
from providers.models import Connection, ModelOffer
from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]
TIMEOUT = 10


@pytest.fixture
def lab(settings: Any) -> Connection:
    """A connection 'lab' (the demo, fast): 'open' to everyone, 'research' to one group, 'retired' unticked."""
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "lab": {"kind": "demo", "model": "open", "ttft_ms": 0.0, "tokens_per_s": 2000.0, "max_tokens": 20},
    }
    conn = Connection.objects.create(name="lab", kind="demo", rps=0)
    ModelOffer.objects.create(connection=conn, model="open", label="Lab open")
    research = ModelOffer.objects.create(
        connection=conn, model="research", label="Lab research", everyone=False
    )
    research.groups.add(Group.objects.create(name="researchers"))
    ModelOffer.objects.create(connection=conn, model="retired", offered=False)
    return conn


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


async def _ids(api: AsyncClient) -> list[str]:
    resp = await api.get("/api/models")
    assert resp.status_code == 200
    return [m["id"] for m in resp.json()["models"]]


async def test_the_callers_models_only(api: AsyncClient, lab: Connection, user: Any) -> None:
    assert await _ids(api) == ["demo/demo-1", "lab/open"]
    await sync_to_async(user.groups.add)(await Group.objects.aget(name="researchers"))
    assert await _ids(api) == ["demo/demo-1", "lab/open", "lab/research"]
    models = (await api.get("/api/models")).json()["models"]
    assert models[1] == {
        "id": "lab/open",
        "connection": "lab",
        "provider": "demo",
        "model": "open",
        "label": "Lab open",
        "default": False,
        "context_tokens": None,
    }
    assert [m["id"] for m in models if m["default"]] == ["demo/demo-1"]  # DEFAULT_PROVIDER's


async def test_unconfigured_providers_are_not_offered(api: AsyncClient) -> None:
    """#22 item 8: OpenAI and Anthropic without a key (the embedded defaults) are not in the menu."""
    assert await _ids(api) == ["demo/demo-1"]
    resp = await api.post("/api/threads", {"model": "openai/gpt-4o-mini"}, content_type="application/json")
    assert (resp.status_code, resp.json()["error"]["code"]) == (400, "model_not_allowed")


@pytest.mark.parametrize(
    ("model", "status"),
    [
        ("lab/open", 201),  # everyone
        ("lab/research", 400),  # a group the caller is not in
        ("lab/retired", 400),  # withdrawn (not offered)
        ("lab/nonexistent", 400),  # unknown model
        ("nowhere/open", 400),  # unknown connection
    ],
)
async def test_create_over_the_api(api: AsyncClient, lab: Connection, model: str, status: int) -> None:
    resp = await api.post("/api/threads", {"model": model}, content_type="application/json")
    assert resp.status_code == status
    if status == 400:
        assert resp.json()["error"]["code"] == "model_not_allowed"
        assert not await Thread.objects.aexists()
    else:
        assert (resp.json()["provider"], resp.json()["model"], resp.json()["model_id"]) == (
            "lab",
            "open",
            model,
        )


@pytest.mark.parametrize(
    ("model", "ok"),
    [
        ("lab/open", True),  # everyone
        ("lab/research", False),  # a group the caller is not in
        ("lab/retired", False),  # withdrawn
        ("lab/nonexistent", False),  # unknown model
        ("nowhere/open", False),  # unknown connection
    ],
)
def test_create_over_the_page_form(lab: Connection, user: Any, model: str, ok: bool) -> None:
    client = Client()
    client.force_login(user)
    page = client.get("/")
    assert b'<label for="new-model">Model</label>' in page.content
    assert b'value="lab/open"' in page.content and b"lab/research" not in page.content
    resp = client.post("/", {"model": model, "title": "t"})
    if ok:
        assert resp.status_code == 302
        assert Thread.objects.get().model == "open"
    else:
        assert resp.status_code == 400 and b"is not offered to you" in resp.content
        assert not Thread.objects.exists()


def _ws(thread_id: int, token: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, f"/ws/threads/{thread_id}/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )


async def _until(comm: WebsocketCommunicator, *kinds: str) -> dict[str, Any]:
    while True:
        ev = await comm.receive_json_from(timeout=TIMEOUT)
        if ev["type"] in kinds:
            return ev


async def test_a_withdrawn_model_is_refused_on_every_send_and_the_thread_can_switch(
    api: AsyncClient, lab: Connection, token: str
) -> None:
    tid = (await api.post("/api/threads", {"model": "lab/open"}, content_type="application/json")).json()[
        "id"
    ]
    first = await api.post(f"/api/threads/{tid}/messages", {"content": "hi"}, content_type="application/json")
    assert first.status_code == 200 and first.json()["assistant_message"]["model_id"] == "lab/open"
    await ModelOffer.objects.filter(model="open").aupdate(offered=False)
    await sync_to_async(lambda: Connection.objects.get(name="lab").save())()  # admin saves: caches drop

    refused = await api.post(
        f"/api/threads/{tid}/messages", {"content": "again"}, content_type="application/json"
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert "Switch this thread to another model" in refused.json()["error"]["message"]
    comm = _ws(tid, token)
    assert (await comm.connect(timeout=TIMEOUT))[0]
    await _until(comm, "snapshot")
    await comm.send_json_to({"type": "send", "content": "over the socket"})
    error = await _until(comm, "error")
    assert error["error"]["code"] == "model_not_allowed"

    switched = await api.patch(
        f"/api/threads/{tid}", {"model": "demo/demo-1"}, content_type="application/json"
    )
    assert switched.status_code == 200 and switched.json()["model_id"] == "demo/demo-1"
    assert (await _until(comm, "thread.updated"))["thread"]["model_id"] == "demo/demo-1"
    await comm.send_json_to({"type": "send", "content": "now with the demo"})
    done = await _until(comm, "message.done")
    assert done["message"]["model_id"] == "demo/demo-1"
    await comm.disconnect()
    replies = [m async for m in Message.objects.filter(thread_id=tid, role="assistant").order_by("id")]
    assert [m.model_id for m in replies] == ["lab/open", "demo/demo-1"]


async def test_switching_to_a_model_not_allowed_is_refused(api: AsyncClient, lab: Connection) -> None:
    tid = (await api.post("/api/threads", {}, content_type="application/json")).json()["id"]
    for model in ("lab/research", "lab/retired", "lab/missing", "x"):
        resp = await api.patch(f"/api/threads/{tid}", {"model": model}, content_type="application/json")
        assert (resp.status_code, resp.json()["error"]["code"]) == (400, "model_not_allowed"), model
    thread = await Thread.objects.aget(pk=tid)
    assert (thread.provider, thread.model) == ("demo", "demo-1")


def test_the_new_thread_menu_offers_only_configured_providers(user: Any) -> None:
    """#22 item 8: the menu offered OpenAI without a key, which failed only after Send."""
    client = Client()
    client.force_login(user)
    page = client.get("/").content.decode()
    menu = page[page.index('<select id="new-model"') : page.index("</select>")]
    assert 'value="demo/demo-1"' in menu
    assert "openai" not in menu and "anthropic" not in menu and "gemini" not in menu


async def _withdraw(model: str) -> None:
    await ModelOffer.objects.filter(model=model).aupdate(offered=False)
    await sync_to_async(lambda: Connection.objects.get(name="lab").save())()  # admin saves: caches drop


async def test_a_regenerate_is_checked_like_a_send(api: AsyncClient, lab: Connection, token: str) -> None:
    """A regenerate is a new provider call: a withdrawn model is refused over the API and the socket."""
    created = await api.post("/api/threads", {"model": "lab/open"}, content_type="application/json")
    tid = created.json()["id"]
    first = await api.post(f"/api/threads/{tid}/messages", {"content": "hi"}, content_type="application/json")
    reply = first.json()["assistant_message"]["id"]
    await _withdraw("open")

    refused = await api.post(
        f"/api/threads/{tid}/messages/{reply}/regenerate", {}, content_type="application/json"
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "model_not_allowed")
    comm = _ws(tid, token)
    assert (await comm.connect(timeout=TIMEOUT))[0]
    await _until(comm, "snapshot")
    await comm.send_json_to({"type": "regenerate", "message_id": reply})
    assert (await _until(comm, "error"))["error"]["code"] == "model_not_allowed"
    await comm.disconnect()
    assert await Message.objects.filter(thread_id=tid, role="assistant").acount() == 1


async def test_a_socket_regenerates_with_the_model_switched_to(
    api: AsyncClient, lab: Connection, token: str
) -> None:
    """The socket opened before the switch: its regenerate uses the thread's model now, not then."""
    created = await api.post("/api/threads", {"model": "lab/open"}, content_type="application/json")
    tid = created.json()["id"]
    first = await api.post(f"/api/threads/{tid}/messages", {"content": "hi"}, content_type="application/json")
    reply = first.json()["assistant_message"]["id"]
    comm = _ws(tid, token)
    assert (await comm.connect(timeout=TIMEOUT))[0]
    await _until(comm, "snapshot")
    switched = await api.patch(
        f"/api/threads/{tid}", {"model": "demo/demo-1"}, content_type="application/json"
    )
    assert switched.status_code == 200
    await _until(comm, "thread.updated")
    await comm.send_json_to({"type": "regenerate", "message_id": reply})
    done = await _until(comm, "message.done")
    assert done["message"]["model_id"] == "demo/demo-1"
    await comm.disconnect()


async def _leave_group(user: Any) -> None:
    await sync_to_async(user.groups.clear)()


async def _delete_offer(user: Any) -> None:
    await sync_to_async(lambda: ModelOffer.objects.get(model="research").delete())()


async def _disable_connection(user: Any) -> None:
    def disable() -> None:
        conn = Connection.objects.get(name="lab")
        conn.enabled = False
        conn.save()

    await sync_to_async(disable)()


@pytest.mark.parametrize("lose", [_leave_group, _delete_offer, _disable_connection])
async def test_every_send_checks_the_group_and_the_model_still_exist(
    api: AsyncClient, lab: Connection, user: Any, token: str, lose: Any
) -> None:
    """The access table's group row on sends, and a model gone (unknown now): over the API and the socket."""
    await sync_to_async(user.groups.add)(await Group.objects.aget(name="researchers"))
    created = await api.post("/api/threads", {"model": "lab/research"}, content_type="application/json")
    assert created.status_code == 201
    tid = created.json()["id"]
    first = await api.post(f"/api/threads/{tid}/messages", {"content": "hi"}, content_type="application/json")
    assert first.status_code == 200 and first.json()["assistant_message"]["model_id"] == "lab/research"
    await lose(user)

    refused = await api.post(
        f"/api/threads/{tid}/messages", {"content": "again"}, content_type="application/json"
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "model_not_allowed")
    comm = _ws(tid, token)
    assert (await comm.connect(timeout=TIMEOUT))[0]
    await _until(comm, "snapshot")
    await comm.send_json_to({"type": "send", "content": "over the socket"})
    assert (await _until(comm, "error"))["error"]["code"] == "model_not_allowed"
    await comm.disconnect()
    assert await Message.objects.filter(thread_id=tid).acount() == 2


async def test_the_same_words_to_another_model_are_a_new_call(api: AsyncClient, lab: Connection) -> None:
    """The coalesce key follows the model: resending a question at once after a switch is answered by the
    model switched to, not from the other model's finished result (COALESCE_RESULT_TTL_S)."""
    tid = (await api.post("/api/threads", {"model": "lab/open"}, content_type="application/json")).json()[
        "id"
    ]
    url = f"/api/threads/{tid}/messages"
    root = (await api.post(url, {"content": "hi"}, content_type="application/json")).json()
    body = {"content": "same words", "parent_id": root["assistant_message"]["id"]}
    first = (await api.post(url, body, content_type="application/json")).json()
    again = (await api.post(url, body, content_type="application/json")).json()
    assert again["assistant_message"]["id"] == first["assistant_message"]["id"]  # the result, reused
    await api.patch(f"/api/threads/{tid}", {"model": "demo/demo-1"}, content_type="application/json")
    switched = (await api.post(url, body, content_type="application/json")).json()
    assert switched["coalesced"] == "leader"
    assert switched["assistant_message"]["model_id"] == "demo/demo-1"
    assert switched["assistant_message"]["id"] != first["assistant_message"]["id"]


def test_the_thread_page_marks_a_withdrawn_model_and_offers_the_others(lab: Connection, user: Any) -> None:
    client = Client()
    client.force_login(user)
    client.post("/", {"model": "lab/open", "title": "t"})
    thread = Thread.objects.get()
    ModelOffer.objects.filter(model="open").update(offered=False)
    Connection.objects.get(name="lab").save()  # admin saves: caches drop
    page = client.get(f"/threads/{thread.pk}/").content.decode()
    picker = page[
        page.index('<select id="model-picker"') : page.index("</select>", page.index("model-picker"))
    ]
    assert '<option value="lab/open" selected disabled>lab/open (no longer offered)</option>' in picker
    assert '<option value="demo/demo-1">demo-1</option>' in picker and "lab/research" not in picker
    assert "This thread's model is no longer offered to you: choose another to go on." in page
    # Its "New thread" button starts a thread on the caller's default, not on the withdrawn model.
    assert 'name="model" value="lab/open"' not in page
    assert client.post("/", {}).status_code == 302


async def test_an_imported_thread_gets_the_callers_default_model(
    api: AsyncClient, lab: Connection, settings: Any
) -> None:
    """An import creates threads: on the model a creation naming none gets (the default staff ticked,
    one the caller may use), not the settings' DEFAULT_PROVIDER model, which may be offered to nobody."""
    await ModelOffer.objects.filter(model="open").aupdate(is_default=True)
    await sync_to_async(lambda: Connection.objects.get(name="lab").save())()  # admin saves: caches drop
    created = (await api.post("/api/threads", {}, content_type="application/json")).json()
    assert created["model_id"] == "lab/open"
    export = {
        "format": "chatapp.thread.v1",
        "thread": {"title": "Imported"},
        "messages": [{"id": 1, "parent_id": None, "role": "user", "content": "hi"}],
    }
    made = await api.post("/api/threads/import", export, content_type="application/json")
    assert made.status_code == 201, made.content
    assert made.json()["threads"][0]["model_id"] == "lab/open"
    settings.DEFAULT_PROVIDER = "openai"  # no key: not offered
    made = await api.post("/api/threads/import", export, content_type="application/json")
    assert made.json()["threads"][0]["model_id"] == "lab/open"
