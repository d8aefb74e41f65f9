"""A per-process cache with a time-to-live, for reads every request of a burst repeats (API token ->
user, thread visibility). Concurrent loads of one key share one load, so a burst of 200 identical
sends runs one query, not 200 that the leader's own writes would queue behind.

Storage, expiry and the bound are cachetools' `TLRUCache` (a TTL per item, so a miss can live shorter;
least recently used out first). The shared async load is ours: async-lru's `alru_cache(ttl=)` has one
TTL for every result, no `put` for a caller that has just written the value, and no injectable clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TLRUCache

from core.singleflight import Singleflight

V = TypeVar("V")


class TTLCache(Generic[V]):
    """`ttl_s` for every value; `negative_ttl_s`, if given, for a loaded None instead (a miss that may
    stop being one: a row created meanwhile). `clock` may be replaced at any time (tests drive it)."""

    def __init__(
        self,
        ttl_s: float,
        *,
        negative_ttl_s: float | None = None,
        max_items: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self.negative_ttl_s = ttl_s if negative_ttl_s is None else negative_ttl_s
        self._items: TLRUCache[Hashable, V] = TLRUCache(max_items, self._expires, timer=self._now)
        # TLRUCache is not thread-safe, and discard() comes from model signals on other threads.
        self._lock = threading.Lock()
        self._loads: Singleflight[V] = Singleflight()

    def _now(self) -> float:
        return self.clock()

    def _expires(self, _key: Hashable, value: V, now: float) -> float:
        return now + (self.ttl_s if value is not None else self.negative_ttl_s)

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        with self._lock:
            try:
                return self._items[key]
            except KeyError:
                pass
        return await self._loads.do(key, lambda: self._load(key, load))

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        value = await load()
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: V) -> None:
        """Remember `value` for `key` as if just loaded (a caller that has just written it)."""
        with self._lock:
            self._items[key] = value

    def discard(self, key: Hashable) -> None:
        """Forget one key (its next read loads again)."""
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        with self._lock:
            return len(self._items)
