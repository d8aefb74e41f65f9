"""A tiny per-process cache with a time-to-live, for reads every request repeats (API token -> user,
thread visibility). A burst of 200 identical sends otherwise runs 400 identical queries in the thread
pool, and the leader's own writes queue behind them before the provider is called."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")
_MISSING = object()


class TTLCache(Generic[V]):
    def __init__(
        self, ttl_s: float, *, max_items: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s, self.max_items, self.clock = ttl_s, max_items, clock
        self._items: dict[Hashable, tuple[float, V]] = {}

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        found = self._items.get(key)
        now = self.clock()
        if found is not None and found[0] > now:
            return found[1]
        value = await load()
        if len(self._items) >= self.max_items:
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
            if len(self._items) >= self.max_items:
                self._items.clear()
        self._items[key] = (now + self.ttl_s, value)
        return value

    def clear(self) -> None:
        self._items.clear()
