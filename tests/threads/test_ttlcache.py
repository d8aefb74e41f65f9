from __future__ import annotations

from threads.ttlcache import TTLCache


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
