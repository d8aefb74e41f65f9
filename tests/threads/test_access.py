"""Access control on every route and on the WebSocket (docs/api.md: a user sees, streams, posts to and cancels
only their own threads; anything else is 404, so nobody learns that another user's thread exists), and
CSRF on session-authenticated writes (API routes and the pages' forms)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import AsyncClient, Client

from chatapp.asgi import application
from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]

TIMEOUT = 10
CSRF_TOKEN = "a" * 32  # any 32 or 64 alphanumerics: the test client sets the cookie and sends the header


@dataclass
class Ctx:
    bearer: AsyncClient  # alice, by API token
    session: AsyncClient  # alice, by session cookie (CSRF not enforced: that is tested below)
    token: str
    mine: Thread
    theirs: Thread
    their_message: Message  # bob's assistant message


async def _login(user: Any, **kwargs: Any) -> AsyncClient:
    client = AsyncClient(**kwargs)
    await sync_to_async(client.force_login)(user)
    return client


@pytest.fixture
async def ctx(user: Any, other_user: Any, token: str) -> Ctx:
    mine = await sync_to_async(Thread.objects.create)(owner=user, provider="demo", model="demo-1")
    theirs = await sync_to_async(Thread.objects.create)(owner=other_user, provider="demo", model="demo-1")
    await sync_to_async(Message.objects.create)(
        thread=theirs, role="user", content="bob asks", status="complete", request_id="theirs-1"
    )
    # Finished, so the generation service's orphan sweep leaves it alone; bob cancelling it would get
    # 409 (test_their_request_id_exists), so the 404s below are about ownership.
    their_message = await sync_to_async(Message.objects.create)(
        thread=theirs, role="assistant", content="bob's answer", status="complete", request_id="theirs-1"
    )
    return Ctx(
        bearer=AsyncClient(AUTHORIZATION=f"Bearer {token}"),
        session=await _login(user),
        token=token,
        mine=mine,
        theirs=theirs,
        their_message=their_message,
    )


def _json_error(resp: Any) -> tuple[int, str]:
    assert resp["Content-Type"].startswith("application/json"), resp["Content-Type"]
    return resp.status_code, resp.json()["error"]["code"]


def _ws(path: str, token: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[(b"authorization", f"Bearer {token}".encode())])


async def _ws_connect(c: Ctx) -> tuple[int, str]:
    comm = _ws(f"/ws/threads/{c.theirs.pk}/", c.token)
    ok, code = await comm.connect(timeout=TIMEOUT)
    assert not ok
    return code, "closed"


async def _ws_cancel(c: Ctx) -> tuple[int, str]:
    comm = _ws(f"/ws/threads/{c.mine.pk}/", c.token)  # her own thread: the request_id is bob's
    assert (await comm.connect(timeout=TIMEOUT))[0]
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
    await comm.send_to(text_data=json.dumps({"type": "cancel", "request_id": c.their_message.request_id}))
    ev = await comm.receive_json_from(timeout=TIMEOUT)
    await comm.disconnect()
    return ev["type"], ev["error"]["code"]


async def _api_list(c: Ctx) -> tuple[int, str]:
    resp = await c.bearer.get("/api/threads")
    ids = [t["id"] for t in resp.json()["threads"]]
    assert c.mine.pk in ids
    return resp.status_code, "listed" if c.theirs.pk in ids else "not listed"


async def _page(c: Ctx, method: str, path: str) -> tuple[int, str]:
    resp = await getattr(c.session, method)(path.format(theirs=c.theirs.pk, msg=c.their_message.pk))
    return resp.status_code, resp["Content-Type"].split(";")[0]


def _api(method: str, path: str, body: dict[str, Any] | None = None) -> Callable[[Ctx], Awaitable[Any]]:
    async def act(c: Ctx) -> tuple[int, str]:
        url = path.format(theirs=c.theirs.pk, rid=c.their_message.request_id)
        return _json_error(await _call(c.bearer, method, url, body))

    return act


ACCESS_TABLE: list[tuple[str, Callable[[Ctx], Awaitable[Any]], tuple[Any, str]]] = [
    ("api read", _api("get", "/api/threads/{theirs}"), (404, "not_found")),
    ("api delete", _api("delete", "/api/threads/{theirs}"), (404, "not_found")),
    ("api send", _api("post", "/api/threads/{theirs}/messages", {"content": "hi"}), (404, "not_found")),
    (
        "api send stream:true (SSE)",
        _api("post", "/api/threads/{theirs}/messages", {"content": "hi", "stream": True}),
        (404, "not_found"),
    ),
    ("api cancel their request_id", _api("post", "/api/threads/cancel/{rid}"), (404, "not_found")),
    ("api list", _api_list, (200, "not listed")),
    ("ws connect", _ws_connect, (4404, "closed")),
    ("ws cancel frame with their request_id", _ws_cancel, ("error", "not_found")),
    ("page read", lambda c: _page(c, "get", "/threads/{theirs}/"), (404, "text/html")),
    ("page message html", lambda c: _page(c, "get", "/threads/{theirs}/?html={msg}"), (404, "text/html")),
    ("page delete form", lambda c: _page(c, "post", "/threads/{theirs}/delete"), (404, "text/html")),
]


async def _their_state(c: Ctx) -> list[tuple[str, str, str]]:
    rows = (
        Message.objects.filter(thread_id=c.theirs.pk).order_by("id").values_list("role", "status", "content")
    )
    return await sync_to_async(lambda: list(rows))()


@pytest.mark.parametrize(("what", "act", "expected"), ACCESS_TABLE, ids=[row[0] for row in ACCESS_TABLE])
async def test_another_users_thread_is_not_found_everywhere(
    ctx: Ctx, what: str, act: Callable[[Ctx], Awaitable[Any]], expected: tuple[Any, str]
) -> None:
    before = await _their_state(ctx)
    assert await act(ctx) == expected
    # Nothing happened to bob's thread, and alice wrote nothing anywhere.
    assert await sync_to_async(Thread.objects.filter(pk=ctx.theirs.pk).exists)()
    assert await _their_state(ctx) == before
    assert await sync_to_async(Message.objects.filter(thread_id=ctx.mine.pk).count)() == 0


async def test_their_request_id_exists(ctx: Ctx, other_user: Any) -> None:
    """The control for the cancel rows: for its owner the same request_id is found (and has finished)."""
    bob = await _login(other_user)
    resp = await bob.post(f"/api/threads/cancel/{ctx.their_message.request_id}")
    assert _json_error(resp) == (409, "conflict")


async def test_staff_see_every_thread(ctx: Ctx, django_user_model: Any) -> None:
    staff = await sync_to_async(django_user_model.objects.create_user)(
        username="sam", password="pw-sam-123!", is_staff=True
    )
    client = await _login(staff)
    resp = await client.get(f"/api/threads/{ctx.theirs.pk}")
    assert resp.status_code == 200 and resp.json()["id"] == ctx.theirs.pk


# --- CSRF ------------------------------------------------------------------------------------------------


async def _write_rows(user: Any) -> list[tuple[str, str, dict[str, Any] | None, int]]:
    """(method, path, JSON body, success status) of each session-authenticated API write."""
    thread = await sync_to_async(Thread.objects.create)(owner=user, provider="demo", model="demo-1")
    await sync_to_async(Message.objects.create)(
        thread=thread, role="assistant", status="streaming", request_id="mine-1"
    )
    # Cancel first: the row has no generation, and once a send starts the generation service its
    # orphan sweep would mark it interrupted (threads/generation.py).
    return [
        ("post", "/api/threads/cancel/mine-1", None, 200),
        ("post", "/api/threads", {}, 201),
        ("post", f"/api/threads/{thread.pk}/messages", {"content": "hi"}, 200),
        ("delete", f"/api/threads/{thread.pk}", None, 204),
    ]


async def _call(client: AsyncClient, method: str, path: str, body: Any, **extra: Any) -> Any:
    if body is None:
        return await getattr(client, method)(path, **extra)
    return await getattr(client, method)(path, body, content_type="application/json", **extra)


@pytest.mark.parametrize("auth", ["session without token", "session with token", "bearer"])
async def test_csrf_on_api_writes(user: Any, token: str, auth: str) -> None:
    rows = await _write_rows(user)
    if auth == "bearer":
        client = AsyncClient(enforce_csrf_checks=True, AUTHORIZATION=f"Bearer {token}")
    else:
        client = await _login(user, enforce_csrf_checks=True)
    extra: dict[str, Any] = {}
    if auth == "session with token":
        client.cookies[settings.CSRF_COOKIE_NAME] = CSRF_TOKEN
        extra = {"x-csrftoken": CSRF_TOKEN}  # AsyncClient: extra keys become ASGI headers as they are
    for method, path, body, ok_status in rows:
        resp = await _call(client, method, path, body, **extra)
        if auth == "session without token":
            assert _json_error(resp) == (403, "csrf_failed"), path
        else:
            assert resp.status_code == ok_status, (path, resp.content)
    # Refused: nothing changed. Accepted: one thread created, the first one deleted (with its messages).
    refused = auth == "session without token"
    first = rows[2][1].split("/")[3]
    assert await sync_to_async(Thread.objects.count)() == 1
    assert await sync_to_async(Thread.objects.filter(pk=int(first)).exists)() is refused
    if refused:
        message = await sync_to_async(Message.objects.get)(request_id="mine-1")
        assert message.status == "streaming"


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/", {"provider": "demo"}),
        ("/threads/{mine}/delete", {}),
        ("/accounts/logout/", {}),
        ("/accounts/login/", {"login": "alice", "password": "pw-alice-123!"}),
        ("/accounts/signup/", {}),
    ],
)
def test_csrf_on_page_forms(user: Any, path: str, data: dict[str, str]) -> None:
    mine = Thread.objects.create(owner=user, provider="demo", model="demo-1")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    url = path.format(mine=mine.pk)
    assert client.post(url, data).status_code == 403
    assert Thread.objects.filter(owner=user).count() == 1
    assert client.get("/").status_code == 200  # still logged in; the page sets the csrftoken cookie
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    assert client.post(url, {**data, "csrfmiddlewaretoken": token}).status_code == 302


def test_csrf_failure_under_api_is_json(user: Any) -> None:
    """A write that Django's CsrfViewMiddleware refuses (the full stack, e.g. /api/metrics) is JSON too."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert _json_error(client.post("/api/metrics")) == (403, "csrf_failed")
    page = client.post("/")
    assert page.status_code == 403 and page["Content-Type"].startswith("text/html")
