"""Two daphne processes sharing PostgreSQL and Redis behave as one deployment."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.servers import daphne_servers, wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _ws_url(server: Any, thread_id: int) -> str:
    return server.base_url.replace("http://", "ws://") + f"/ws/threads/{thread_id}/"


def _events_until(ws: Any, kind: str, *, timeout: float = 15) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        ev = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        seen.append(ev)
        if ev["type"] == kind:
            return seen


def test_stream_sent_through_b_reaches_a_websocket(token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with daphne_servers(2, env={"DEMO_TTFT_MS": "20", "DEMO_TOKENS_PER_S": "300"}) as (a, b):
        thread = httpx.post(b.url("/api/threads"), json={"title": "x"}, headers=auth).json()
        with connect(_ws_url(a, thread["id"]), additional_headers=auth) as ws_a:
            assert json.loads(ws_a.recv(timeout=10))["type"] == "snapshot"
            resp = httpx.post(
                b.url(f"/api/threads/{thread['id']}/messages"),
                json={"content": "hello from b", "request_id": "mp-1"},
                headers=auth,
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
            evs = _events_until(ws_a, "message.done")
        deltas = [e for e in evs if e["type"] == "message.delta"]
        assert evs[0]["type"] == "message.start" and evs[0]["request_id"] == "mp-1"
        assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
        assert "".join(d["text"] for d in deltas) == evs[-1]["message"]["content"]
        assert evs[-1]["message"] == resp.json()["assistant_message"]


def test_idle_websocket_stays_open_past_redis_timeouts(token: str) -> None:
    """redis-py 8's default 5 s socket_timeout would close an idle layer (and every socket, 1011)."""
    auth = {"Authorization": f"Bearer {token}"}
    with daphne_servers(1) as (a,):
        thread = httpx.post(a.url("/api/threads"), json={}, headers=auth).json()
        with connect(_ws_url(a, thread["id"]), additional_headers=auth) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
            with pytest.raises(TimeoutError):
                ws.recv(timeout=11)  # idle: nothing arrives, and the socket must not be closed
            ws.send(json.dumps({"type": "send", "content": "still alive?"}))
            assert _events_until(ws, "message.done")[-1]["message"]["status"] == "complete"


def test_viewer_on_b_joining_mid_stream_resumes_from_redis(token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with daphne_servers(2, env={"DEMO_TTFT_MS": "0", "DEMO_TOKENS_PER_S": "40", "DEMO_MAX_TOKENS": "80"}) as (
        a,
        b,
    ):
        thread = httpx.post(a.url("/api/threads"), json={}, headers=auth).json()
        with connect(_ws_url(a, thread["id"]), additional_headers=auth) as ws_a:
            assert json.loads(ws_a.recv(timeout=10))["type"] == "snapshot"
            ws_a.send(json.dumps({"type": "send", "content": "a long reply", "request_id": "mid-b"}))
            seen = _events_until(ws_a, "message.delta")
            while seen[-1].get("seq", 0) < 3:
                seen.append(json.loads(ws_a.recv(timeout=10)))
            with connect(_ws_url(b, thread["id"]), additional_headers=auth) as ws_b:
                snap = json.loads(ws_b.recv(timeout=10))
                (entry,) = snap["in_flight"]
                assert entry["request_id"] == "mid-b" and entry["seq"] >= 3
                rest = _events_until(ws_b, "message.done")
        deltas = [e for e in rest if e["type"] == "message.delta"]
        assert [d["seq"] for d in deltas] == list(range(entry["seq"] + 1, entry["seq"] + 1 + len(deltas)))
        assert entry["text"] + "".join(d["text"] for d in deltas) == rest[-1]["message"]["content"]


def test_cancel_through_b_stops_the_stream_generated_on_a(token: str) -> None:
    from providers.fake.server import ThreadedFakeServer

    auth = {"Authorization": f"Bearer {token}"}
    with ThreadedFakeServer(ttft_ms=50, tps=20, tokens=400) as fake:
        env = {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "sk-t",
            "OPENAI_MODEL": "fake-model",
        }
        with daphne_servers(2, env=env) as (a, b):
            thread = httpx.post(a.url("/api/threads"), json={"provider": "openai"}, headers=auth).json()
            with (
                connect(_ws_url(a, thread["id"]), additional_headers=auth) as ws_a,
                connect(_ws_url(b, thread["id"]), additional_headers=auth) as ws_b,
            ):
                for ws in (ws_a, ws_b):
                    assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
                ws_a.send(json.dumps({"type": "send", "content": "go on forever", "request_id": "stop-1"}))
                _events_until(ws_a, "message.delta")
                resp = httpx.post(b.url("/api/threads/cancel/stop-1"), headers=auth)
                assert resp.status_code == 200 and resp.json() == {
                    "request_id": "stop-1",
                    "status": "cancelled",
                }
                ends = [_events_until(ws, "message.cancelled")[-1] for ws in (ws_a, ws_b)]
            wait_until(lambda: fake.stats()["client_disconnects"] == 1, timeout=5)
            assert fake.stats()["completed"] == 0
            assert ends[0]["message"] == ends[1]["message"] and ends[0]["message"]["status"] == "cancelled"
            again = httpx.post(b.url("/api/threads/cancel/stop-1"), headers=auth)
            assert again.status_code == 409
