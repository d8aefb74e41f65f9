"""The pacer: one token bucket per provider, so that we never call a provider faster than its limit.

    from providers.pacer import PacerRejected, pacer_for_loop

    pacer = pacer_for_loop()                         # one per running event loop, closed by loopres
    queue_wait_ms = await pacer.acquire("openai")    # waits for the slot; PacerRejected (429) at once
    ...stream_with_retries(provider, ..., on_rate_limited=functools.partial(pacer.pause, "openai"))

The arithmetic (GCRA with reservations, pauses, give back) is in `core/gcra.py`, the buckets in
`core/gcra_store.py` (in process, or in Redis when `REDIS_URL` is set: one limit for every process);
this module does the waiting and the fallback. Reserving fixes each request's slot in one atomic step,
so the queue is first come, first served across processes and the wait is known before it starts:
a request that would wait longer than `PACER_MAX_WAIT_S` is refused at once. Redis unreachable:
each process falls back to its own bucket at 1/`PACER_PROCESSES` of the rate (docs/pacer.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings

from core import loopres
from core.gcra import Grant, Limit, extra_wait
from core.gcra_store import BucketBackend, InProcessBackend, RedisBackend
from core.outages import REDIS_DOWN
from ops import flags

from ._errors import ProviderError

__all__ = ["Pacer", "PacerRejected", "pacer_for_loop"]

log = logging.getLogger(__name__)

UNLIMITED = Limit(0.0, 1)
# How long a process keeps its fallback bucket before trying Redis again: short enough that a Redis
# restart is noticed within seconds, long enough that a dead Redis costs at most one timeout per period.
REDIS_RETRY_S = 5.0


class PacerRejected(ProviderError):
    """The provider's queue is longer than `PACER_MAX_WAIT_S`: answer 429 with `retry_after` at once."""

    code = "queue_timeout"
    http_status = 429


def _pacer_flag() -> bool:
    return flags.flag_enabled("PACER_ENABLED")


class Pacer:
    """Paces the provider calls of one event loop (in daphne: of one process)."""

    def __init__(
        self,
        limits: Mapping[str, Limit],
        *,
        max_wait: float,
        redis: BucketBackend | None = None,
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

    async def acquire(self, provider: str, limit: Limit | None = None) -> float:
        """Wait for `provider`'s next slot and return the milliseconds waited (0.0 when the
        `PACER_ENABLED` flag is off). Raises `PacerRejected` at once, without waiting, when the
        slot is more than `max_wait` away. `provider` names the bucket (a connection's, or one several
        connections share); `limit`, when given, is its limit instead of the settings'."""
        if not self._enabled():
            return 0.0
        started = self._clock()
        # Not guarded: a cancel during the Redis round trip may leave a slot reserved that we never
        # learned the number of; it stays unused (capacity lost for one interval, never excess).
        backend, limit, grant = await self._reserve(
            provider, self.limit_for(provider) if limit is None else limit
        )
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
                # see core/gcra.py), then re-raise: the caller must see its own cancellation. A second
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

    async def _reserve(self, provider: str, limit: Limit) -> tuple[BucketBackend, Limit, Grant]:
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
        self, backend: BucketBackend, provider: str, grant: Grant, limit: Limit, slot: float
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

    async def _shift(self, backend: BucketBackend, provider: str, default: float) -> float:
        try:
            return await backend.shift(provider)
        except REDIS_DOWN as exc:
            self._redis_failed(exc)
            return default  # unknown: go ahead at the slot we were given

    async def _give_back(self, backend: BucketBackend, provider: str, grant: Grant, limit: Limit) -> None:
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
        text = (
            f"Too many requests to {provider} right now: the queue wait would be {wait:.1f} s, more "
            f"than the {self.max_wait:g} s allowed. Retry after {retry_after:.1f} s."
        )
        # Built from our own figures and the provider's configured name: safe to show users as is.
        return PacerRejected(text, message=text, provider=provider, retry_after=retry_after)


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
            loopres.register(_close_pacer, stage=loopres.Stage.CLIENT)
    return pacer


async def _close_pacer() -> None:
    """Close and forget the running loop's pacer."""
    loop = asyncio.get_running_loop()
    with _lock:
        pacer = _pacers.pop(loop, None)
    if pacer is not None:
        await pacer.aclose()
