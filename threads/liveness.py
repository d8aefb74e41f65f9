"""Which generations are alive, in every process: the orphan sweep fails the `streaming` rows of the
others (their process died, was killed or restarted) instead of leaving them spinning.

With Redis each generation holds a lease, `<prefix>:gen:live:<assistant message id>`, that its process
renews every LEASE_S / 3 while it runs: a process that dies stops renewing and the lease lapses within LEASE_S.
Without Redis there is one process, so its own running set is the whole truth.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterable

from django.conf import settings
from redis.asyncio import Redis

from core import loopres
from core.redisconn import redis_for_loop
from threads.coalesce_store import LEASE_S

# When this process started (this module is imported at start-up, through the ASGI application): a row
# created before it cannot belong to a generation of this process.
PROCESS_STARTED = time.time()


class RedisLiveness:
    def __init__(self, client: Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    def _k(self, message_id: int) -> str:
        return f"{self._prefix}:live:{message_id}"

    async def renew(self, message_id: int) -> None:
        await self._redis.set(self._k(message_id), b"1", px=int(LEASE_S * 1000))

    async def remove(self, message_id: int) -> None:
        await self._redis.delete(self._k(message_id))

    async def alive(self, message_ids: Iterable[int]) -> set[int]:
        ids = list(message_ids)
        if not ids:
            return set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for mid in ids:
                pipe.exists(self._k(mid))
            found = await pipe.execute()
        return {mid for mid, n in zip(ids, found, strict=True) if n}

    def owns_everything_before(self, created: float) -> bool:
        """Other processes may be generating rows older than this one: never."""
        return False


class LocalLiveness:
    """One process (no REDIS_URL): its running generations are all there are."""

    def __init__(self) -> None:
        self._live: set[int] = set()

    async def renew(self, message_id: int) -> None:
        self._live.add(message_id)

    async def remove(self, message_id: int) -> None:
        self._live.discard(message_id)

    async def alive(self, message_ids: Iterable[int]) -> set[int]:
        return self._live.intersection(message_ids)

    def owns_everything_before(self, created: float) -> bool:
        """A row created before this process started can only be a previous process's."""
        return created < PROCESS_STARTED


Liveness = RedisLiveness | LocalLiveness
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Liveness] = weakref.WeakKeyDictionary()


def live_generations() -> Liveness:
    """The running loop's liveness registry: Redis when REDIS_URL is set, else this process."""
    loop = asyncio.get_running_loop()
    found = _per_loop.get(loop)
    if found is None:
        prefix = f"{settings.REDIS_KEY_PREFIX}:gen"
        found = _per_loop[loop] = (
            RedisLiveness(redis_for_loop(), prefix) if settings.REDIS_URL else LocalLiveness()
        )
        loopres.register(_forget_live_generations, stage=loopres.Stage.CLIENT)
    return found


def _forget_live_generations() -> None:
    """Forget the running loop's registry (the loop's Redis client closes after it)."""
    _per_loop.pop(asyncio.get_running_loop(), None)
