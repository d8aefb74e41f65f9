"""Coalescing across two daphne processes sharing Redis and PostgreSQL, against the fake provider."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync

from providers.fake.server import ThreadedFakeServer
from tests.servers import daphne_servers, wait_until
from threads.models import Message

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _env(fake: ThreadedFakeServer) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "fake-model",
    }


def _new_thread(server: Any, auth: dict[str, str]) -> int:
    return int(httpx.post(server.url("/api/threads"), json={"provider": "openai"}, headers=auth).json()["id"])


async def _burst(urls: list[str], auth: dict[str, str], body: dict[str, Any]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=400)
    async with httpx.AsyncClient(headers=auth, timeout=60, limits=limits) as client:
        return await asyncio.gather(*[client.post(u, json=body) for u in urls])


def test_burst_split_across_two_processes_is_one_call(token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with (
        ThreadedFakeServer(ttft_ms=300, tps=100, tokens=20) as fake,
        daphne_servers(2, env=_env(fake)) as (a, b),
    ):
        tid = _new_thread(a, auth)
        urls = [s.url(f"/api/threads/{tid}/messages") for s in (a, b) for _ in range(100)]
        resps = async_to_sync(_burst)(urls, auth, {"content": "one call please"})
        errors = [s.log_path.read_text(errors="replace") for s in (a, b)]
        assert [r.status_code for r in resps] == [200] * 200, "\n".join(
            e[e.find("Traceback") :][:4000] for e in errors
        )
        bodies = [r.json() for r in resps]
        assert fake.stats()["calls"] == 1
        assert Message.objects.filter(thread_id=tid).count() == 2
        assert len({(x["user_message"]["id"], x["assistant_message"]["id"]) for x in bodies}) == 1
        assert {x["assistant_message"]["status"] for x in bodies} == {"complete"}
        assert sorted(x["coalesced"] for x in bodies).count("leader") == 1


def test_killed_leader_process_answers_waiters_with_an_error(token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with (
        ThreadedFakeServer(ttft_ms=100, tps=5, tokens=200) as fake,
        daphne_servers(2, env=_env(fake)) as (a, b),
    ):
        tid = _new_thread(a, auth)
        results: dict[str, httpx.Response | Exception] = {}

        def send(name: str, server: Any) -> None:
            url = server.url(f"/api/threads/{tid}/messages")
            try:
                results[name] = httpx.post(url, json={"content": "slow one"}, headers=auth, timeout=60)
            except httpx.HTTPError as exc:  # the leader's own client loses its server: expected
                results[name] = exc

        leader = threading.Thread(target=send, args=("a", a), daemon=True)
        leader.start()
        wait_until(lambda: fake.stats()["concurrent"] == 1, timeout=10)  # A is generating
        follower = threading.Thread(target=send, args=("b", b))
        follower.start()
        wait_until(lambda: Message.objects.filter(thread_id=tid).count() == 2, timeout=5)
        os.kill(a.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        follower.join(30)
        waited = time.monotonic() - killed_at
        resp = results["b"]
        assert isinstance(resp, httpx.Response), resp
        assert resp.status_code == 502 and resp.json()["coalesced"] == "follower"
        assert resp.json()["assistant_message"]["status"] == "error"
        assert resp.json()["error"]["code"] == "generation_lost"
        assert waited < 10, f"the follower learnt of the dead leader after {waited:.1f} s"
        statuses = set(
            Message.objects.filter(thread_id=tid, role="assistant").values_list("status", flat=True)
        )
        assert statuses == {"error"}


def test_leader_whose_client_disconnects_still_completes_for_followers(token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with (
        ThreadedFakeServer(ttft_ms=200, tps=50, tokens=40) as fake,
        daphne_servers(2, env=_env(fake)) as (a, b),
    ):
        tid = _new_thread(a, auth)
        body = {"content": "finish without me"}
        with pytest.raises(httpx.ReadTimeout):  # the leader's client gives up and closes its connection
            httpx.post(a.url(f"/api/threads/{tid}/messages"), json=body, headers=auth, timeout=0.5)
        follower = httpx.post(
            b.url(f"/api/threads/{tid}/messages"), json=body, headers=auth, timeout=30
        ).json()
        assert follower["coalesced"] == "follower", follower
        assert follower["assistant_message"]["status"] == "complete", (
            follower.get("error"),
            follower["assistant_message"],
        )
        assert fake.stats()["calls"] == 1 and fake.stats()["completed"] == 1
        saved = Message.objects.get(pk=follower["assistant_message"]["id"])
        assert saved.status == "complete" and saved.content == follower["assistant_message"]["content"]
