from __future__ import annotations

import asyncio
import threading
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
    assert len(cache) <= 3
    cache.clear()
    assert len(cache) == 0


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


async def test_a_full_cache_drops_the_least_recently_used_entry_only() -> None:
    """A flood of new keys must not flush the hot ones (every hot read would go to the database)."""
    calls: list[str] = []

    def loader(key: str) -> Callable[[], Awaitable[str]]:
        async def load() -> str:
            calls.append(key)
            return key

        return load

    cache: TTLCache[str] = TTLCache(5.0, max_items=2, clock=Clock())
    for key in ("hot", "cold", "hot", "new"):
        await cache.get_or_load(key, loader(key))
    assert calls == ["hot", "cold", "new"]
    await cache.get_or_load("hot", loader("hot"))
    assert calls == ["hot", "cold", "new"]  # still held: "cold" was the one dropped


async def test_the_clock_can_be_replaced_after_construction() -> None:
    """Module-level caches are built at import; tests drive their time by swapping the clock."""
    calls: list[int] = []

    async def load() -> int:
        calls.append(1)
        return len(calls)

    cache: TTLCache[int] = TTLCache(5.0)
    clock = Clock()
    clock.now = 1e12  # far from time.monotonic()
    cache.clock = clock
    assert await cache.get_or_load("k", load) == 1
    clock.now += 5.0
    assert await cache.get_or_load("k", load) == 2


class _Switch(float):
    """A clock reading that, the first time it is compared, runs another thread's `discard` right
    there and waits for it (up to 0.2 s): a thread switch pinned to the worst bytecode."""

    cache: TTLCache[str]
    other: threading.Thread | None

    def __new__(cls, value: float, cache: TTLCache[str]) -> _Switch:
        self = super().__new__(cls, value)
        self.cache, self.other = cache, None
        return self

    def _switch(self) -> None:
        if self.other is None:
            other = self.other = threading.Thread(target=self.cache.discard, args=(1,))
            other.start()
            other.join(timeout=0.2)  # blocked on the cache's lock: it runs once the caller is done

    def __lt__(self, other: object) -> bool:
        self._switch()
        return float(self) < other  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        self._switch()
        return float(self) > other  # type: ignore[operator]


async def test_a_discard_from_another_thread_during_eviction_is_safe() -> None:
    """Model signals discard from the thread that saved the row, while the loop's thread may be
    evicting: neither may see the other's half-done change."""
    clock = Clock()
    cache: TTLCache[str] = TTLCache(5.0, max_items=3, clock=clock)
    for key in range(3):
        cache.put(key, "v")
    switch = _Switch(1.0, cache)
    cache.clock = lambda: switch
    cache.put(3, "v")  # full: evicts while the other thread discards key 1
    assert switch.other is not None
    switch.other.join()
    cache.clock = clock
    clock.now = 1.0

    async def reload() -> str:
        return "reloaded"

    assert [await cache.get_or_load(k, reload) for k in (1, 2, 3)] == ["reloaded", "v", "v"]
