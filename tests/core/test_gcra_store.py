"""The Redis bucket backend against a real Redis: the Lua steps equal the pure math of core/gcra.py,
buckets expire once idle, and a slot given back through one connection is taken through another."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from core.gcra import Bucket, Limit, bucket_reserve, give_back, pause
from core.gcra_store import RedisBackend

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
    name = f"test-gcra-{uuid.uuid4().hex[:12]}"
    yield name
    await _delete_keys(name)


# --- the Lua steps are the pure steps ----------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 8).map(lambda k: k / 8), st.just(0)),
        st.tuples(st.just("give_back"), st.integers(0, 8).map(lambda k: k / 8), st.integers(0, 6)),
        st.tuples(st.just("pause"), st.integers(0, 8).map(lambda k: k / 8), st.integers(1, 12)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(
    ops=OPS,
    limit=st.builds(Limit, st.sampled_from([0.0, 0.1, 0.25, 1.0 / 3]), st.integers(1, 4)),
    max_wait=st.sampled_from([0.0, 0.7, 3.0]),
    # A realistic epoch start: the stored times must keep sub-microsecond precision there.
    start=st.floats(1.7e9, 1.8e9),
)
def test_the_lua_steps_equal_the_pure_math(
    ops: list[tuple[str, float, int]], limit: Limit, max_wait: float, start: float
) -> None:
    async def main() -> None:
        now = start
        prefix = f"test-gcra-{uuid.uuid4().hex[:12]}"
        backend = RedisBackend(_url(), prefix=prefix, clock=lambda: now)
        expected = Bucket()
        try:
            for kind, dt, arg in ops:
                now += dt
                if kind == "reserve":
                    want, expected = bucket_reserve(expected, now, limit=limit, max_wait=max_wait)
                    assert await backend.reserve("p", limit, max_wait) == want
                elif kind == "give_back":
                    seq = expected.seq - arg  # the latest, or an earlier one (a no-op)
                    expected = give_back(expected, seq=seq, interval=limit.interval)
                    await backend.give_back("p", seq, limit)
                else:
                    expected = pause(expected, now, arg / 4)
                    await backend.pause("p", arg / 4)
                assert await backend.bucket("p") == expected
        finally:
            await backend.aclose()
            await _delete_keys(prefix)

    asyncio.run(main())


async def test_buckets_expire_once_idle(prefix: str) -> None:
    backend = RedisBackend(_url(), prefix=prefix)
    try:
        await backend.reserve("p", Limit(1.0, 1), 5.0)
        client = Redis.from_url(_url())
        ttl = await client.pttl(backend.key("p"))
        await client.aclose()
        assert 60_000 < ttl <= 62_000  # a minute after the bucket is idle again
    finally:
        await backend.aclose()


async def test_a_slot_given_back_in_one_process_is_taken_in_the_other(prefix: str) -> None:
    a = RedisBackend(_url(), prefix=prefix)
    b = RedisBackend(_url(), prefix=prefix)
    limit = Limit(1.0, 1)
    try:
        grants = [await a.reserve("p", limit, 10.0) for _ in range(3)]  # slots ~0, ~1, ~2 s
        await b.give_back("p", grants[0].seq, limit)  # not the latest: no-op
        assert (await b.bucket("p")).seq == 3
        await b.give_back("p", grants[2].seq, limit)
        again = await b.reserve("p", limit, 10.0)
        assert again.seq == 3 and again.wait_s == pytest.approx(grants[2].wait_s, abs=0.1)
    finally:
        await a.aclose()
        await b.aclose()
