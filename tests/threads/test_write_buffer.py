"""A socket that never reads cannot make the server buffer without limit (#16 item 7): daphne has no
write backpressure, so the consumer measures what its connection has waiting to be written and closes it
with 4008 past WS_MAX_BUFFER_BYTES, whether the client acknowledges or not. Real daphne: the buffer is
Twisted's, behind a real TCP connection whose reader has stopped."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.servers import daphne_servers, wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

# The kernel's socket buffers take their share first (a few MB on loopback): the bound is on what daphne
# keeps in user space beyond them.
LIMIT = 64 * 1024
# 30,000 CJK characters: JSON-escaped (\uXXXX) each message.start frame carries about 180 KB.
LONG = "漢" * 30_000


def _open_raw_websocket(port: int, path: str, token: str) -> socket.socket:
    """A WebSocket handshake on a socket with a tiny receive buffer, then nothing read ever again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # one byte at a time: nothing past the handshake is read
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _close_code(data: bytes) -> int | None:
    """The code of the first close frame in a server's (unmasked) frame stream."""
    i = 0
    while i + 2 <= len(data):
        opcode, size = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if size == 126:
            (size,) = struct.unpack("!H", data[i : i + 2])
            i += 2
        elif size == 127:
            (size,) = struct.unpack("!Q", data[i : i + 8])
            i += 8
        if opcode == 0x8:
            return int(struct.unpack("!H", data[i : i + 2])[0])
        i += size
    return None


def _drain(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    try:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


# How long the frozen viewer stays frozen after the server has decided 4008, before it reads again:
# past autobahn's own close-handshake timer (1 s, in 0.2 s buckets), which used to reset the connection
# before its backlog and close frame could reach a viewer that reads late; well under
# threads.flow.CLOSE_PATIENCE_S. A modelled stall, not a wait for something to happen.
FROZEN_S = 3.0


def _read_events(ws: ClientConnection, events: list[dict[str, Any]], stop: threading.Event) -> None:
    """A viewer that keeps up: reads every frame until told to stop or closed."""
    while not stop.is_set():
        try:
            events.append(json.loads(ws.recv(timeout=0.2)))
        except TimeoutError:
            continue
        except ConnectionClosed:
            return


def test_a_viewer_that_never_reads_is_closed_with_4008(token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    env = {"WS_MAX_BUFFER_BYTES": str(LIMIT), "MAX_MESSAGE_CHARS": "32000", "DEMO_TOKENS_PER_S": "2000"}
    with daphne_servers(1, env=env) as (a,):
        thread = httpx.post(a.url("/api/threads"), json={}, headers=auth).json()
        frozen = _open_raw_websocket(a.port, f"/ws/threads/{thread['id']}/", token)
        stop, stop_reading = threading.Event(), threading.Event()
        statuses: list[int] = []
        seen: list[dict[str, Any]] = []

        def talk() -> None:
            """Another client of the thread talks; both viewers are sent every event of it."""
            for i in range(40):
                if stop.is_set():
                    return
                resp = httpx.post(
                    a.url(f"/api/threads/{thread['id']}/messages"),
                    json={"content": f"{i} {LONG}", "request_id": f"long-{i}"},
                    headers=auth,
                    timeout=30,
                )
                statuses.append(resp.status_code)

        url = a.base_url.replace("http://", "ws://") + f"/ws/threads/{thread['id']}/"
        talker = threading.Thread(target=talk, daemon=True)
        with connect(url, additional_headers=auth, max_size=None) as reader:
            reading = threading.Thread(target=_read_events, args=(reader, seen, stop_reading), daemon=True)
            talker.start()
            reading.start()
            try:
                wait_until(lambda: "4008" in a.log_tail(400), timeout=60)
                time.sleep(FROZEN_S)  # the viewer is still frozen: the server must keep its close for it
                data = _drain(frozen, timeout=5)
                assert _close_code(data) == 4008, len(data)
                stop.set()
                talker.join(60)
                assert statuses and set(statuses) == {200}, statuses
                # The viewer that keeps up was not held back by the frozen one: it sees every reply end.
                sent = {f"long-{i}" for i in range(len(statuses))}
                wait_until(
                    lambda: sent <= {e.get("request_id") for e in seen if e["type"] == "message.done"},
                    timeout=30,
                )
            finally:
                stop.set()
                stop_reading.set()
                frozen.close()
                talker.join(60)
                reading.join(10)
