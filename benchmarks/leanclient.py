"""A lean HTTP/1.1 client for bursts: N requests built before the burst, written one after another on
connections opened and used once before it, each answer timed when httptools has parsed its last byte.

Why not aiohttp here (benchmarks/loadgen.py keeps it for everything else): a burst generator shares the
server's 2 cores, and aiohttp spends about 0.3 ms of CPU per send of a 1000-send burst (the request
machinery of each send's first step, a task per body, a response object, timers), so its 1000 requests
leave over 0.16-0.33 s and it reads the answers of a coalesced burst, which arrive together, one after
another on one core: the load generator, not the server, set much of what `coalesce_bench` measured.
Here a send is one `transport.write` of ready bytes and an answer is parsed in C and kept as bytes until
the burst is over (`--client lean`; figures of both clients side by side in the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httptools

from benchmarks.loadgen import Reply

__all__ = ["Exchange", "connections", "get_request", "post_request", "send_all"]


class Exchange(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time (HTTP/1.1, no pipelining)."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes, float]] | None = None
        self.sent_at = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # httptools' callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        end = time.monotonic()
        body, self._body = b"".join(self._body), []
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), body, end))

    def request(self, raw: bytes) -> asyncio.Future[tuple[int, bytes, float]]:
        """Write one whole request; the future gets (status, body, the monotonic time it was read)."""
        waiter = asyncio.get_running_loop().create_future()
        if self._transport is None:
            waiter.set_exception(ConnectionResetError("not connected"))
            return waiter
        self._waiter = waiter
        self.sent_at = time.monotonic()
        self._transport.write(raw)
        return waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


def _request(method: str, url: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {urlsplit(url).netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def post_request(url: str, path: str, payload: dict[str, Any], token: str = "") -> bytes:
    """A POST of `payload` as JSON to `path` on `url`'s server, as bytes ready to write."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return _request("POST", url, path, json.dumps(payload).encode(), headers)


def get_request(url: str, path: str) -> bytes:
    return _request("GET", url, path, b"", {})


def _reply(conn: Exchange, outcome: tuple[int, bytes, float] | BaseException) -> Reply:
    if isinstance(outcome, BaseException):
        end = time.monotonic()
        return Reply(end - conn.sent_at, end, 0, error=type(outcome).__name__)
    status, raw, end = outcome
    body: dict[str, Any] = {}
    if raw[:1] == b"{":
        with contextlib.suppress(ValueError):
            body = json.loads(raw)
    return Reply(end - conn.sent_at, end, status, body)


async def send_all(conns: Sequence[Exchange], requests: Sequence[bytes]) -> list[Reply]:
    """Write request i on connection i, all in one go, and wait for every answer (a transport error is
    status 0). Answers are decoded only once the last has arrived."""
    if len(conns) != len(requests):
        raise ValueError("one request per connection")
    waiters = [conn.request(raw) for conn, raw in zip(conns, requests, strict=True)]
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    return [_reply(conn, outcome) for conn, outcome in zip(conns, outcomes, strict=True)]


@contextlib.asynccontextmanager
async def connections(urls: Sequence[str], n: int, *, warm_path: str = "") -> AsyncIterator[list[Exchange]]:
    """`n` connections, the i-th to `urls[i % len(urls)]`, all opened at once and each used for one GET of
    `warm_path` (any status; skipped when empty) so that the server has taken them in before the burst,
    as a crowd of clients has theirs open. Closed on exit."""
    loop = asyncio.get_running_loop()

    async def open_one(url: str) -> Exchange:
        parts = urlsplit(url)
        _, conn = await loop.create_connection(Exchange, parts.hostname or "127.0.0.1", parts.port or 80)
        return conn

    conns: list[Exchange] = []
    try:
        opened = await asyncio.gather(
            *(open_one(urls[i % len(urls)]) for i in range(n)), return_exceptions=True
        )
        conns += [conn for conn in opened if isinstance(conn, Exchange)]
        if len(conns) < n:
            raise ConnectionError(f"{n - len(conns)} of {n} connections could not be opened")
        if warm_path:
            warm = [get_request(urls[i % len(urls)], warm_path) for i in range(n)]
            failed = [r for r in await send_all(conns, warm) if r.status == 0]
            if failed:
                raise ConnectionError(f"{len(failed)} of {n} connections failed their first request")
        yield conns
    finally:
        for conn in conns:
            conn.close()
