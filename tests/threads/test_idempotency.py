"""A request_id used twice at once with different bodies (#16, suspected): one send is answered, the
other is 422 idempotency_mismatch; neither gets the other's rows, whichever of them leads or follows."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, cast

import pytest
from django.test import AsyncClient

from providers.fake.server import FakeProviderServer
from tests.asgi_http import Response, asgi_request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


async def _thread(api: AsyncClient) -> int:
    resp = await api.post("/api/threads", {"provider": "openai"}, content_type="application/json")
    return int(resp.json()["id"])


async def _send(api: AsyncClient, thread_id: int, **body: Any) -> Response:
    """POST straight into the ASGI application: sends gathered together really run at once (the test
    client's requests take turns)."""
    auth = cast(dict[str, str], api.defaults)["AUTHORIZATION"]
    return await asgi_request(
        "POST",
        f"/api/threads/{thread_id}/messages",
        body=json.dumps(body).encode(),
        headers={"authorization": auth, "content-type": "application/json"},
    )


@pytest.fixture
def together(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next two sends look their thread up together, then go on at once: both reach their
    request_id lookups before either has recorded anything (a real race, made certain)."""
    from threads import chat

    found = chat.thread_for_send
    arrived: list[asyncio.Future[None]] = []

    async def gated(**kwargs: Any) -> Any:
        thread = await found(**kwargs)
        me = asyncio.get_running_loop().create_future()
        arrived.append(me)
        if len(arrived) == 2:
            for fut in arrived:
                fut.set_result(None)
        if len(arrived) <= 2:
            await asyncio.wait_for(me, 10)
        return thread

    monkeypatch.setattr(chat, "thread_for_send", gated)


def _verdict(answers: list[Any], contents: list[str]) -> None:
    """Exactly one 200 whose user message is its own content, and one 422 idempotency_mismatch."""
    statuses = sorted(a.status for a in answers)
    assert statuses == [200, 422], [(a.status, a.body[:200]) for a in answers]
    for answer, content in zip(answers, contents, strict=True):
        if answer.status == 200:
            assert answer.json()["user_message"]["content"] == content
        else:
            assert answer.json()["error"]["code"] == "idempotency_mismatch"


@pytest.mark.parametrize("idempotent", [True, False])
async def test_two_leaders_with_one_request_id(
    api: AsyncClient, fake: FakeProviderServer, idempotent: bool, together: None
) -> None:
    tid = await _thread(api)
    rid = uuid.uuid4().hex
    contents = ["first body", "second body"]
    answers = await asyncio.gather(
        *(_send(api, tid, content=c, request_id=rid, idempotent=idempotent) for c in contents)
    )
    _verdict(list(answers), contents)
    assert fake.stats.calls == 1


async def test_a_follower_and_a_leader_with_one_request_id(
    api: AsyncClient, fake: FakeProviderServer, request: pytest.FixtureRequest
) -> None:
    """The first send follows a generation in flight (its rows carry the leader's request_id), the
    second leads a burst of its own: the database alone could not tell they share a request_id."""
    fake.configure(tps=20, tokens=40)
    tid = await _thread(api)
    running = asyncio.create_task(_send(api, tid, content="asked already"))
    await fake.wait_until(lambda s: s.calls >= 1)
    rid = uuid.uuid4().hex
    contents = ["asked already", "something else"]
    request.getfixturevalue("together")
    answers = await asyncio.gather(*(_send(api, tid, content=c, request_id=rid) for c in contents))
    _verdict(list(answers), contents)
    assert (await running).status == 200
    # Afterwards the request_id answers its own body only.
    winner = contents[[a.status for a in answers].index(200)]
    loser = contents[1 - contents.index(winner)]
    assert (await _send(api, tid, content=winner, request_id=rid)).status == 200
    assert (await _send(api, tid, content=loser, request_id=rid)).status == 422


async def test_a_refused_send_leaves_its_request_id_free(
    api: AsyncClient, fake: FakeProviderServer, settings: Any
) -> None:
    """A send refused before it did anything (here: over the budget) reserved nothing: the same
    request_id with another body is a new send, not a mismatch."""
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = 6, 1
    tid = await _thread(api)
    assert (await _send(api, tid, content="one")).status == 200
    rid = uuid.uuid4().hex
    refused = await _send(api, tid, content="two", request_id=rid)
    assert refused.status == 429
    settings.SEND_RATE_PER_MIN = 0
    again = await _send(api, tid, content="three", request_id=rid)
    assert again.status == 200 and again.json()["user_message"]["content"] == "three"
