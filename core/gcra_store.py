"""Where GCRA buckets live: in this process (`InProcessBackend`) or in Redis (`RedisBackend`, shared by
every process). Each method is one atomic step of `core/gcra.py` on one key's bucket; the Lua scripts
are those steps, kept identical to the pure ones (tests/core/test_gcra_store.py compares them).

Used by the provider pacer (`providers/pacer.py`, one key per provider) and the per-user send budget
(`threads/quotas.py`, one key per user, `max_wait=0`: a refused reservation is "over budget").
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.gcra import Bucket, Grant, Limit, bucket_reserve, give_back, pause

__all__ = ["REDIS_TIMEOUT_S", "BucketBackend", "InProcessBackend", "RedisBackend"]

# A healthy Redis answers within a millisecond; a dead or hung one delays the caller by this much
# before it can fall back to its own buckets.
REDIS_TIMEOUT_S = 0.5


class BucketBackend(Protocol):
    """Where the buckets live. Each method is one atomic step on one key's bucket."""

    async def reserve(self, name: str, limit: Limit, max_wait: float) -> Grant: ...
    async def give_back(self, name: str, seq: int, limit: Limit) -> None: ...
    async def pause(self, name: str, retry_after_s: float) -> None: ...
    async def shift(self, name: str) -> float: ...
    async def aclose(self) -> None: ...


class InProcessBackend:
    """Buckets in this process's memory: exact within the process, unknown to the others."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}
        # The methods never await while holding it; it only guards against a second thread's loop.
        self._lock = threading.Lock()

    async def reserve(self, name: str, limit: Limit, max_wait: float) -> Grant:
        with self._lock:
            bucket = self._buckets.get(name, Bucket())
            grant, self._buckets[name] = bucket_reserve(bucket, self._clock(), limit=limit, max_wait=max_wait)
        return grant

    async def give_back(self, name: str, seq: int, limit: Limit) -> None:
        with self._lock:
            bucket = self._buckets.get(name, Bucket())
            self._buckets[name] = give_back(bucket, seq=seq, interval=limit.interval)

    async def pause(self, name: str, retry_after_s: float) -> None:
        with self._lock:
            bucket = self._buckets.get(name, Bucket())
            self._buckets[name] = pause(bucket, self._clock(), retry_after_s)

    async def shift(self, name: str) -> float:
        return self._buckets.get(name, Bucket()).shift

    def bucket(self, name: str) -> Bucket:
        """The stored state (tests, debugging)."""
        return self._buckets.get(name, Bucket())

    async def aclose(self) -> None:
        return None


# The same steps as core/gcra.py, in Lua, so that each runs atomically inside Redis. Times are stored
# with %.17g (Lua's default %.14g would round epoch seconds to 0.1 ms). ARGV[1] is "now" in seconds,
# or empty for the Redis server's clock: one clock for every process, whatever their hosts' skew.
_LUA_PROLOGUE = """
local key = KEYS[1]
local function f(x) return string.format('%.17g', x) end
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function keep(tat, paused)
  redis.call('PEXPIRE', key, math.ceil((math.max(tat, paused) - now + 60) * 1000))
end
local b = redis.call('HMGET', key, 'tat', 'paused_until', 'shift', 'seq')
local tat, paused = tonumber(b[1]) or 0, tonumber(b[2]) or -math.huge
local shift, seq = tonumber(b[3]) or 0, tonumber(b[4]) or 0
"""
_RESERVE_LUA = (
    _LUA_PROLOGUE
    + """
local interval, burst, max_wait = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tolerance = (burst - 1) * interval
local wait = math.max(now, tat - tolerance, paused) - now
if wait > max_wait then return {0, f(wait), f(wait - max_wait), 0, f(shift)} end
tat = math.max(tat, now, paused + tolerance) + interval
seq = seq + 1
redis.call('HSET', key, 'tat', f(tat), 'seq', seq)
keep(tat, paused)
return {1, f(wait), '', seq, f(shift)}
"""
)
_GIVE_BACK_LUA = (
    _LUA_PROLOGUE
    + """
if seq ~= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', key, 'tat', f(tat - tonumber(ARGV[2])), 'seq', seq - 1)
return 1
"""
)
_PAUSE_LUA = (
    _LUA_PROLOGUE
    + """
local until_ = now + tonumber(ARGV[2])
local floor = math.max(now, paused)
if until_ <= floor then return 0 end
if tat > now then
  local delta = until_ - floor
  tat, shift = tat + delta, shift + delta
  redis.call('HSET', key, 'tat', f(tat), 'shift', f(shift))
end
redis.call('HSET', key, 'paused_until', f(until_))
keep(tat, until_)
return 1
"""
)


class RedisBackend:
    """Buckets in Redis, one hash per name (`<prefix>:<name>`), changed only by Lua scripts,
    so every process shares one limit and one queue. Owns one connection pool; bound to one loop."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        timeout: float = REDIS_TIMEOUT_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        # No retries: a reservation is not idempotent (a retried one could take two slots), and a
        # dead Redis must fail fast so the request can use the fallback bucket.
        self._redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._prefix = prefix
        # None: the scripts read the Redis server's clock. Tests pass one to compare with the pure math.
        self._clock = clock
        self._reserve = self._redis.register_script(_RESERVE_LUA)
        self._give_back = self._redis.register_script(_GIVE_BACK_LUA)
        self._pause = self._redis.register_script(_PAUSE_LUA)

    def key(self, name: str) -> str:
        return f"{self._prefix}:{name}"

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    async def reserve(self, name: str, limit: Limit, max_wait: float) -> Grant:
        args: list[str | int] = [self._now(), repr(limit.interval), limit.burst, repr(max_wait)]
        admitted, wait, retry_after, seq, shift = await self._reserve(keys=[self.key(name)], args=args)
        return Grant(
            bool(admitted), float(wait), float(retry_after) if retry_after else None, int(seq), float(shift)
        )

    async def give_back(self, name: str, seq: int, limit: Limit) -> None:
        await self._give_back(keys=[self.key(name)], args=[self._now(), repr(limit.interval), seq])

    async def pause(self, name: str, retry_after_s: float) -> None:
        await self._pause(keys=[self.key(name)], args=[self._now(), repr(retry_after_s)])

    async def shift(self, name: str) -> float:
        return float(await self._redis.hget(self.key(name), "shift") or 0.0)

    async def bucket(self, name: str) -> Bucket:
        """The stored state (tests, debugging)."""
        tat, paused, shift, seq = await self._redis.hmget(
            self.key(name), ["tat", "paused_until", "shift", "seq"]
        )
        return Bucket(float(tat or 0), float(paused or -math.inf), float(shift or 0), int(seq or 0))

    async def aclose(self) -> None:
        await self._redis.aclose()
