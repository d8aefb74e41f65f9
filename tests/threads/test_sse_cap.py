"""`stream: true` sends count with WebSockets against MAX_SOCKETS_PER_USER (#16 item 2): each stream
puts a channel in the thread's group, so 5,000 of them (followers cost the provider nothing) made every
delta 5,000 channel-layer pushes. Past the cap a stream is refused before it starts: 429
too_many_streams with Retry-After, as JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator

from chatapp.asgi import application
from providers.fake.server import FakeProviderServer
from tests.asgi_http import asgi_request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


def _headers(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


async def _thread(token: str) -> int:
    resp = await asgi_request(
        "POST", "/api/threads", body=json.dumps({"provider": "openai"}).encode(), headers=_headers(token)
    )
    assert resp.status == 201, resp.body
    return int(resp.json()["id"])


class Stream:
    """An SSE send held open: its status, and its first event once it has one."""

    def __init__(self, comm: ApplicationCommunicator, status: int, first: bytes) -> None:
        self.comm, self.status, self.first = comm, status, first

    async def leave(self) -> None:
        """The client goes away mid-stream (a closed tab)."""
        await self.comm.send_input({"type": "http.disconnect"})
        await self.comm.wait(15)


async def _open(token: str, thread_id: int, content: str) -> Stream:
    body = json.dumps({"content": content, "stream": True}).encode()
    hdrs = [(b"host", b"testserver"), (b"content-length", str(len(body)).encode())]
    hdrs += [(k.encode(), v.encode()) for k, v in _headers(token).items()]
    path = f"/api/threads/{thread_id}/messages"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": hdrs,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    comm = ApplicationCommunicator(application, scope)
    await comm.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await comm.receive_output(15)
    assert start["type"] == "http.response.start", start
    first = (await comm.receive_output(15)).get("body", b"")
    return Stream(comm, start["status"], first)


async def _refused(token: str, thread_id: int, content: str) -> Any:
    body = json.dumps({"content": content, "stream": True}).encode()
    return await asgi_request(
        "POST", f"/api/threads/{thread_id}/messages", body=body, headers=_headers(token)
    )


async def _socket(token: str, thread_id: int) -> tuple[WebsocketCommunicator, int | None]:
    """A socket and None if it stays open, else its close code."""
    comm = WebsocketCommunicator(
        application, f"/ws/threads/{thread_id}/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    ok, code = await comm.connect(timeout=10)
    if not ok:
        return comm, code
    first = await comm.receive_output(timeout=10)
    if first["type"] == "websocket.close":
        return comm, first["code"]
    return comm, None


async def test_streams_past_the_cap_are_429_and_followers_count_too(
    token: str, fake: FakeProviderServer, settings: Any
) -> None:
    settings.MAX_SOCKETS_PER_USER = 2
    fake.configure(tps=5, tokens=60)  # the streams stay open through the test (12 s)
    tid = await _thread(token)
    held = [await _open(token, tid, "same words") for _ in range(2)]  # a leader and its follower
    assert [s.status for s in held] == [200, 200] and all(s.first.startswith(b"event: ") for s in held)
    refused = await _refused(token, tid, "same words")
    assert refused.status == 429 and refused.headers["content-type"] == "application/json"
    assert refused.json()["error"]["code"] == "too_many_streams"
    assert int(refused.headers["retry-after"]) >= 1
    # Sockets and streams share the cap.
    sock, code = await _socket(token, tid)
    assert code == 4429
    for stream in held:
        await stream.leave()
    assert fake.stats.calls == 1


async def test_a_socket_and_a_stream_share_the_cap(
    token: str, fake: FakeProviderServer, settings: Any
) -> None:
    settings.MAX_SOCKETS_PER_USER = 1
    tid = await _thread(token)
    sock, code = await _socket(token, tid)
    assert code is None
    refused = await _refused(token, tid, "hello")
    assert refused.status == 429 and refused.json()["error"]["code"] == "too_many_streams"
    assert fake.stats.calls == 0  # refused before anything was sent
    await sock.disconnect()
    assert (await _refused(token, tid, "hello")).status == 200


async def test_a_finished_or_abandoned_stream_frees_its_slot(
    token: str, fake: FakeProviderServer, settings: Any
) -> None:
    settings.MAX_SOCKETS_PER_USER = 1
    tid = await _thread(token)
    done = await _refused(token, tid, "to the end")  # read to its last event
    assert done.status == 200 and b"event: message.done" in done.body
    fake.configure(tps=5, tokens=60)
    left = await _open(token, tid, "left early")
    assert left.status == 200
    await left.leave()
    again = await _open(token, tid, "and again")
    assert again.status == 200
    await again.leave()


async def test_a_stream_dropped_before_its_first_byte_frees_its_slot(user: Any, settings: Any) -> None:
    """A client that leaves between the view's answer and the first byte: the body is never read, so no
    `finally` of it runs; dropping it must still free the slot (else 20 such requests lock a user out)."""
    import gc

    from django.http import HttpRequest

    from threads import api, quotas
    from threads.models import Thread
    from threads.validation import parse_send

    settings.MAX_SOCKETS_PER_USER = 1
    thread = await sync_to_async(Thread.objects.create)(owner=user, provider="demo", model="demo-1")
    request = HttpRequest()
    request.user = user
    resp = await api._sse_response(
        request, thread, parse_send({"content": "hi", "stream": True}, max_chars=100)
    )
    registry = quotas.socket_registry()
    assert registry.local.get(str(user.pk))
    del resp
    gc.collect()
    await asyncio.sleep(0)  # one turn: the finalizer's callback starts the task that frees the slot
    assert api._freeing
    await asyncio.wait_for(asyncio.gather(*api._freeing), 10)
    assert not registry.local.get(str(user.pk))
    assert await quotas.socket_open(user_id=user.pk, socket_id="next")
    await quotas.socket_close(user_id=user.pk, socket_id="next")
