"""Audit retention that runs by itself: every pass of each server process's background sweep
(threads/sweep.py) calls `audit_retention().prune_if_due()`; once per UTC day, the one process that
claims the day deletes the audit rows older than AUDIT_RETENTION_DAYS. The claim is a Redis `SET NX`
shared by every process with REDIS_URL, else this process's memory (one process: `make run`).
`manage.py prune_audit` prunes by hand, whenever it is run."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from django.conf import settings

from core.dbasync import db_async

log = logging.getLogger(__name__)

DAY_S = 86_400
# A claim outlives its day, so a process whose clock lags a little behind cannot claim the day again.
CLAIM_TTL_S = 2 * DAY_S


def prune_day(now_s: float) -> int:
    """The UTC day (days since the epoch) a wall-clock time falls on (pure)."""
    return int(now_s // DAY_S)


class DayClaims(Protocol):
    """Who prunes a day: `claim` is true for exactly one caller per day across the processes sharing
    the backend; `release` gives the day back (the prune failed, another pass may retry)."""

    async def claim(self, day: int) -> bool: ...

    async def release(self, day: int) -> None: ...


class MemoryClaims:
    """One process's claims: each day once."""

    def __init__(self) -> None:
        self._claimed: set[int] = set()

    async def claim(self, day: int) -> bool:
        if day in self._claimed:
            return False
        self._claimed = {d for d in self._claimed if d >= day - 2} | {day}  # older days cannot recur
        return True

    async def release(self, day: int) -> None:
        self._claimed.discard(day)


class RedisClaims:
    """Claims shared by every process on one Redis: a key per day, set once."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix

    def _key(self, day: int) -> str:
        return f"{self.prefix}:audit-prune:{day}"

    async def claim(self, day: int) -> bool:
        return bool(await self.redis.set(self._key(day), "1", nx=True, ex=CLAIM_TTL_S))

    async def release(self, day: int) -> None:
        await self.redis.delete(self._key(day))


class AuditRetention:
    """One process's side of the daily prune. The clock is injected (wall-clock seconds, `time.time`
    by default) so tests move days without waiting; the backend is asked once per day per process."""

    def __init__(self, *, claims: DayClaims, clock: Callable[[], float] = time.time) -> None:
        self.claims, self.clock = claims, clock
        self._settled: int | None = None  # the last day this process pruned or saw claimed elsewhere

    async def prune_if_due(self) -> int | None:
        """Prune if today is unclaimed and this process claims it: the rows deleted, else None."""
        from accounts.audit import audit_prune

        now_s = self.clock()
        day = prune_day(now_s)
        if self._settled == day:
            return None
        # A backend that fails raises here, before anything is settled: the next pass asks again.
        if not await self.claims.claim(day):
            self._settled = day
            return None
        try:
            deleted = await db_async(audit_prune)(now=datetime.fromtimestamp(now_s, tz=UTC))
        except BaseException:  # cancelled or failed: the day is given back, for this or another process
            await self._give_back(day)
            raise
        self._settled = day
        log.info(
            "audit retention: deleted %d row(s) older than %d days", deleted, settings.AUDIT_RETENTION_DAYS
        )
        return deleted

    async def _give_back(self, day: int) -> None:
        """Release the day without replacing what ended the prune: a cancel that became the release's
        ConnectionError was caught by the sweep's `except Exception`, which then never stopped."""
        try:
            await asyncio.shield(self.claims.release(day))
        except Exception:  # the claim then lapses with its TTL (another process prunes tomorrow)
            log.warning("audit retention: could not give day %d back", day, exc_info=True)


# Without Redis the claims are this process's, not one loop's: a loop per test (or per thread) would
# otherwise prune again on every new loop.
_memory_claims = MemoryClaims()
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AuditRetention] = weakref.WeakKeyDictionary()


def audit_retention() -> AuditRetention:
    """The running loop's retention (its Redis client belongs to the loop)."""
    loop = asyncio.get_running_loop()
    found = _per_loop.get(loop)
    if found is None:
        if settings.REDIS_URL:
            from core.redisconn import redis_for_loop

            claims: DayClaims = RedisClaims(redis_for_loop(), settings.REDIS_KEY_PREFIX)
        else:
            claims = _memory_claims
        found = _per_loop[loop] = AuditRetention(claims=claims)
    return found
