"""Per-thread system prompts (#17): sent the way each provider expects, part of the coalesce key, and
new threads start with the user's default from the chat settings page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.test import AsyncClient, Client

from providers.fake.server import FakeProviderServer
from threads.coalesce_math import burst_prekey, coalesce_key
from threads.models import Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture
async def fake(settings: Any) -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(ttft_ms=0, tps=0, tokens=4) as server:
        settings.PROVIDERS = {
            **settings.PROVIDERS,
            "openai": {"base_url": server.openai_base_url, "api_key": "sk-test", "model": "fake-model"},
            "anthropic": {"base_url": server.base_url, "api_key": "sk-ant", "model": "claude-fake"},
            "gemini": {"base_url": server.base_url, "api_key": "g-key", "model": "gemini-fake"},
        }
        yield server


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


@pytest.mark.parametrize(
    ("model", "where"),
    [
        ("openai/fake-model", lambda b: b["messages"][0]),
        ("anthropic/claude-fake", lambda b: b["system"]),
        ("gemini/gemini-fake", lambda b: b["systemInstruction"]),
    ],
)
async def test_each_provider_gets_the_prompt_its_own_way(
    api: AsyncClient, fake: FakeProviderServer, model: str, where: Any
) -> None:
    created = await api.post(
        "/api/threads",
        {"model": model, "system_prompt": "Answer in French."},
        content_type="application/json",
    )
    assert created.status_code == 201 and created.json()["system_prompt"] == "Answer in French."
    sent = await api.post(
        f"/api/threads/{created.json()['id']}/messages", {"content": "hi"}, content_type="application/json"
    )
    assert sent.status_code == 200, sent.json()
    body = fake.stats.requests[-1]["body"]
    expected = {
        "openai/fake-model": {"role": "system", "content": "Answer in French."},
        "anthropic/claude-fake": "Answer in French.",
        "gemini/gemini-fake": {"parts": [{"text": "Answer in French."}]},
    }[model]
    assert where(body) == expected


def test_the_prompt_and_the_model_are_part_of_the_coalesce_key() -> None:
    def key(provider: str = "demo", model: str = "demo-1", params: str = "") -> str:
        return coalesce_key(
            thread_id=1, anchor_id=5, content="hi", provider=provider, model=model, params=params
        )

    assert len({key(), key(model="other"), key(provider="lab"), key(params="sys:abc")}) == 4

    def pre(params: str = "") -> str:
        return burst_prekey(
            thread_id=1, parent_id=None, content="hi", provider="demo", model="demo-1", params=params
        )

    assert pre() != pre(params="sys:abc")


def test_the_users_default_prompt_applies_to_new_threads(user: Any) -> None:
    client = Client()
    client.force_login(user)
    page = client.get("/settings/chat/")
    assert page.status_code == 200 and b'<label for="default-system-prompt">' in page.content
    saved = client.post("/settings/chat/", {"system_prompt": "Be kind."})
    assert saved.status_code == 200 and b"Saved" in saved.content
    client.post("/", {"model": "demo/demo-1"})
    client.post("/", {"model": "demo/demo-1", "system_prompt": "Own prompt."})
    assert list(Thread.objects.order_by("id").values_list("system_prompt", flat=True)) == [
        "Be kind.",
        "Own prompt.",
    ]
    refused = client.post("/settings/chat/", {"system_prompt": "x" * 9000})
    assert refused.status_code == 400


async def test_patch_changes_title_and_prompt(api: AsyncClient) -> None:
    tid = (await api.post("/api/threads", {}, content_type="application/json")).json()["id"]
    resp = await api.patch(
        f"/api/threads/{tid}",
        {"title": "Renamed", "system_prompt": "Short."},
        content_type="application/json",
    )
    assert resp.status_code == 200
    assert (resp.json()["title"], resp.json()["system_prompt"]) == ("Renamed", "Short.")
    bad = await api.patch(f"/api/threads/{tid}", {"archivd": True}, content_type="application/json")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "unknown_field")
