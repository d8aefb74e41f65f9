"""The pacer on the Redis backend against a real Redis: two "processes" (independent backends, each with
its own connections) share one limit, one queue and one pause; Redis going away and coming back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from core.gcra import Grant, Limit
from core.gcra_store import RedisBackend
from providers.pacer import REDIS_RETRY_S, Pacer
from tests.waiting import wait_until_async

pytestmark = pytest.mark.services


def _url() -> str:
    return os.environ["REDIS_URL"]


async def _delete_keys(prefix: str) -> None:
    client = Redis.from_url(_url())
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test-pacer-{uuid.uuid4().hex[:12]}"
    yield name
    await _delete_keys(name)


class RecordingBackend(RedisBackend):
    """Remembers which reservation number each task got."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.seqs: dict[asyncio.Task[Any] | None, int] = {}

    async def reserve(self, provider: str, limit: Limit, max_wait: float) -> Grant:
        grant = await super().reserve(provider, limit, max_wait)
        self.seqs[asyncio.current_task()] = grant.seq
        return grant


def _pacers(prefix: str, limit: Limit, n: int = 2) -> list[Pacer]:
    """`n` pacers as in `n` processes: each with its own connections to the same Redis buckets."""
    backends = [RecordingBackend(_url(), prefix=prefix) for _ in range(n)]
    return [Pacer({"p": limit}, max_wait=10.0, redis=b, enabled=lambda: True) for b in backends]


# --- two processes ------------------------------------------------------------------------------------


async def test_two_processes_share_one_limit_and_admit_in_reservation_order(prefix: str) -> None:
    pacers = _pacers(prefix, Limit.per_second(5.0, 1))
    admitted: list[tuple[int, float, float, float]] = []  # (seq, admitted at, started at, returned ms)

    async def one(k: int) -> None:
        pacer = pacers[k % 2]
        started = time.monotonic()
        waited_ms = await pacer.acquire("p")
        backend = pacer._redis
        assert isinstance(backend, RecordingBackend)
        admitted.append((backend.seqs[asyncio.current_task()], time.monotonic(), started, waited_ms))

    try:
        await asyncio.gather(*(one(k) for k in range(30)))
    finally:
        for pacer in pacers:
            await pacer.aclose()

    by_time = sorted(admitted, key=lambda a: a[1])
    assert [seq for seq, *_ in by_time] == list(range(1, 31))  # admitted in reservation order
    times = [at for _, at, _, _ in by_time]
    for t in times:
        assert sum(t <= u < t + 1.0 for u in times) <= 5 + 1  # rate x 1 s + burst
    assert 5.5 <= times[-1] - times[0] <= 6.5  # 29 intervals of 0.2 s, give or take the scheduling
    for _, at, started, waited_ms in admitted:
        assert waited_ms == pytest.approx((at - started) * 1000, abs=100)  # the wait it really was


async def test_a_pause_set_through_one_process_holds_the_other(prefix: str) -> None:
    a, b = _pacers(prefix, Limit.per_second(5.0, 1))
    try:
        assert await b.acquire("p") < 100  # slot 0
        queued = asyncio.create_task(b.acquire("p"))  # slot 0.2 s
        backend = b._redis
        assert isinstance(backend, RecordingBackend)
        await wait_until_async(lambda: queued in backend.seqs, within=5)  # reserved: a Redis round trip
        started = time.monotonic()
        await a.pause("p", 1.0)
        assert b._redis is not None
        # A newcomer in the other process queues after the moved slot (0.2 s + 1 s pause + 0.2 s).
        grant = await b._redis.reserve("p", Limit.per_second(5.0, 1), 10.0)
        assert 1.0 < grant.wait_s <= 1.4
        waited_ms = await queued
        assert time.monotonic() - started >= 0.95  # the queued request moved past the pause
        assert waited_ms >= 950
    finally:
        await a.aclose()
        await b.aclose()


# --- Redis going away and coming back -------------------------------------------------------------------


class Proxy:
    """A TCP relay to Redis that can be stopped (Redis unreachable) and started again on its port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def test_redis_down_then_back(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="providers.pacer")
    from urllib.parse import urlsplit

    target = urlsplit(_url())
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    now = [1000.0]

    def clock() -> float:  # drives the retry period only; Redis keeps its own clock
        return now[0]

    backend = RedisBackend(f"redis://127.0.0.1:{proxy.port}{target.path}", prefix=prefix)
    pacer = Pacer(
        {"p": Limit.per_second(10.0, 4)},
        max_wait=10.0,
        redis=backend,
        processes=2,
        clock=clock,
        enabled=lambda: True,
    )
    try:
        await pacer.acquire("p")
        assert (await backend.bucket("p")).seq == 1 and pacer.local.bucket("p").seq == 0
        await proxy.stop()
        await pacer.acquire("p")  # Redis gone: the fallback answers
        await pacer.acquire("p")
        assert pacer.local.bucket("p").seq == 2
        await proxy.start()  # Redis back, but not tried before REDIS_RETRY_S
        await pacer.acquire("p")
        assert pacer.local.bucket("p").seq == 3
        now[0] += REDIS_RETRY_S
        await pacer.acquire("p")
        assert (await backend.bucket("p")).seq == 2 and pacer.local.bucket("p").seq == 3
    finally:
        await pacer.aclose()
        await proxy.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "Redis unreachable" in messages[0] and "reachable again" in messages[1]
