"""The in-process coalescer forgets on time (#16 item 8): finished keys after their TTL and request_id
records after ALIAS_TTL_S, whatever is claimed next (it used to clean a key only when that same key was
claimed again, and aliases only past 100,000 of them). Time is an injected clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from threads.coalesce_store import ALIAS_TTL_S, LEASE_S, InProcessCoalescer

if TYPE_CHECKING:
    from threads.coalesce_store import Ref


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def co(clock: Clock) -> InProcessCoalescer:
    return InProcessCoalescer(clock=clock)


def _ref(n: int) -> Ref:
    return {"request_id": f"r{n}", "user_message_id": 2 * n, "assistant_message_id": 2 * n + 1}


async def _burst(co: InProcessCoalescer, key: str, *, ok: bool = True) -> None:
    assert (await co.claim(key)).role == "leader"
    await co.publish(key, {"request_id": "r1"})
    await co.finish(key, ok=ok)


async def test_finished_keys_are_forgotten_after_their_ttl(
    co: InProcessCoalescer, clock: Clock, settings: object
) -> None:
    for i in range(100):
        await _burst(co, f"k{i}", ok=i % 2 == 0)
    assert len(co._entries) == 100
    clock.now += 31.0  # past COALESCE_RESULT_TTL_S (30 s) and COALESCE_ERROR_TTL_S (2 s)
    await co.claim("another")
    assert list(co._entries) == ["another"]


async def test_a_key_still_kept_is_not_forgotten_early(co: InProcessCoalescer, clock: Clock) -> None:
    await _burst(co, "done", ok=True)
    clock.now += 10.0
    await co.claim("another")
    assert (await co.claim("done")).role == "follower"  # within its 30 s


async def test_released_keys_lapse_like_a_lease(co: InProcessCoalescer, clock: Clock) -> None:
    for i in range(10):
        await co.claim(f"k{i}")
        co.release(f"k{i}")
    clock.now += LEASE_S + 0.1
    await co.claim("another")
    assert list(co._entries) == ["another"]


async def test_a_leader_still_working_is_kept(co: InProcessCoalescer, clock: Clock) -> None:
    await co.claim("working")
    clock.now += 3600.0
    await co.claim("another")
    assert (await co.claim("working")).role == "follower"


async def test_a_key_claimed_again_keeps_its_new_life(co: InProcessCoalescer, clock: Clock) -> None:
    """The expiry of a key's old life must not remove its new one."""
    await _burst(co, "k", ok=False)  # kept 2 s
    clock.now += 3.0
    assert (await co.claim("k")).role == "leader"  # a new burst of the same key
    clock.now += 100.0
    await co.claim("another")
    assert (await co.claim("k")).role == "follower"


async def test_request_id_records_are_forgotten_after_the_window(
    co: InProcessCoalescer, clock: Clock
) -> None:
    for i in range(100):
        await co.alias_set(f"rid:1:{i}", "fp", _ref(i))
    clock.now += ALIAS_TTL_S - 1
    await co.alias_set("rid:1:late", "fp", _ref(999))
    assert len(co._aliases) == 101  # all still within their 24 h
    clock.now += 2
    await co.alias_set("rid:1:later", "fp", _ref(1000))
    assert sorted(co._aliases) == ["rid:1:late", "rid:1:later"]
