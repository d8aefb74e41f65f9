"""The `usage` object of messages and threads (docs/api.md, v1.1): each reply's charge, each thread's
sum, in every answer that carries them (send, thread detail and list, search, PATCH, snapshot)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from billing.models import UsageRecord

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]

ZERO = {"input_tokens": 0, "output_tokens": 0, "cost_usd": "0"}


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


@pytest.fixture(autouse=True)
def _prices(settings: Any) -> None:
    settings.MODEL_PRICES = {"demo/demo-1": ["0.15", "0.60"]}


async def _send(api: AsyncClient, thread_id: int, content: str) -> dict[str, Any]:
    resp = await api.post(
        f"/api/threads/{thread_id}/messages", {"content": content}, content_type="application/json"
    )
    assert resp.status_code == 200, resp.content
    body: dict[str, Any] = resp.json()
    return body


def _charge_usage(message_id: int) -> dict[str, Any]:
    c = UsageRecord.objects.get(kind="charge", message_id=message_id)
    return {
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "cost_usd": f"{c.cost_usd.normalize():f}",
    }


charge_usage = sync_to_async(_charge_usage)


def _plus(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_tokens": a["input_tokens"] + b["input_tokens"],
        "output_tokens": a["output_tokens"] + b["output_tokens"],
        "cost_usd": f"{(Decimal(a['cost_usd']) + Decimal(b['cost_usd'])).normalize():f}",
    }


async def test_messages_and_threads_carry_their_usage(api: AsyncClient) -> None:
    created = (await api.post("/api/threads", {"title": "Tea"}, content_type="application/json")).json()
    assert created["usage"] == ZERO
    thread_id = created["id"]
    first = await _send(api, thread_id, "Tell me about tea")
    second = await _send(api, thread_id, "And coffee?")
    # The send's answer: the reply's charge; the question costs nothing of its own.
    one, two = first["assistant_message"], second["assistant_message"]
    assert one["usage"] == await charge_usage(one["id"]) and one["usage"]["output_tokens"] > 0
    assert Decimal(one["usage"]["cost_usd"]) > 0
    assert first["user_message"]["usage"] is None
    total = _plus(one["usage"], await charge_usage(two["id"]))

    detail = (await api.get(f"/api/threads/{thread_id}")).json()
    assert detail["usage"] == total
    by_id = {m["id"]: m for m in detail["messages"]}
    assert by_id[one["id"]]["usage"] == one["usage"] and by_id[two["id"]]["usage"] == two["usage"]
    assert by_id[first["user_message"]["id"]]["usage"] is None

    other = (await api.post("/api/threads", {}, content_type="application/json")).json()
    listing = {t["id"]: t for t in (await api.get("/api/threads")).json()["threads"]}
    assert listing[thread_id]["usage"] == total and listing[other["id"]]["usage"] == ZERO
    found = (await api.get("/api/threads?q=coffee")).json()["threads"]
    assert [t["usage"] for t in found] == [total]
    patched = await api.patch(
        f"/api/threads/{thread_id}", {"title": "Drinks"}, content_type="application/json"
    )
    assert patched.json()["usage"] == total
    archived = await api.patch(
        f"/api/threads/{thread_id}", {"archived": True}, content_type="application/json"
    )
    assert archived.json()["usage"] == total


async def test_the_snapshot_and_a_replay_carry_the_usage(api: AsyncClient, token: str) -> None:
    from chatapp.asgi import application

    thread_id = (await api.post("/api/threads", {}, content_type="application/json")).json()["id"]
    sent = await api.post(
        f"/api/threads/{thread_id}/messages",
        {"content": "Hello", "request_id": "r-usage"},
        content_type="application/json",
    )
    reply = sent.json()["assistant_message"]
    replayed = await api.post(
        f"/api/threads/{thread_id}/messages",
        {"content": "Hello", "request_id": "r-usage"},
        content_type="application/json",
    )
    assert replayed.json()["assistant_message"]["usage"] == reply["usage"] == await charge_usage(reply["id"])
    ws = WebsocketCommunicator(
        application,
        f"/ws/threads/{thread_id}/",
        headers=[(b"authorization", f"Bearer {token}".encode())],
    )
    connected, _ = await ws.connect()
    assert connected
    snapshot = await ws.receive_json_from(timeout=5)
    await ws.disconnect()
    by_id = {m["id"]: m for m in snapshot["messages"]}
    assert by_id[reply["id"]]["usage"] == reply["usage"]
