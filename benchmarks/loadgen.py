"""The benchmarks' HTTP client: aiohttp with an unlimited connector.

Why not httpx: one shared `httpx.AsyncClient` with a few hundred open connections does per-request pool
work that grows with the number of connections; at 200-way concurrency on a 2-core machine it added
about half the provider's latency to p95, so a benchmark measured its own client. aiohttp with
`limit=0` adds a few per cent (see `floor` in the benchmarks' output, measured in the same run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

TIMEOUT_S = 120.0


def session(token: str = "", *, timeout_s: float = TIMEOUT_S) -> aiohttp.ClientSession:
    """A client session with no connection limit (each concurrent request gets its own connection)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        headers=headers,
    )


@dataclass(slots=True)
class Reply:
    latency: float
    end: float  # time.monotonic(), system-wide on Linux: comparable across processes on one machine
    status: int  # 0: transport error
    body: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    ttft: float | None = None  # send -> first delta of the answer (streaming modes only)


async def prewarm(client: aiohttp.ClientSession, url: str, count: int) -> int:
    """Open `count` keep-alive connections to `url`'s server (that many GETs at once, answers read, any
    status) so that a burst finds them open: it then measures the sends, not this one process opening N TCP
    connections one after another (a crowd of clients opens theirs in parallel). How many answered."""

    async def one() -> bool:
        try:
            async with client.get(url) as resp:
                await resp.read()
                return True
        except (aiohttp.ClientError, TimeoutError):
            return False

    return sum(await asyncio.gather(*(one() for _ in range(count))))


async def count_messages(client: aiohttp.ClientSession, thread_url: str, token: str = "") -> int | None:
    """How many messages the thread holds: GET /api/threads/{id} answers one page (the newest 50), so
    this follows `?before=` to the oldest. None when the thread cannot be read."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    total, before = 0, ""
    while True:
        try:
            async with client.get(f"{thread_url}?limit=200{before}", headers=headers) as resp:
                if resp.status != 200:
                    return None
                page = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        messages = page.get("messages") or []
        total += len(messages)
        if not page.get("has_more") or not messages:
            return total
        before = f"&before={messages[0]['id']}"


async def post_json(client: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> Reply:
    """POST a JSON body and read a JSON answer; transport errors become status 0."""
    t = time.monotonic()
    try:
        async with client.post(url, json=payload) as resp:
            raw = await resp.read()
            body: dict[str, Any] = {}
            if resp.content_type == "application/json" and raw:
                loaded = json.loads(raw)
                body = loaded if isinstance(loaded, dict) else {}
            return Reply((end := time.monotonic()) - t, end, resp.status, body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Reply((end := time.monotonic()) - t, end, 0, error=type(exc).__name__)


async def stream_openai(
    client: aiohttp.ClientSession,
    base_url: str,
    content: str,
    *,
    stream: bool = True,
    model: str = "fake-model",
    api_key: str = "",
    max_tokens: int | None = None,
) -> float:
    """One Chat Completions request straight to an OpenAI-compatible provider, read to the end: the
    provider's own latency, in seconds (the denominator of the benchmarks' ratios)."""
    body: dict[str, Any] = {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    t = time.monotonic()
    async with client.post(f"{base_url}/chat/completions", json=body, headers=headers) as resp:
        resp.raise_for_status()
        async for _ in resp.content.iter_any():
            pass
    return time.monotonic() - t


# --- the app's streaming transports -------------------------------------------------------------------

TERMINAL = ("message.done", "message.cancelled", "message.error")
# What each terminal event counts as, in the HTTP statuses of a non-streaming send.
_TERMINAL_STATUS = {"message.done": 200, "message.cancelled": 499, "message.error": 502}


async def send_sse(client: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> Reply:
    """POST a send with `"stream": true` and read its Server-Sent Events to the terminal one."""
    t = time.monotonic()
    ttft: float | None = None
    try:
        async with client.post(url, json=payload | {"stream": True}) as resp:
            if resp.status != 200:
                await resp.read()
                return Reply((end := time.monotonic()) - t, end, resp.status)
            kind = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind:
                    if kind == "message.delta" and ttft is None:
                        ttft = time.monotonic() - t
                    elif kind in TERMINAL or kind == "error":
                        event = json.loads(line[5:])
                        status = _TERMINAL_STATUS.get(kind, 400)
                        return Reply((end := time.monotonic()) - t, end, status, event, kind, ttft)
            return Reply((end := time.monotonic()) - t, end, 0, error="stream ended early", ttft=ttft)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Reply((end := time.monotonic()) - t, end, 0, error=type(exc).__name__, ttft=ttft)


async def send_ws(
    client: aiohttp.ClientSession, base_url: str, thread_id: int, content: str, request_id: str
) -> Reply:
    """Open /ws/threads/{id}/, send {"type": "send"} and wait for the answer's terminal event.

    A coalesced send's events carry the leader's request_id, so the answer is recognised by its user
    message: this request's own id, or any request whose user message has the same content (from the
    snapshot or a later message.start). Latency runs from opening the socket."""
    url = base_url.replace("http", "ws", 1) + f"/ws/threads/{thread_id}/"
    t = time.monotonic()
    ttft: float | None = None
    mine = {request_id}
    try:
        async with client.ws_connect(url, max_msg_size=0, autoping=True) as ws:
            snapshot = await ws.receive_json()
            for msg in snapshot.get("messages", []):
                if msg.get("role") == "user" and msg.get("content", "").strip() == content.strip():
                    mine.add(msg["request_id"])
            await ws.send_json({"type": "send", "content": content, "request_id": request_id})
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(frame.data)
                kind, rid = event.get("type"), event.get("request_id")
                if kind == "message.start" and event["user_message"]["content"].strip() == content.strip():
                    mine.add(rid)
                elif kind == "message.delta" and rid in mine and ttft is None:
                    ttft = time.monotonic() - t
                elif (kind in TERMINAL and rid in mine) or kind == "error":
                    status = _TERMINAL_STATUS.get(kind, 400)
                    return Reply((end := time.monotonic()) - t, end, status, event, kind, ttft)
            return Reply((end := time.monotonic()) - t, end, 0, error="socket closed", ttft=ttft)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Reply((end := time.monotonic()) - t, end, 0, error=type(exc).__name__, ttft=ttft)


# --- the generator's own floor --------------------------------------------------------------------------


async def _serve_fixed(delay_s: float, conn: Any) -> None:
    """HTTP/1.1 keep-alive server: every POST is answered `{"ok": true}` after `delay_s`, a GET at once."""
    body = b'{"ok":true}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                headers = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in headers.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if headers.startswith(b"POST"):  # GET: prewarm() opening connections, answered at once
                    await asyncio.sleep(delay_s)
                writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    conn.send(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _fixed_server_entry(delay_s: float, conn: Any) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_fixed(delay_s, conn))


@contextlib.contextmanager
def fixed_delay_server(delay_s: float) -> Iterator[str]:
    """A trivial server in its own process (not on the generator's loop) that answers every request after
    `delay_s`: what this client adds on top of a fixed wait is the load generator's own floor."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_fixed_server_entry, args=(delay_s, child), daemon=True)
    proc.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the fixed-delay server did not start")
        yield f"http://127.0.0.1:{parent.recv()}"
    finally:
        proc.terminate()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
