"""Search (#18): GET /api/threads?q= over titles and message text, PostgreSQL full-text search and SQLite
FTS5, ranked, with highlighted snippets that are safe HTML; archived threads stay searchable; another
user's threads never come back."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from threads import search
from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


def _thread(owner: Any, title: str, *texts: str, archived: bool = False) -> int:
    thread = Thread.objects.create(
        owner=owner, title=title, provider="demo", model="demo-1", archived=archived
    )
    parent = None
    for i, text in enumerate(texts):
        role = "user" if i % 2 == 0 else "assistant"
        parent = Message.objects.create(
            thread=thread, role=role, content=text, request_id=f"r{i // 2}", parent=parent
        )
    return thread.pk


async def _search(api: AsyncClient, q: str) -> list[dict[str, Any]]:
    resp = await api.get("/api/threads", {"q": q})
    assert resp.status_code == 200, resp.content
    return list(resp.json()["threads"])


async def test_words_in_any_order_titles_and_text_ranked_with_snippets(
    api: AsyncClient, user: Any, other_user: Any
) -> None:
    make = sync_to_async(_thread)
    pasta = await make(user, "Dinner", "How long do I boil fresh pasta?", "Fresh pasta needs two minutes.")
    garden = await make(user, "Garden", "When to plant tomatoes", "In spring, after the frost.")
    titled = await make(user, "Pasta recipes", "what can I cook tonight")
    archived = await make(user, "Old", "pasta carbonara <script>alert(1)</script>", archived=True)
    await make(other_user, "Pasta too", "fresh pasta, boil it")

    found = await _search(api, "PASTA fresh")
    ids = [t["id"] for t in found]
    assert ids[0] == pasta and garden not in ids and titled not in ids  # every word must match
    assert "<mark>" in found[0]["snippet"] and "fresh" in found[0]["snippet"].lower()
    everything = [t["id"] for t in await _search(api, "pasta")]
    assert set(everything) == {pasta, titled, archived}  # the title match and the archived thread, not bob's
    snippet = next(t["snippet"] for t in await _search(api, "carbonara") if t["id"] == archived)
    assert "<script" not in snippet and "<mark>carbonara</mark>" in snippet  # escaped, or left out
    assert [t["id"] for t in await _search(api, "TOMATOES")] == [garden]
    assert await _search(api, "   ") == [] and await _search(api, '"); DROP TABLE --') == []


async def test_a_too_long_query_is_400(api: AsyncClient) -> None:
    resp = await api.get("/api/threads", {"q": "x" * 201})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_query"


def test_query_builders_quote_every_word() -> None:
    assert search.words('a "b" C-d') == ["a", "b", "c", "d"]
    assert search.fts5_query(["abc", "de"]) == '"abc"* "de"'  # short words whole (PREFIX_MIN_CHARS)
    assert search.pg_query(["abc", "de"]) == "'abc':* & 'de'"
    assert search.fts5_query(['x"y']) == '"x""y"*'
    assert search.pg_query(["it's", "a\\b"]) == "'it''s':* & 'a\\\\b':*"


async def test_words_match_as_prefixes(api: AsyncClient, user: Any) -> None:
    make = sync_to_async(_thread)
    pasta = await make(user, "Dinner", "How long do I boil fresh pasta?", "Two minutes.")
    titled = await make(user, "Pasta recipes", "what can I cook tonight")
    await make(user, "Garden", "When to plant tomatoes", "In spring, after the frost.")
    assert {t["id"] for t in await _search(api, "past")} == {pasta, titled}
    found = await _search(api, "PAS fre")
    assert [t["id"] for t in found] == [pasta] and "<mark>" in found[0]["snippet"]
    assert [t["id"] for t in await _search(api, "recip")] == [titled]  # a title's prefix
    assert await _search(api, "pastas") == [] and await _search(api, "asta") == []  # starts of words only
    assert await _search(api, "pa") == []  # a short word is a whole word
    assert [t["id"] for t in await _search(api, "do boil")] == [pasta]


@pytest.mark.parametrize(
    ("hostile", "finds"),
    [
        (["x') | ('pasta"], False),  # an OR would find it
        (["zzz' | 'pasta"], False),
        (['zzz" OR "pasta'], False),  # FTS5's OR
        (["NEAR(zzz", "pasta)"], False),
        (["zzz", "|", "pasta"], False),
        (["!pasta"], True),  # not a NOT: the word
        (["-pasta"], True),
        (["pasta'"], True),
        (['"pasta'], True),
        (["pasta:*", "fre"], True),
        (["a\\"], False),
    ],
)
async def test_operators_in_words_are_text_to_the_database(
    user: Any, hostile: list[str], finds: bool
) -> None:
    """The builders are safe on their own, whatever words() lets through: punctuation is text, never an
    operator (no syntax error, no OR or NOT)."""
    tid = await sync_to_async(_thread)(user, "Dinner", "fresh pasta")
    run = search._pg if search.connection.vendor == "postgresql" else search._sqlite
    found = await sync_to_async(run)(user.pk, hostile, 50)
    assert [t for t, _ in found] == ([tid] if finds else [])
    assert search.snippet_html("<b>\x01x\x02") == "&lt;b&gt;<mark>x</mark>"


def test_the_list_page_pages_shows_model_and_last_activity_and_searches(client: Any, user: Any) -> None:
    for i in range(51):
        _thread(user, f"Thread {i}", f"note number {i}")
    client.force_login(user)
    first = client.get("/")
    body = first.content.decode()
    assert body.count('class="t-title"') == 50 and "demo/demo-1 · <time" in body
    assert "Older threads" in body and "Thread 0<" not in body
    older = client.get(first.context["next_before"] and f"/?before={first.context['next_before']}")
    assert "Thread 0<" in older.content.decode() and "Older threads" not in older.content.decode()
    found = client.get("/", {"q": "number 7"}).content.decode()
    assert "Thread 7<" in found and "<mark>" in found and "Thread 8<" not in found
