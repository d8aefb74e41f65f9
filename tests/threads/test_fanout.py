"""Stream fan-out: many viewers of one thread get the same complete, in-order stream; a stalled viewer
does not hold the others back."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from websockets.asyncio.client import ClientConnection, connect

from chatapp.asgi import application
from tests.servers import DaphneServer, daphne_servers
from threads.models import Thread

TIMEOUT = 15
N_CLIENTS = 50
# The demo model, slow enough that a reply spans several delta batches (STREAM_FLUSH_MS).
DEMO_ENV = {"DEMO_TTFT_MS": "20", "DEMO_TOKENS_PER_S": "200", "DEMO_MAX_TOKENS": "80"}


def _check_stream(evs: list[dict[str, Any]], request_id: str) -> str:
    """One viewer's events of a send: start, deltas seq 1..n, done whose content is the deltas' text."""
    assert evs[0]["type"] == "message.start" and evs[0]["request_id"] == request_id, evs[0]
    assert evs[-1]["type"] == "message.done" and evs[-1]["request_id"] == request_id, evs[-1]
    deltas = evs[1:-1]
    assert deltas and all(d["type"] == "message.delta" for d in deltas), [e["type"] for e in evs]
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    text = "".join(d["text"] for d in deltas)
    assert text == evs[-1]["message"]["content"] != ""
    assert evs[-1]["message"]["status"] == "complete"
    return text


def _check_identical(all_evs: list[list[dict[str, Any]]], request_id: str) -> None:
    assert len(all_evs) == N_CLIENTS
    for evs in all_evs:
        _check_stream(evs, request_id)
    first = all_evs[0]
    different = [i for i, evs in enumerate(all_evs) if evs != first]
    assert not different, f"viewers {different} got a different stream than viewer 0"


# --- in process: WebsocketCommunicator (SQLite + in-memory layer, then PostgreSQL + Redis) ----------------


async def _communicator(thread_id: int, token: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(
        application, f"/ws/threads/{thread_id}/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    ok, _ = await comm.connect(timeout=TIMEOUT)
    assert ok
    snap = await comm.receive_json_from(timeout=TIMEOUT)
    assert snap["type"] == "snapshot" and snap["in_flight"] == []
    return comm


async def _comm_until_done(comm: WebsocketCommunicator) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["type"] != "message.done":
        seen.append(await comm.receive_json_from(timeout=TIMEOUT))
    return seen


@pytest.mark.both
@pytest.mark.django_db(transaction=True)
async def test_fifty_sockets_in_process_get_identical_complete_streams(
    user: Any, token: str, settings: Any
) -> None:
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "demo": {**settings.PROVIDERS["demo"], "ttft_ms": 20.0, "tokens_per_s": 400.0, "max_tokens": 80},
    }
    thread = await sync_to_async(Thread.objects.create)(owner=user, provider="demo", model="demo-1")
    comms = [await _communicator(thread.pk, token) for _ in range(N_CLIENTS)]
    try:
        await comms[7].send_json_to({"type": "send", "content": "fan me out", "request_id": "fan-1"})
        all_evs = await asyncio.gather(*(_comm_until_done(c) for c in comms))
        _check_identical(list(all_evs), "fan-1")
        assert len(all_evs[0]) > 3  # several deltas: the order check means something
    finally:
        for comm in comms:
            await comm.disconnect()


# --- real daphne processes and real WebSocket clients (PostgreSQL + Redis) ---------------------------------


def _ws_url(server: DaphneServer, thread_id: int) -> str:
    return server.base_url.replace("http://", "ws://") + f"/ws/threads/{thread_id}/"


async def _open(url: str, auth: dict[str, str]) -> ClientConnection:
    ws = await connect(url, additional_headers=auth, open_timeout=TIMEOUT, max_size=None)
    snap = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert snap["type"] == "snapshot"
    return ws


async def _until_done(ws: ClientConnection) -> tuple[list[dict[str, Any]], float]:
    """Events up to message.done, and time.monotonic() when it arrived."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while not seen or seen[-1]["type"] != "message.done":
            seen.append(json.loads(await ws.recv()))
    return seen, time.monotonic()


async def _send_and_collect(
    server: DaphneServer, thread_id: int, auth: dict[str, str], sockets: list[ClientConnection], rid: str
) -> tuple[httpx.Response, list[list[dict[str, Any]]], float]:
    """One send through `server`'s HTTP API while every socket reads to message.done. Returns the
    response, each socket's events, and the seconds from the send to the last socket's message.done."""
    async with httpx.AsyncClient(headers=auth, timeout=TIMEOUT) as client:
        t0 = time.monotonic()
        post = client.post(
            server.url(f"/api/threads/{thread_id}/messages"),
            json={"content": f"say {rid}", "request_id": rid},
        )
        resp, *results = await asyncio.gather(post, *(_until_done(ws) for ws in sockets))
    return resp, [evs for evs, _ in results], max(end for _, end in results) - t0


def _new_thread(server: DaphneServer, auth: dict[str, str], **body: str) -> int:
    resp = httpx.post(server.url("/api/threads"), json=body, headers=auth, timeout=TIMEOUT)
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_fifty_sockets_across_two_processes_get_identical_complete_streams(token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with daphne_servers(2, env=DEMO_ENV) as (a, b):
        thread_id = _new_thread(a, auth)

        async def run() -> tuple[httpx.Response, list[list[dict[str, Any]]]]:
            urls = [_ws_url(a if i % 2 == 0 else b, thread_id) for i in range(N_CLIENTS)]
            sockets = list(await asyncio.gather(*(_open(url, auth) for url in urls)))
            try:
                resp, all_evs, _ = await _send_and_collect(a, thread_id, auth, sockets, "fan-mp-1")
            finally:
                await asyncio.gather(*(ws.close() for ws in sockets))
            return resp, all_evs

        resp, all_evs = asyncio.run(run())
    assert resp.status_code == 200, resp.text
    _check_identical(all_evs, "fan-mp-1")
    assert all_evs[0][-1]["message"] == resp.json()["assistant_message"]


def _stalled_socket(server: DaphneServer, thread_id: int, token: str) -> socket.socket:
    """A WebSocket client by hand: the upgrade, the snapshot frame, then it never reads again (with a tiny
    receive buffer, so the server's writes back up as soon as possible)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connect: the window follows it
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/threads/{thread_id}/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    buf = b""

    def need(n: int) -> None:
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the stalled socket during the handshake"
            buf += chunk

    while b"\r\n\r\n" not in buf:
        need(len(buf) + 1)
    head, buf = buf.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n")[0].split()[1] == b"101", head
    need(2)
    length, offset = buf[1] & 0x7F, 2  # server frames are not masked
    if length == 126:
        need(4)
        length, offset = int.from_bytes(buf[2:4], "big"), 4
    elif length == 127:
        need(10)
        length, offset = int.from_bytes(buf[2:10], "big"), 10
    need(offset + length)
    assert buf[0] == 0x81, buf[:2]  # FIN + text
    assert json.loads(buf[offset : offset + length])["type"] == "snapshot"
    return sock


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_stalled_socket_does_not_delay_the_other_viewers(token: str) -> None:
    # The demo model's replies stop after ~70 tokens whatever DEMO_MAX_TOKENS says: the fake provider
    # gives a long one (400 tokens at 400 tokens/s, ~1 s).
    from providers.fake.server import ThreadedFakeServer

    auth = {"Authorization": f"Bearer {token}"}
    with ThreadedFakeServer(ttft_ms=20, tps=400, tokens=400) as fake:
        env = {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "sk-t",
            "OPENAI_MODEL": "fake-model",
            "PACER_OPENAI_RPS": "0",
        }
        with daphne_servers(1, env=env) as (a,):
            thread_id = _new_thread(a, auth, provider="openai")

            async def run() -> tuple[float, float, list[httpx.Response]]:
                sockets = [await _open(_ws_url(a, thread_id), auth) for _ in range(3)]
                try:
                    # Baseline: the same viewers and the same reply length, nobody stalled.
                    r1, evs1, baseline = await _send_and_collect(a, thread_id, auth, sockets, "stall-base")
                    for evs in evs1:
                        _check_stream(evs, "stall-base")
                    stalled = await asyncio.to_thread(_stalled_socket, a, thread_id, token)
                    try:
                        r2, evs2, with_stall = await _send_and_collect(a, thread_id, auth, sockets, "stall-2")
                    finally:
                        stalled.close()
                    for evs in evs2:
                        _check_stream(evs, "stall-2")
                finally:
                    await asyncio.gather(*(ws.close() for ws in sockets))
                return baseline, with_stall, [r1, r2]

            baseline, with_stall, responses = asyncio.run(run())
        assert fake.stats()["completed"] == 2
    assert [r.status_code for r in responses] == [200, 200]
    assert len(responses[1].json()["assistant_message"]["content"].split()) >= 300  # a long reply
    # A ratio against the reply's own duration in this run, not an absolute time.
    assert with_stall <= 2 * baseline + 2.0, (
        f"baseline {baseline:.2f} s, with a stalled viewer {with_stall:.2f} s"
    )
