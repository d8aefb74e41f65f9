"""A thread may name only the model its provider is configured with (#16 item 3, until models are data)."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

from threads.models import Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


@pytest.mark.parametrize("model", ["gpt-4o", "demo-1 ", "../../etc/passwd", ""])
async def test_another_model_is_refused(api: AsyncClient, model: str) -> None:
    resp = await api.post("/api/threads", {"model": model}, content_type="application/json")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "model_not_allowed"
    assert not await Thread.objects.aexists()


async def test_the_configured_model_or_none_is_accepted(api: AsyncClient) -> None:
    named = await api.post("/api/threads", {"model": "demo-1"}, content_type="application/json")
    unnamed = await api.post("/api/threads", {}, content_type="application/json")
    assert (named.status_code, unnamed.status_code) == (201, 201)
    assert named.json()["model"] == unnamed.json()["model"] == "demo-1"
