"""The Redis coalescer against a real Redis: the lifecycle of a key, and a failure that is answered at
claim time (a follower that polled for it could find it expired and report a lost leader instead)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.redisutil import scratch_redis
from threads.coalesce_redis import RedisCoalescer
from threads.coalesce_store import CoalesceFailed

pytestmark = pytest.mark.services


@pytest.fixture
async def co() -> AsyncIterator[RedisCoalescer]:
    async with scratch_redis("co", Redis) as (client, prefix):
        yield RedisCoalescer(client, prefix)


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


async def test_a_vanished_lease_is_a_lost_leader(pair: tuple[RedisCoalescer, RedisCoalescer]) -> None:
    leader, other = pair  # the leader's process, and another process following it through Redis
    assert (await leader.claim("k")).role == "leader"
    assert (await other.claim("k")).role == "follower"
    waiter = asyncio.create_task(other.wait_info("k"))
    await other._redis.delete(other._k("k"))  # as when a dead leader's lease lapses
    with pytest.raises(CoalesceFailed) as err:
        await asyncio.wait_for(waiter, 5)
    assert err.value.error["code"] == "coalesce_lost"


class Counting(RedisCoalescer):
    """Counts the claims and polls that reach Redis."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redis_claims = 0
        self.polls = 0
        self.gate: asyncio.Event | None = None  # when set, a Redis claim waits for it

    async def _claim_redis(self, key: str) -> Any:
        self.redis_claims += 1
        if self.gate is not None:
            await self.gate.wait()
        return await super()._claim_redis(key)

    async def _poll_info(self, key: str) -> Any:
        self.polls += 1
        return await super()._poll_info(key)


@pytest.fixture
async def pair(co: RedisCoalescer) -> AsyncIterator[tuple[Counting, Counting]]:
    """Two "processes": independent coalescers (their own connections) on one prefix."""
    clients = [Redis.from_url(os.environ["REDIS_URL"]) for _ in range(2)]
    try:
        yield Counting(clients[0], co._prefix), Counting(clients[1], co._prefix)
    finally:
        for client in clients:
            await client.aclose()


async def _burst(co: RedisCoalescer, n: int) -> list[Any]:
    return list(await asyncio.gather(*(co.claim("k") for _ in range(n))))


async def test_a_burst_in_one_process_asks_redis_once_and_follows_its_leader_from_memory(
    pair: tuple[Counting, Counting], settings: Any
) -> None:
    settings.COALESCE_RESULT_TTL_S = 30.0
    here, there = pair
    claims = await _burst(here, 50)
    assert [c.role for c in claims].count("leader") == 1 and here.redis_claims == 1
    waiters = [asyncio.create_task(here.wait_info("k")) for _ in range(49)]
    await here.publish("k", {"request_id": "r"})
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [{"request_id": "r"}] * 49
    assert here.polls == 0  # answered from memory
    # Another process's burst: one Redis claim there, and the published info from Redis.
    assert {(c.role, str(c.info)) for c in await _burst(there, 20)} == {
        ("follower", str({"request_id": "r"}))
    }
    assert there.redis_claims == 1
    # After `finish` this process reads Redis again (the result's TTL lives there).
    await here.finish("k", ok=True)
    assert (await here.claim("k")).info == {"request_id": "r"} and here.redis_claims == 2


async def test_a_leader_failing_fails_its_followers_in_this_process(pair: tuple[Counting, Counting]) -> None:
    here, _ = pair
    await _burst(here, 5)
    waiters = [asyncio.create_task(here.wait_info("k")) for _ in range(4)]
    await asyncio.sleep(0)
    await here.fail("k", {"code": "boom", "message": "it failed", "status": 502})
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5)
    assert all(isinstance(r, CoalesceFailed) and r.error["code"] == "boom" for r in results)
    assert (await here.claim("k")).error == {"code": "boom", "message": "it failed", "status": 502}


async def test_a_released_key_is_answered_by_redis_until_its_lease_lapses(
    pair: tuple[Counting, Counting],
) -> None:
    here, _ = pair
    await here.claim("k")
    await here.publish("k", {"request_id": "r"})
    here.release("k")
    assert (await here.claim("k")).info == {"request_id": "r"} and here.redis_claims == 2
    assert 0 < await here._redis.pttl(here._k("k")) <= 5000  # the lease, no longer renewed


async def test_a_shared_claim_whose_first_caller_is_cancelled_still_gives_one_leader(
    pair: tuple[Counting, Counting],
) -> None:
    here, _ = pair
    here.gate = asyncio.Event()
    first = asyncio.create_task(here.claim("k"))
    await asyncio.sleep(0)
    others = [asyncio.create_task(here.claim("k")) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    here.gate.set()
    claims = await asyncio.wait_for(asyncio.gather(*others), 5)
    assert sorted(c.role for c in claims) == ["follower", "follower", "leader"]
