"""Deleting a thread stops its running generations (#16, suspected finding, confirmed): the provider
streamed (and billed) every reply of a deleted thread to its end. The fake provider's counters say
whether a stream was cut off (`client_disconnects`) or ran out (`completed`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from providers.fake.server import FakeProviderServer, ThreadedFakeServer
from tests.servers import daphne_servers, wait_until
from threads import chat, outcomes
from threads.models import Message, Thread
from threads.validation import parse_send

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10.0


@pytest.fixture
async def fake(settings: Any) -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(ttft_ms=0, tps=20, tokens=400) as server:  # a 20 s reply
        settings.PROVIDERS = {
            **settings.PROVIDERS,
            "openai": {"base_url": server.openai_base_url, "api_key": "sk-test", "model": "fake-model"},
        }
        yield server


@pytest.fixture
async def thread(user: Any) -> Thread:
    found: Thread = await sync_to_async(Thread.objects.create)(
        owner=user, provider="openai", model="fake-model"
    )
    return found


async def _streaming(user: Any, thread: Thread, fake: FakeProviderServer) -> outcomes.SendOutcome:
    req = parse_send({"content": "A long one, please"}, max_chars=100)
    outcome = await chat.send(user=user, thread=thread, req=req)
    await fake.wait_until(lambda s: s.concurrent == 1, within=TIMEOUT)
    return outcome


async def _stopped(outcome: outcomes.SendOutcome, fake: FakeProviderServer) -> None:
    assert outcome.generation is not None
    final = await asyncio.wait_for(asyncio.shield(outcome.generation.done), TIMEOUT)
    assert final["type"] in ("message.cancelled", "message.error"), final
    await fake.wait_until(lambda s: s.client_disconnects == 1, within=TIMEOUT)
    assert fake.stats.completed == 0
    assert not await sync_to_async(Message.objects.filter(pk=outcome.assistant_message["id"]).exists)()


@pytest.mark.both
async def test_deleting_a_thread_through_the_api_stops_its_running_reply(
    user: Any, token: str, thread: Thread, fake: FakeProviderServer
) -> None:
    outcome = await _streaming(user, thread, fake)
    resp = await AsyncClient(AUTHORIZATION=f"Bearer {token}").delete(f"/api/threads/{thread.pk}")
    assert resp.status_code == 204
    await _stopped(outcome, fake)


@pytest.mark.both
async def test_deleting_a_thread_from_its_page_stops_its_running_reply(
    user: Any, thread: Thread, fake: FakeProviderServer
) -> None:
    outcome = await _streaming(user, thread, fake)
    page = AsyncClient()
    await page.aforce_login(user)
    resp = await page.post(f"/threads/{thread.pk}/delete")
    assert resp.status_code == 302
    await _stopped(outcome, fake)


@pytest.mark.services
def test_deleting_a_thread_in_one_process_stops_its_reply_in_another(token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with ThreadedFakeServer(ttft_ms=0, tps=20, tokens=400) as fake:  # a 20 s reply
        env = {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "fake-model",
        }
        with daphne_servers(2, env=env) as (a, b):
            tid = httpx.post(a.url("/api/threads"), json={"provider": "openai"}, headers=auth).json()["id"]
            answered: dict[str, httpx.Response | Exception] = {}

            def send() -> None:
                try:
                    answered["resp"] = httpx.post(
                        a.url(f"/api/threads/{tid}/messages"),
                        json={"content": "long"},
                        headers=auth,
                        timeout=60,
                    )
                except httpx.HTTPError as exc:  # its server stopped at the end of a failed test
                    answered["resp"] = exc

            sender = threading.Thread(target=send)
            sender.start()
            wait_until(lambda: fake.stats()["concurrent"] == 1, timeout=TIMEOUT)
            assert httpx.delete(b.url(f"/api/threads/{tid}"), headers=auth).status_code == 204
            wait_until(lambda: fake.stats()["client_disconnects"] == 1, timeout=TIMEOUT)
            sender.join(TIMEOUT)
            assert not sender.is_alive()
            assert fake.stats()["completed"] == 0
            resp = answered["resp"]
            assert isinstance(resp, httpx.Response) and resp.status_code != 500, resp
