"""One Redis client per event loop for the app's own keys (coalescer, resume state).

redis-py's asyncio connections belong to the loop that opened them, so the client is per loop, made on
first use and closed by `core.loopres.aclose_all()` after everything that uses it. The pool blocks
rather than raises when every connection is busy: under a burst, callers wait their turn. It is sized
(settings.REDIS_POOL_SIZE) for a loaded process, whose commands each hold a connection until the busy
loop reads the reply: 500 generations in a process have hundreds in flight.
"""

from __future__ import annotations

import asyncio
import weakref

import redis.asyncio as redis
from django.conf import settings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from core import loopres

POOL_TIMEOUT_S = 10.0
# A command that meets a dead pooled connection (Redis restarted) reconnects and tries again, 3 times
# over about 0.35 s; Redis really down still fails fast enough for a 503.
RETRIES = 3


def redis_retry() -> Retry:
    """The retry policy of every Redis connection (ours and channels_redis's, see settings)."""
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.Redis] = weakref.WeakKeyDictionary()


def redis_for_loop() -> redis.Redis:
    """The running loop's client for settings.REDIS_URL (callers check REDIS_URL is set)."""
    loop = asyncio.get_running_loop()
    client = _per_loop.get(loop)
    if client is None:
        pool = redis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.REDIS_POOL_SIZE,
            timeout=POOL_TIMEOUT_S,
            retry=redis_retry(),
        )
        client = _per_loop[loop] = redis.Redis.from_pool(pool)  # the client owns (and closes) the pool
        loopres.register(_close_redis, stage=loopres.Stage.CONNECTION)
    return client


async def _close_redis() -> None:
    client = _per_loop.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
