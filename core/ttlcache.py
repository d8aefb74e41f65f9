"""A per-process cache with a time-to-live, for reads every request of a burst repeats (API token ->
user, thread visibility). Concurrent loads of one key share one load, so a burst of 200 identical
sends runs one query, not 200 that the leader's own writes would queue behind."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from core.singleflight import Singleflight

V = TypeVar("V")


class TTLCache(Generic[V]):
    """`ttl_s` for every value; `negative_ttl_s`, if given, for a loaded None instead (a miss that may
    stop being one: a row created meanwhile)."""

    def __init__(
        self,
        ttl_s: float,
        *,
        negative_ttl_s: float | None = None,
        max_items: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_items, self.clock = ttl_s, max_items, clock
        self.negative_ttl_s = ttl_s if negative_ttl_s is None else negative_ttl_s
        self._items: dict[Hashable, tuple[float, V]] = {}
        self._loads: Singleflight[V] = Singleflight()

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        found = self._items.get(key)
        if found is not None and found[0] > self.clock():
            return found[1]
        return await self._loads.do(key, lambda: self._load(key, load))

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        value = await load()
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: V) -> None:
        """Remember `value` for `key` as if just loaded (a caller that has just written it)."""
        now = self.clock()
        if len(self._items) >= self.max_items:
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
            if len(self._items) >= self.max_items:
                self._items.clear()
        self._items[key] = (now + (self.ttl_s if value is not None else self.negative_ttl_s), value)

    def discard(self, key: Hashable) -> None:
        """Forget one key (its next read loads again)."""
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()
