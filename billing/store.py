"""Budget counters: what each user has spent plus reserved, per budget and period, shared by every
process (Redis) or kept in this one.

    admitted, blocked = await store.reserve(checks)    # all or nothing, atomically
    await store.settle(keys_and_deltas)                 # the real usage replaces the reservation

A counter starts from the database's record of the period (the caller reads it when the store says a
key is missing) and lives until its period ends plus a day. The database is the record: a counter lost
(Redis flushed) is rebuilt from it.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core import loopres
from core.redisconn import redis_for_loop


@dataclass(frozen=True, slots=True)
class Check:
    key: str
    limit: int
    reserve: int
    ttl_s: int
    start: int | None = None  # the period's spend from the database, when the key is missing


MISSING = -1

# KEYS: counters; ARGV: per key (limit, reserve, ttl, start or ""). Returns {1} admitted (every counter
# grew by its reservation), {0, i} refused by key i (nothing changed), {-1, i} key i is missing and no
# start was given (read the database, call again).
_RESERVE_LUA = """
local n = #KEYS
for i = 1, n do
  local start = ARGV[(i - 1) * 4 + 4]
  if redis.call('EXISTS', KEYS[i]) == 0 then
    if start == '' then return {-1, i} end
    redis.call('SET', KEYS[i], start, 'EX', tonumber(ARGV[(i - 1) * 4 + 3]), 'NX')
  end
end
for i = 1, n do
  if tonumber(redis.call('GET', KEYS[i])) >= tonumber(ARGV[(i - 1) * 4 + 1]) then return {0, i} end
end
for i = 1, n do redis.call('INCRBY', KEYS[i], ARGV[(i - 1) * 4 + 2]) end
return {1, 0}
"""
# Adjust counters that still exist (a missing one is rebuilt from the database, which has the charge).
_SETTLE_LUA = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i]) end
end
return 1
"""


class InProcessStore:
    """One process's counters (no REDIS_URL): atomic on its event loop, since nothing awaits inside."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    async def reserve(self, checks: list[Check]) -> tuple[int, int]:
        for i, c in enumerate(checks, 1):
            if c.key not in self.counters:
                if c.start is None:
                    return MISSING, i
                self.counters[c.key] = c.start
        for i, c in enumerate(checks, 1):
            if self.counters[c.key] >= c.limit:
                return 0, i
        for c in checks:
            self.counters[c.key] += c.reserve
        return 1, 0

    async def settle(self, deltas: list[tuple[str, int]]) -> None:
        for key, delta in deltas:
            if key in self.counters:
                self.counters[key] += delta


class RedisStore:
    def __init__(self, redis: Any) -> None:
        self._reserve = redis.register_script(_RESERVE_LUA)
        self._settle = redis.register_script(_SETTLE_LUA)

    async def reserve(self, checks: list[Check]) -> tuple[int, int]:
        args: list[Any] = []
        for c in checks:
            args += [c.limit, c.reserve, c.ttl_s, "" if c.start is None else c.start]
        verdict, index = await self._reserve(keys=[c.key for c in checks], args=args)
        return int(verdict), int(index)

    async def settle(self, deltas: list[tuple[str, int]]) -> None:
        if deltas:
            await self._settle(keys=[k for k, _ in deltas], args=[d for _, d in deltas])


Store = InProcessStore | RedisStore
_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Store] = weakref.WeakKeyDictionary()


def budget_store() -> Store:
    """The running loop's store: Redis (the loop's client) when REDIS_URL is set."""
    loop = asyncio.get_running_loop()
    found = _stores.get(loop)
    if found is None:
        found = _stores[loop] = RedisStore(redis_for_loop()) if settings.REDIS_URL else InProcessStore()
        loopres.register(_forget, stage=loopres.Stage.CLIENT)
    return found


async def _forget() -> None:
    _stores.pop(asyncio.get_running_loop(), None)
