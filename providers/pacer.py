"""The pacer: one token bucket per provider, so that we never call a provider faster than its limit.

    from providers.pacer import PacerRejected, pacer_for_loop

    pacer = pacer_for_loop()                         # one per running event loop
    queue_wait_ms = await pacer.acquire("openai")    # waits for the slot; PacerRejected (429) at once
    ...stream_with_retries(provider, ..., on_rate_limited=functools.partial(pacer.pause, "openai"))
    await close_pacer()                              # at loop shutdown

The arithmetic (GCRA with reservations, pauses, give back) is in `core/gcra.py`; this
module stores the buckets (`InProcessBackend`, or `RedisBackend` when `REDIS_URL` is set: one limit
for every process) and does the waiting. Reserving fixes each request's slot in one atomic step, so
the queue is first come, first served across processes and the wait is known before it starts:
a request that would wait longer than `PACER_MAX_WAIT_S` is refused at once. Redis unreachable:
each process falls back to its own bucket at 1/`PACER_PROCESSES` of the rate (docs/pacer.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from django.conf import settings
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.gcra import Bucket, Grant, Limit, bucket_reserve, extra_wait, give_back, pause
from ops import flags

from ._errors import ProviderError

__all__ = [
    "InProcessBackend",
    "Pacer",
    "PacerBackend",
    "PacerRejected",
    "RedisBackend",
    "close_pacer",
    "pacer_for_loop",
]

log = logging.getLogger(__name__)

UNLIMITED = Limit(0.0, 1)
KEY_PREFIX = "chatapp:pacer"
# A healthy Redis answers within a millisecond; a dead or hung one may delay a request by this much
# (once per REDIS_RETRY_S) before the process falls back to its own bucket.
REDIS_TIMEOUT_S = 0.5
# How long a process keeps its fallback bucket before trying Redis again: short enough that a Redis
# restart is noticed within seconds, long enough that a dead Redis costs at most one timeout per period.
REDIS_RETRY_S = 5.0
# Redis errors that mean "unreachable" (a script error is a bug and propagates).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class PacerRejected(ProviderError):
    """The provider's queue is longer than `PACER_MAX_WAIT_S`: answer 429 with `retry_after` at once."""

    code = "queue_timeout"
    http_status = 429


class PacerBackend(Protocol):
    """Where the buckets live. Each method is one atomic step on one provider's bucket."""

    async def reserve(self, provider: str, limit: Limit, max_wait: float) -> Grant: ...
    async def give_back(self, provider: str, seq: int, limit: Limit) -> None: ...
    async def pause(self, provider: str, retry_after_s: float) -> None: ...
    async def shift(self, provider: str) -> float: ...
    async def aclose(self) -> None: ...


class InProcessBackend:
    """Buckets in this process's memory: exact within the process, unknown to the others."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}
        # The methods never await while holding it; it only guards against a second thread's loop.
        self._lock = threading.Lock()

    async def reserve(self, provider: str, limit: Limit, max_wait: float) -> Grant:
        with self._lock:
            bucket = self._buckets.get(provider, Bucket())
            grant, self._buckets[provider] = bucket_reserve(
                bucket, self._clock(), limit=limit, max_wait=max_wait
            )
        return grant

    async def give_back(self, provider: str, seq: int, limit: Limit) -> None:
        with self._lock:
            bucket = self._buckets.get(provider, Bucket())
            self._buckets[provider] = give_back(bucket, seq=seq, interval=limit.interval)

    async def pause(self, provider: str, retry_after_s: float) -> None:
        with self._lock:
            bucket = self._buckets.get(provider, Bucket())
            self._buckets[provider] = pause(bucket, self._clock(), retry_after_s)

    async def shift(self, provider: str) -> float:
        return self._buckets.get(provider, Bucket()).shift

    def bucket(self, provider: str) -> Bucket:
        """The stored state (tests, debugging)."""
        return self._buckets.get(provider, Bucket())

    async def aclose(self) -> None:
        return None


# The same steps as _pacer_math, in Lua, so that each runs atomically inside Redis. Times are stored
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
    """Buckets in Redis, one hash per provider (`<prefix>:<provider>`), changed only by Lua scripts,
    so every process shares one limit and one queue. Owns one connection pool; bound to one loop."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = KEY_PREFIX,
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

    def key(self, provider: str) -> str:
        return f"{self._prefix}:{provider}"

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    async def reserve(self, provider: str, limit: Limit, max_wait: float) -> Grant:
        args: list[str | int] = [self._now(), repr(limit.interval), limit.burst, repr(max_wait)]
        admitted, wait, retry_after, seq, shift = await self._reserve(keys=[self.key(provider)], args=args)
        return Grant(
            bool(admitted), float(wait), float(retry_after) if retry_after else None, int(seq), float(shift)
        )

    async def give_back(self, provider: str, seq: int, limit: Limit) -> None:
        await self._give_back(keys=[self.key(provider)], args=[self._now(), repr(limit.interval), seq])

    async def pause(self, provider: str, retry_after_s: float) -> None:
        await self._pause(keys=[self.key(provider)], args=[self._now(), repr(retry_after_s)])

    async def shift(self, provider: str) -> float:
        return float(await self._redis.hget(self.key(provider), "shift") or 0.0)

    async def bucket(self, provider: str) -> Bucket:
        """The stored state (tests, debugging)."""
        tat, paused, shift, seq = await self._redis.hmget(
            self.key(provider), ["tat", "paused_until", "shift", "seq"]
        )
        return Bucket(float(tat or 0), float(paused or -math.inf), float(shift or 0), int(seq or 0))

    async def aclose(self) -> None:
        await self._redis.aclose()


def _pacer_flag() -> bool:
    return flags.flag_enabled("PACER_ENABLED")


class Pacer:
    """Paces the provider calls of one event loop (in daphne: of one process)."""

    def __init__(
        self,
        limits: Mapping[str, Limit],
        *,
        max_wait: float,
        redis: PacerBackend | None = None,
        processes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        enabled: Callable[[], bool] = _pacer_flag,
    ) -> None:
        self.limits = dict(limits)
        self.max_wait = max_wait
        self._redis = redis
        # Without Redis the only buckets; with Redis the fallback while Redis is unreachable.
        self._local = InProcessBackend(clock)
        self._processes = max(1, processes)
        self._clock, self._sleep, self._enabled = clock, sleep, enabled
        self._down_since: float | None = None
        self._retry_at = 0.0

    @classmethod
    def from_settings(cls, **options: Any) -> Pacer:
        """A pacer configured by `PACER_LIMITS`, `PACER_MAX_WAIT_S`, `PACER_PROCESSES`, `REDIS_URL`."""
        limits = {
            name: Limit.per_second(float(conf["rps"]), int(conf["burst"]))
            for name, conf in settings.PACER_LIMITS.items()
        }
        prefix = f"{settings.REDIS_KEY_PREFIX}:pacer"
        redis = RedisBackend(settings.REDIS_URL, prefix=prefix) if settings.REDIS_URL else None
        options.setdefault("redis", redis)
        options.setdefault("processes", settings.PACER_PROCESSES)
        return cls(limits, max_wait=settings.PACER_MAX_WAIT_S, **options)

    def limit_for(self, provider: str) -> Limit:
        """The provider's limit (a provider missing from the settings is unlimited, but pausable)."""
        return self.limits.get(provider, UNLIMITED)

    @property
    def local(self) -> InProcessBackend:
        """The in-process buckets (the fallback when Redis is configured)."""
        return self._local

    async def acquire(self, provider: str) -> float:
        """Wait for `provider`'s next slot and return the milliseconds waited (0.0 when the
        `PACER_ENABLED` flag is off). Raises `PacerRejected` at once, without waiting, when the
        slot is more than `max_wait` away."""
        if not self._enabled():
            return 0.0
        started = self._clock()
        # Not guarded: a cancel during the Redis round trip may leave a slot reserved that we never
        # learned the number of; it stays unused (capacity lost for one interval, never excess).
        backend, limit, grant = await self._reserve(provider, self.limit_for(provider))
        if not grant.admitted:
            raise self._rejected(provider, grant.wait_s, grant.retry_after_s or 0.0)
        if grant.wait_s > 0:
            # Redis fixed the slot between our request and its reply: count the wait from the middle,
            # so that a slow reply (a busy loop) does not make the admission late by that much.
            slot = (started + self._clock()) / 2 + grant.wait_s
            try:
                await self._wait(backend, provider, grant, limit, slot)
            except asyncio.CancelledError:
                # Cancelled while queued (Stop, client gone, shutdown): the slot was never used. Give
                # it back so the next request takes it (possible while it is the latest reservation;
                # see _pacer_math), then re-raise: the caller must see its own cancellation. A second
                # cancel during the give-back only leaves the slot unused (capacity lost, never excess).
                await self._give_back(backend, provider, grant, limit)
                raise
        return (self._clock() - started) * 1000

    async def pause(self, provider: str, retry_after_s: float) -> None:
        """Admit nobody for `provider` during the next `retry_after_s` seconds, in every process
        (an upstream 429 with Retry-After). Waiting requests keep their order and move later."""
        if not retry_after_s > 0:
            return
        # The local buckets too: if Redis becomes unreachable now, the fallback still honours it.
        await self._local.pause(provider, retry_after_s)
        if self._redis is not None and self._down_since is None:
            try:
                await self._redis.pause(provider, retry_after_s)
            except REDIS_DOWN as exc:
                self._redis_failed(exc)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    # --- internals ------------------------------------------------------------------------------

    async def _reserve(self, provider: str, limit: Limit) -> tuple[PacerBackend, Limit, Grant]:
        """Reserve in Redis when it is configured and reachable, else in the local buckets."""
        if self._redis is not None and self._try_redis():
            try:
                grant = await self._redis.reserve(provider, limit, self.max_wait)
            except REDIS_DOWN as exc:
                self._redis_failed(exc)
            else:
                self._redis_ok()
                return self._redis, limit, grant
        if self._redis is not None:
            # Every process falls back alike, so 1/PACER_PROCESSES each keeps the sum within the limit.
            limit = limit.divided(self._processes)
        return self._local, limit, await self._local.reserve(provider, limit, self.max_wait)

    async def _wait(
        self, backend: PacerBackend, provider: str, grant: Grant, limit: Limit, slot: float
    ) -> None:
        """Sleep until the granted `slot` (our clock), then as long as pauses set meanwhile moved it."""
        waited, shift = grant.wait_s, grant.shift
        await self._sleep(max(0.0, slot - self._clock()))
        while (extra := extra_wait(shift, current := await self._shift(backend, provider, shift))) > 0:
            if waited + extra > self.max_wait:
                # The pause pushed our slot past the longest wait we promise: answer 429 now rather
                # than keep the request waiting and still late.
                await self._give_back(backend, provider, grant, limit)
                raise self._rejected(provider, waited + extra, extra)
            await self._sleep(extra)
            waited, shift = waited + extra, current

    async def _shift(self, backend: PacerBackend, provider: str, default: float) -> float:
        try:
            return await backend.shift(provider)
        except REDIS_DOWN as exc:
            self._redis_failed(exc)
            return default  # unknown: go ahead at the slot we were given

    async def _give_back(self, backend: PacerBackend, provider: str, grant: Grant, limit: Limit) -> None:
        try:
            await backend.give_back(provider, grant.seq, limit)
        except REDIS_DOWN as exc:
            # Never retried (a give-back must run at most once); the slot just stays unused.
            self._redis_failed(exc)

    def _try_redis(self) -> bool:
        if self._down_since is None:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        # This request probes Redis; the others keep the fallback until the probe answers.
        self._retry_at = now + REDIS_RETRY_S
        return True

    def _redis_ok(self) -> None:
        if self._down_since is not None:
            log.warning(
                "pacer: Redis is reachable again after %.1f s; pacing with the shared buckets again",
                self._clock() - self._down_since,
            )
            self._down_since = None

    def _redis_failed(self, exc: BaseException) -> None:
        now = self._clock()
        self._retry_at = now + REDIS_RETRY_S
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "pacer: Redis unreachable (%s: %s); this process paces alone at 1/%d of each limit "
                "(PACER_PROCESSES) and retries Redis every %.0f s. Check REDIS_URL and that Redis runs.",
                type(exc).__name__,
                exc,
                self._processes,
                REDIS_RETRY_S,
            )

    def _rejected(self, provider: str, wait: float, retry_after: float) -> PacerRejected:
        return PacerRejected(
            f"Too many requests to {provider} right now: the queue wait would be {wait:.1f} s, more "
            f"than the {self.max_wait:g} s allowed. Retry after {retry_after:.1f} s.",
            provider=provider,
            retry_after=retry_after,
        )


# One pacer per event loop: a RedisBackend's connections belong to the loop that opened them.
_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def pacer_for_loop() -> Pacer:
    """The running loop's pacer, built from the settings on first use."""
    loop = asyncio.get_running_loop()
    with _lock:
        pacer = _pacers.get(loop)
        if pacer is None:
            pacer = _pacers[loop] = Pacer.from_settings()
    return pacer


async def close_pacer() -> None:
    """Close and forget the running loop's pacer (ASGI lifespan shutdown, tests). Safe to call twice."""
    loop = asyncio.get_running_loop()
    with _lock:
        pacer = _pacers.pop(loop, None)
    if pacer is not None:
        await pacer.aclose()
