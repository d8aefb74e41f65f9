"""The intake hold (core/intake.py) through the deployed ASGI application: a crowd of sends to one
thread holds it only behind a signed-in user's send to a thread they may send to (threads/sendgate.py
`vouch`), so anonymous or refused requests can never stop the process's reading."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from providers.fake.server import FakeProviderServer
from tests.asgi_http import Response, asgi_request
from tests.conftest import RecordingIntake
from threads.models import Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


async def _sends(thread_id: int, count: int, token: str | None) -> list[Response]:
    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})
    body = json.dumps({"content": "the same question"}).encode()
    return list(
        await asyncio.gather(
            *(
                asgi_request("POST", f"/api/threads/{thread_id}/messages", body=body, headers=headers)
                for _ in range(count)
            )
        )
    )


async def test_anonymous_sends_to_one_thread_never_hold_the_intake(
    intake_server: RecordingIntake, other_user: Any
) -> None:
    """Before, two anonymous POSTs to any thread's send route stopped the process's reading."""
    theirs = await sync_to_async(Thread.objects.create)(owner=other_user, provider="openai")
    replies = await _sends(theirs.pk, 3, token=None)
    assert [reply.status for reply in replies] == [401] * 3
    assert intake_server.calls == []


async def test_sends_to_a_thread_the_user_may_not_send_to_never_hold_the_intake(
    intake_server: RecordingIntake, token: str, other_user: Any
) -> None:
    theirs = await sync_to_async(Thread.objects.create)(owner=other_user, provider="openai")
    replies = await _sends(theirs.pk, 3, token)
    assert [reply.status for reply in replies] == [404] * 3
    assert intake_server.calls == []


async def test_a_burst_of_a_signed_in_users_sends_holds_the_intake_until_its_leader_lets_go(
    intake_server: RecordingIntake, token: str, fake: FakeProviderServer
) -> None:
    made = await asgi_request(
        "POST",
        "/api/threads",
        body=b'{"provider": "openai"}',
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    replies = await _sends(made.json()["id"], 3, token)
    assert [reply.status for reply in replies] == [200] * 3, [reply.body[:300] for reply in replies]
    assert sorted(reply.json()["coalesced"] for reply in replies) == ["follower", "follower", "leader"]
    assert intake_server.calls == ["pause", "resume"]
