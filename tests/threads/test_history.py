"""A thread is read a page at a time (#16 item 7): `GET /api/threads/{id}`, the WebSocket snapshot and
the thread page hold the newest HISTORY_PAGE_SIZE messages; older ones come on request
(`?before=<message id>&limit=`, the `history` frame), each page saying whether there is more."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient, Client

from chatapp.asgi import application
from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]

TIMEOUT = 10
PAGE = 3


@pytest.fixture(autouse=True)
def _small_pages(settings: Any) -> None:
    settings.HISTORY_PAGE_SIZE = PAGE


@pytest.fixture
def thread(user: Any) -> Thread:
    return Thread.objects.create(owner=user, provider="demo", model="demo-1")


@pytest.fixture
def ids(thread: Thread) -> list[int]:
    """Seven finished messages, oldest first."""
    out: list[int] = []
    for i in range(7):
        role = "user" if i % 2 == 0 else "assistant"
        m = Message.objects.create(
            thread=thread, role=role, content=f"m{i}", request_id=f"r{i // 2}", status="complete"
        )
        out.append(m.pk)
    return out


def _api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


async def test_the_thread_read_is_paged_newest_first_shown_oldest_first(
    thread: Thread, ids: list[int], token: str
) -> None:
    api = _api(token)
    first = (await api.get(f"/api/threads/{thread.pk}")).json()
    assert [m["id"] for m in first["messages"]] == ids[-3:] and first["has_more"] is True
    assert first["id"] == thread.pk and first["title"] == thread.title  # still the thread

    older = (await api.get(f"/api/threads/{thread.pk}?before={ids[-3]}")).json()
    assert [m["id"] for m in older["messages"]] == ids[1:4] and older["has_more"] is True

    rest = (await api.get(f"/api/threads/{thread.pk}?before={ids[1]}&limit=5")).json()
    assert [m["id"] for m in rest["messages"]] == ids[:1] and rest["has_more"] is False

    wide = (await api.get(f"/api/threads/{thread.pk}?limit=7")).json()
    assert [m["id"] for m in wide["messages"]] == ids and wide["has_more"] is False


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("before=abc", "invalid_cursor"),
        ("before=0", "invalid_cursor"),
        ("before=99999999999999999999999", "invalid_cursor"),
        ("limit=0", "invalid_limit"),
        ("limit=-1", "invalid_limit"),
        ("limit=201", "invalid_limit"),
        ("limit=two", "invalid_limit"),
    ],
)
async def test_bad_paging_is_a_400(thread: Thread, token: str, query: str, code: str) -> None:
    resp = await _api(token).get(f"/api/threads/{thread.pk}?{query}")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == code


async def _socket(thread: Thread, token: str) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    comm = WebsocketCommunicator(
        application, f"/ws/threads/{thread.pk}/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    assert (await comm.connect(timeout=TIMEOUT))[0]
    snap = await comm.receive_json_from(timeout=TIMEOUT)
    assert snap["type"] == "snapshot"
    return comm, snap


async def test_the_snapshot_is_the_newest_page_and_history_frames_page_back(
    thread: Thread, ids: list[int], token: str
) -> None:
    comm, snap = await _socket(thread, token)
    assert [m["id"] for m in snap["messages"]] == ids[-3:] and snap["has_more"] is True

    await comm.send_json_to({"type": "history", "before": ids[-3]})
    page = await comm.receive_json_from(timeout=TIMEOUT)
    assert page["type"] == "history" and page["before"] == ids[-3]
    assert [m["id"] for m in page["messages"]] == ids[1:4] and page["has_more"] is True

    await comm.send_json_to({"type": "history", "before": ids[1]})
    page = await comm.receive_json_from(timeout=TIMEOUT)
    assert [m["id"] for m in page["messages"]] == ids[:1] and page["has_more"] is False
    await comm.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "history"}, "invalid_cursor"),
        ({"type": "history", "before": "3"}, "invalid_cursor"),
        ({"type": "history", "before": 0}, "invalid_cursor"),
        ({"type": "history", "before": 5, "limit": 2}, "unknown_field"),
    ],
)
async def test_bad_history_frames_get_an_error_and_the_socket_stays_open(
    thread: Thread, token: str, frame: dict[str, Any], code: str
) -> None:
    comm, _ = await _socket(thread, token)
    await comm.send_to(text_data=json.dumps(frame))
    ev = await comm.receive_json_from(timeout=TIMEOUT)
    assert ev["type"] == "error" and ev["error"]["code"] == code
    await comm.send_json_to({"type": "history", "before": 10**6})
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "history"
    await comm.disconnect()


def test_the_page_shows_the_newest_messages_and_a_load_earlier_control(
    thread: Thread, ids: list[int], user: Any
) -> None:
    client = Client()
    client.force_login(user)
    html = client.get(f"/threads/{thread.pk}/").content.decode()
    assert [i for i in ids if f'data-id="{i}"' in html] == ids[-3:]
    assert 'id="earlier"' in html and "Load earlier messages" in html


def test_without_javascript_load_earlier_opens_the_page_before(
    thread: Thread, ids: list[int], user: Any
) -> None:
    """The control is a GET form: without JavaScript it did nothing (a bare button)."""
    client = Client()
    client.force_login(user)
    html = client.get(f"/threads/{thread.pk}/").content.decode()
    assert f'<input type="hidden" name="before" value="{ids[-3]}">' in html
    older = client.get(f"/threads/{thread.pk}/", {"before": ids[-3]}).content.decode()
    assert [i for i in ids if f'data-id="{i}"' in older] == ids[-6:-3]
    oldest = client.get(f"/threads/{thread.pk}/", {"before": ids[-6]}).content.decode()
    assert [i for i in ids if f'data-id="{i}"' in oldest] == ids[:1]
    assert 'id="earlier-form" class="earlier" method="get" hidden' in oldest  # nothing older
