"""The Redis coalescer against a real Redis: the lifecycle of a key, and a failure that is answered at
claim time (a follower that polled for it could find it expired and report a lost leader instead)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from providers.coalescer import CoalesceFailed, RedisCoalescer

pytestmark = pytest.mark.services


@pytest.fixture
async def co() -> AsyncIterator[RedisCoalescer]:
    client = Redis.from_url(os.environ["REDIS_URL"])
    prefix = f"test-co-{uuid.uuid4().hex[:12]}"
    try:
        yield RedisCoalescer(client, prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_leader_publishes_then_followers_get_the_info(co: RedisCoalescer, settings: Any) -> None:
    settings.COALESCE_RESULT_TTL_S = 30.0
    assert (await co.claim("k")).role == "leader"
    follower = await co.claim("k")
    assert follower.role == "follower" and follower.info is None and follower.error is None
    waiter = asyncio.create_task(co.wait_info("k"))
    await co.publish("k", {"request_id": "r"})
    assert await asyncio.wait_for(waiter, 5) == {"request_id": "r"}
    await co.finish("k", ok=True)
    assert await co.claim("k") == type(follower)("follower", {"request_id": "r"})


async def test_a_failure_is_answered_at_claim_and_forgotten_after_the_error_ttl(
    co: RedisCoalescer, settings: Any
) -> None:
    settings.COALESCE_ERROR_TTL_S = 0.2
    error = {"code": "rate_limited", "message": "slow down", "status": 429, "retry_after": 1}
    assert (await co.claim("k")).role == "leader"
    await co.fail("k", error)
    follower = await co.claim("k")
    # The error comes with the claim: nothing left to poll, so the entry expiring next cannot turn
    # a 429 into "the identical request went away" (a 502 seen in CI under a burst of 429s).
    assert follower.role == "follower" and follower.error == error
    assert 0 < await co._redis.pttl(co._k("k")) <= 200  # kept for the error TTL only, then Redis drops it
    await co._redis.delete(co._k("k"))  # as it expires
    assert (await co.claim("k")).role == "leader"


async def test_a_vanished_lease_is_a_lost_leader(co: RedisCoalescer) -> None:
    assert (await co.claim("k")).role == "leader"
    waiter = asyncio.create_task(co.wait_info("k"))
    await co._redis.delete(co._k("k"))  # as when a dead leader's lease lapses
    with pytest.raises(CoalesceFailed) as err:
        await asyncio.wait_for(waiter, 5)
    assert err.value.error["code"] == "coalesce_lost"
