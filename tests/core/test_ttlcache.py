from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from core.ttlcache import TTLCache


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_loads_once_per_ttl() -> None:
    clock, calls = Clock(), []

    async def load() -> int:
        calls.append(clock.now)
        return len(calls)

    cache: TTLCache[int] = TTLCache(5.0, clock=clock)
    assert [await cache.get_or_load("k", load) for _ in range(3)] == [1, 1, 1]
    clock.now = 4.9
    assert await cache.get_or_load("k", load) == 1
    clock.now = 5.0
    assert await cache.get_or_load("k", load) == 2 and calls == [0.0, 5.0]


async def test_bounded_and_clearable() -> None:
    cache: TTLCache[str] = TTLCache(5.0, max_items=3, clock=Clock())

    async def value() -> str:
        return "v"

    for key in range(10):
        await cache.get_or_load(key, value)
    assert len(cache._items) <= 3
    cache.clear()
    assert cache._items == {}


async def test_discard_forgets_one_key() -> None:
    """Revoking an API token drops its cached lookup at once (accounts/signals.py)."""
    calls: list[str] = []

    def loader(key: str) -> Callable[[], Awaitable[str]]:
        async def load() -> str:
            calls.append(key)
            return f"{key}{len(calls)}"

        return load

    cache: TTLCache[str] = TTLCache(5.0, clock=Clock())
    assert [await cache.get_or_load(k, loader(k)) for k in ("a", "b")] == ["a1", "b2"]
    cache.discard("a")
    cache.discard("missing")  # no error
    assert await cache.get_or_load("a", loader("a")) == "a3"
    assert await cache.get_or_load("b", loader("b")) == "b2" and calls == ["a", "b", "a"]


async def test_concurrent_loads_share_one_call() -> None:
    calls, gate = [], asyncio.Event()

    async def load() -> int:
        calls.append(1)
        await gate.wait()
        return 7

    cache: TTLCache[int] = TTLCache(5.0, clock=Clock())
    waiters = [asyncio.create_task(cache.get_or_load("k", load)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == [7] * 50
    assert calls == [1]


async def test_a_miss_is_remembered_for_the_negative_ttl_only() -> None:
    """A thread not found now may be created in a moment: None is kept for the shorter time."""
    clock, results = Clock(), [None, "found"]

    async def load() -> str | None:
        return results.pop(0)

    cache: TTLCache[str | None] = TTLCache(30.0, negative_ttl_s=2.0, clock=clock)
    assert await cache.get_or_load("k", load) is None
    clock.now = 1.9
    assert await cache.get_or_load("k", load) is None  # still the remembered miss
    clock.now = 2.0
    assert await cache.get_or_load("k", load) == "found"
    clock.now = 31.9
    assert await cache.get_or_load("k", load) == "found"  # a value lives for the full ttl


async def test_a_put_value_is_served_without_a_load() -> None:
    async def never() -> str:
        raise AssertionError("loaded although the value was put")

    cache: TTLCache[str] = TTLCache(5.0, clock=Clock())
    cache.put(7, "seven")
    assert await cache.get_or_load(7, never) == "seven"
