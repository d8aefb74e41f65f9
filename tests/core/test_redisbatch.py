"""RedisBatch against a real Redis: the reads and writes of one loop turn go as one command, each
caller gets its own answer, and a failure reaches every caller of the batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from core.redisbatch import RedisBatch
from tests.redisutil import scratch_redis

pytestmark = pytest.mark.services


class Spy(Redis):
    """Counts the MGETs and pipelines that reach Redis."""

    mgets = 0
    pipelines = 0

    async def mget(self, *args: Any, **kwargs: Any) -> Any:
        self.mgets += 1
        return await super().mget(*args, **kwargs)

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        self.pipelines += 1
        return super().pipeline(*args, **kwargs)


@pytest.fixture
async def client() -> AsyncIterator[tuple[Spy, str]]:
    async with scratch_redis("batch", Spy) as scratch:
        yield scratch


async def test_one_turn_of_writes_is_one_pipeline_and_of_reads_one_mget(client: tuple[Spy, str]) -> None:
    spy, prefix = client
    batch = RedisBatch(spy)
    await asyncio.gather(*(batch.set_ex(f"{prefix}:{i}", f"v{i}", 60) for i in range(50)))
    assert spy.pipelines == 1
    assert 55 <= await spy.ttl(f"{prefix}:7") <= 60
    keys = [f"{prefix}:{i % 60}" for i in range(120)]  # repeats, and ten keys that do not exist
    values = await asyncio.gather(*(batch.get(k) for k in keys))
    assert spy.mgets == 1
    assert values == [f"v{i % 60}".encode() if i % 60 < 50 else None for i in range(120)]
    # The next turn's calls are a new batch.
    assert await batch.get(f"{prefix}:3") == b"v3" and spy.mgets == 2


async def test_a_failure_reaches_every_caller_and_a_cancelled_caller_spoils_nothing(
    client: tuple[Spy, str],
) -> None:
    spy, prefix = client
    batch = RedisBatch(spy)
    await batch.set_ex(f"{prefix}:a", "1", 60)
    gone = asyncio.ensure_future(batch.get(f"{prefix}:a"))
    kept = asyncio.ensure_future(batch.get(f"{prefix}:a"))
    await asyncio.sleep(0)  # both queued
    gone.cancel()
    assert await kept == b"1"
    nowhere = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    broken = RedisBatch(nowhere)
    results = await asyncio.gather(
        *(broken.get("x") for _ in range(3)), broken.set_ex("y", "1", 1), return_exceptions=True
    )
    await nowhere.aclose()
    assert all(isinstance(r, ConnectionError) or "Connect" in type(r).__name__ for r in results), results
