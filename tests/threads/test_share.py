"""Share links (#18): POST/DELETE /api/threads/{id}/share, and /s/<token> for anyone: no log-in, noindex,
the branch that was current when shared, Markdown sanitised, paged; revoked: 404. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


def _thread(owner: Any, n: int = 2) -> Thread:
    thread = Thread.objects.create(owner=owner, title="Shared talk", provider="demo", model="demo-1")
    parent = None
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        text = f"question {i}" if role == "user" else f"**bold {i}** <script>alert(1)</script>"
        parent = Message.objects.create(
            thread=thread, role=role, content=text, request_id=f"r{i // 2}", parent=parent
        )
    thread.current_leaf_id = parent.pk if parent else None
    thread.save()
    return thread


async def test_share_open_logged_out_then_revoke(api: AsyncClient, user: Any, other_user: Any) -> None:
    thread = await sync_to_async(_thread)(user)
    resp = await api.post(f"/api/threads/{thread.pk}/share")
    assert resp.status_code == 201
    body = resp.json()
    assert body["url"] == f"/s/{body['token']}" and len(body["token"]) >= 32
    page = await AsyncClient().get(body["url"])  # nobody logged in
    html = page.content.decode()
    assert page.status_code == 200 and page["X-Robots-Tag"].startswith("noindex")
    assert '<meta name="robots" content="noindex, nofollow">' in html
    assert "<strong>bold 1</strong>" in html and "<script>alert" not in html and "question 0" in html
    # Once, in the conversation: the page's messages were also dumped as Python dicts into base.html's
    # flash messages (the context's "messages").
    assert html.count("question 0") == 1 and '<ul class="messages">' not in html, html
    # Later messages are not in the snapshot.
    await sync_to_async(Message.objects.create)(
        thread=thread,
        role="user",
        content="written after sharing",
        request_id="late",
        parent_id=thread.current_leaf_id,
    )
    assert "written after sharing" not in (await AsyncClient().get(body["url"])).content.decode()
    # Someone else cannot share or revoke it.
    from accounts.tokens import api_token_create

    _, raw = await sync_to_async(api_token_create)(user=other_user)
    assert (
        await AsyncClient(AUTHORIZATION=f"Bearer {raw}").delete(f"/api/threads/{thread.pk}/share")
    ).status_code == 404
    assert (await api.delete(f"/api/threads/{thread.pk}/share")).status_code == 204
    assert (await AsyncClient().get(body["url"])).status_code == 404
    assert (await AsyncClient().get("/s/not-a-token")).status_code == 404


def test_the_snapshot_pages_like_the_thread(user: Any, settings: Any) -> None:
    settings.HISTORY_PAGE_SIZE = 4
    thread = _thread(user, n=10)
    client = Client()
    from threads import share

    link = share.share_create(thread=thread)
    first = client.get(f"/s/{link.token}").content.decode()
    assert "question 8" in first and "question 4" not in first and "Earlier messages" in first
    oldest_shown = Message.objects.filter(thread=thread).order_by("id")[6].pk
    older = client.get(f"/s/{link.token}", {"before": oldest_shown}).content.decode()
    assert "question 4" in older and "question 2" in older and "question 8" not in older
    # `before` cannot reach outside the shared branch.
    other = _thread(user, n=2)
    outside = Message.objects.filter(thread=other).last()
    assert (
        "question"
        not in client.get(f"/s/{link.token}", {"before": outside.pk if outside else 0})
        .content.decode()
        .split("<ol")[1]
        .split("</ol>")[0]
    )
