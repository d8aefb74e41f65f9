"""benchmarks.leanclient: a burst written at once on connections opened before it, each answer timed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from benchmarks import coalesce_bench, leanclient
from providers.fake.server import ThreadedFakeServer

Handler = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(on_post: Handler) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A keep-alive HTTP/1.1 server on this loop: a GET is answered 404 at once, a POST by `on_post`."""
    seen = {"connections": 0, "gets": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                if head.startswith(b"GET"):
                    seen["gets"] += 1
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                else:
                    await on_post(head, body, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with srv:
        yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", seen


async def test_a_burst_goes_out_at_once_one_request_a_connection_and_each_answer_is_timed() -> None:
    arrived: list[float] = []
    all_in = asyncio.Event()

    async def echo_once_all_are_in(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        arrived.append(asyncio.get_running_loop().time())
        if len(arrived) == 20:
            all_in.set()
        await all_in.wait()  # nobody is answered before every request has arrived
        await asyncio.sleep(0.05)
        echo = json.dumps(
            {"line": head.split(b"\r\n")[0].decode(), "auth": b"Bearer tok" in head, "sent": json.loads(body)}
        )
        data = echo.encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(data), data)
        )

    async with server(echo_once_all_are_in) as (url, seen):
        async with leanclient.connections([url], 20, warm_path="/_bench/prewarm") as conns:
            assert (seen["connections"], seen["gets"]) == (20, 20)  # opened and used once before the burst
            requests = [
                leanclient.post_request(url, "/api/threads/7/messages", {"i": i}, "tok") for i in range(20)
            ]
            replies = await leanclient.send_all(conns, requests)
    assert seen["connections"] == 20  # the burst reused them
    assert [r.status for r in replies] == [200] * 20
    assert [r.body["sent"] for r in replies] == [{"i": i} for i in range(20)]
    assert all(r.body["line"] == "POST /api/threads/7/messages HTTP/1.1" and r.body["auth"] for r in replies)
    assert all(r.latency >= 0.05 for r in replies)
    assert all(r.end >= r.latency for r in replies)


async def test_a_connection_closed_without_an_answer_is_status_0() -> None:
    async def hang_up(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with server(hang_up) as (url, _), leanclient.connections([url], 3) as conns:
        replies = await leanclient.send_all(conns, [leanclient.post_request(url, "/x", {})] * 3)
    assert [(r.status, r.error) for r in replies] == [(0, "ConnectionResetError")] * 3


async def test_connections_that_cannot_be_opened_are_an_error() -> None:
    async with server(lambda *_: asyncio.sleep(0)) as (url, _):
        pass  # closed: nothing listens there any more
    with pytest.raises(ConnectionError, match="2 of 2 connections could not be opened"):
        async with leanclient.connections([url], 2):
            pass


@pytest.mark.parametrize("stream", [True, False])
async def test_the_direct_burst_reads_whole_answers_and_streams_from_the_provider(stream: bool) -> None:
    with ThreadedFakeServer(ttft_ms=50, tps=500, tokens=5) as fake:
        latencies = await coalesce_bench.direct_burst(fake.openai_base_url, 6, stream, True, "lean")
        assert fake.stats()["calls"] == 6
    assert len(latencies) == 6 and min(latencies) >= 0.05  # each read to its end, after the first token


async def test_a_send_s_role_and_timings_are_read_from_its_answer() -> None:
    answer = json.dumps({"coalesced": "follower", "timings": {"total_ms": 12.5}}).encode()

    async def answer_as_the_app(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(answer), answer)
        )

    async with server(answer_as_the_app) as (url, seen):
        async with coalesce_bench.burst_sender("lean", None, [url, url], "tok", 3, 4, prewarm=False) as fire:  # type: ignore[arg-type]
            samples = await fire()
    assert seen["gets"] == 4  # the lean client always opens its connections first
    assert [(s.status, s.role, s.timings) for s in samples] == [(200, "follower", {"total_ms": 12.5})] * 4
