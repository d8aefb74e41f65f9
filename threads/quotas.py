"""Per-user quotas: the send budget (a token bucket) and the number of open WebSockets.

    await send_admit(user_id=user.pk)        # raises RateLimited (429 + Retry-After) when over budget
    await follow_admit(user_id=user.pk)      # a follower's or a replay's share, from its own bucket
    if not await socket_open(user_id=..., socket_id=...): close(4429)
    stream_id = await stream_open(user_id=...)          # an SSE stream; raises TooManyStreams (429)
    await socket_close(user_id=..., socket_id=...)      # either

Both are shared by every process when REDIS_URL is set, and kept in this process otherwise. The
decisions are pure (`threads/limits.py`); the send budget uses core's GCRA buckets, as the pacer does
(`core/gcra_store.py`: a refused reservation with `max_wait=0` is exactly "over budget, retry after").

A send that leads a new generation takes a whole send from the budget. Coalesced followers and
replayed request_ids cost the provider nothing, but each holds a wait and a follower with a fresh
request_id writes a 24 h record: they take a share (threads/limits.py FOLLOWER_SHARE) from a bucket of
their own, so one account cannot flood Redis with them (#16: 300 identical sends grew it by 59 MB).
Keying the bucket by (user, coalesce key) instead would give each distinct message its own bucket and
limit nothing.

An SSE stream (`stream: true`) counts as a socket: each one is a channel in a thread's group.

Open sockets live in Redis as one sorted set per user (socket id -> last heartbeat, Redis server time);
each process re-stamps its own sockets every SOCKET_HEARTBEAT_S, so the sockets of a process that died
stop counting after SOCKET_TTL_S. Redis unreachable: both checks let the request through (a quota must
not take the chat down with it) and log a warning.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from core import loopres
from core.gcra import Limit
from core.gcra_store import InProcessBackend, RedisBackend
from core.outages import REDIS_DOWN
from core.redisconn import redis_for_loop
from core.retryafter import retry_after_header
from threads.limits import follow_rate_limit, send_rate_limit, socket_admit
from threads.validation import InvalidInput

log = logging.getLogger(__name__)

# A socket re-stamps its registry entry this often; three missed stamps (a dead process) free its slot.
SOCKET_HEARTBEAT_S = 30.0
SOCKET_TTL_S = 3 * SOCKET_HEARTBEAT_S
# A stream refused for too many open: most streams end with their reply, within seconds.
STREAM_RETRY_AFTER_S = 5


class RateLimited(InvalidInput):
    """Over the per-user send budget: 429 with Retry-After."""

    def __init__(self, retry_after_s: float) -> None:
        seconds = retry_after_header(retry_after_s)
        super().__init__(
            "rate_limited",
            f"You are sending messages too fast; try again in {seconds} s.",
            status=429,
            retry_after=seconds,
        )


class TooManyStreams(InvalidInput):
    """MAX_SOCKETS_PER_USER sockets and streams open: 429 with Retry-After, before the stream starts."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            "too_many_streams",
            f"You have {limit} sockets and streams open, the most allowed; close one or let a reply "
            "finish, then retry.",
            status=429,
            retry_after=STREAM_RETRY_AFTER_S,
        )


# --- send budget -----------------------------------------------------------------------------------


def _current_limit() -> Limit | None:
    return send_rate_limit(per_min=settings.SEND_RATE_PER_MIN, burst=settings.SEND_RATE_BURST)


@dataclass(slots=True)
class _Quotas:
    """One event loop's backends (a Redis client belongs to the loop that opened it)."""

    local: InProcessBackend = field(default_factory=InProcessBackend)
    redis: RedisBackend | None = None
    sockets: SocketRegistry | None = None


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Quotas] = weakref.WeakKeyDictionary()


def _quotas() -> _Quotas:
    loop = asyncio.get_running_loop()
    found = _per_loop.get(loop)
    if found is None:
        redis = None
        if settings.REDIS_URL:
            redis = RedisBackend(settings.REDIS_URL, prefix=f"{settings.REDIS_KEY_PREFIX}:sendrate")
        found = _per_loop[loop] = _Quotas(redis=redis)
        # CLIENT: the socket heartbeat uses the loop's Redis client, which closes after it.
        loopres.register(_close_quotas, stage=loopres.Stage.CLIENT)
    return found


async def send_admit(*, user_id: Any) -> None:
    """Take one send of `user_id`'s budget, or raise RateLimited (changing nothing)."""
    await _admit(str(user_id), _current_limit())


async def follow_admit(*, user_id: Any) -> None:
    """Take a follower's (or a replay's) share of `user_id`'s budget, or raise RateLimited."""
    limit = follow_rate_limit(per_min=settings.SEND_RATE_PER_MIN, burst=settings.SEND_RATE_BURST)
    await _admit(f"{user_id}:follow", limit)


async def _admit(key: str, limit: Limit | None) -> None:
    if limit is None:
        return
    q = _quotas()
    grant = None
    if q.redis is not None:
        try:
            grant = await q.redis.reserve(key, limit, 0.0)
        except REDIS_DOWN as exc:
            log.warning("send rate: Redis unreachable (%s); using this process's buckets", exc)
    if grant is None:
        grant = await q.local.reserve(key, limit, 0.0)
    if not grant.admitted:
        raise RateLimited(grant.retry_after_s or grant.wait_s)


# --- open sockets ----------------------------------------------------------------------------------

_OPEN_LUA = """
local key, id = KEYS[1], ARGV[1]
local ttl, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%.17g', now - ttl))
local live = redis.call('ZCARD', key)
if redis.call('ZSCORE', key, id) then live = live - 1 end
if limit > 0 and live >= limit then return {0, live} end
redis.call('ZADD', key, string.format('%.17g', now), id)
redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
return {1, live + 1}
"""
# Re-stamp the given sockets (only those still present: XX) and keep the set alive.
_BEAT_LUA = """
local t = redis.call('TIME')
local now = string.format('%.17g', tonumber(t[1]) + tonumber(t[2]) / 1000000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
return 1
"""


class SocketRegistry:
    """The open sockets of every user: in this process, or in Redis (shared) when `redis` is given."""

    def __init__(
        self,
        *,
        redis: Any | None = None,
        prefix: str = "chatapp",
        clock: Callable[[], float] = time.monotonic,
        heartbeat_s: float = SOCKET_HEARTBEAT_S,
        ttl_s: float = SOCKET_TTL_S,
    ) -> None:
        self._redis, self._prefix, self._clock = redis, prefix, clock
        self._heartbeat_s, self._ttl_s = heartbeat_s, ttl_s
        # This process's sockets: user id -> {socket id: registered at}.
        self.local: dict[str, dict[str, float]] = {}
        self._beater: asyncio.Task[None] | None = None
        if redis is not None:
            self._open = redis.register_script(_OPEN_LUA)
            self._beat = redis.register_script(_BEAT_LUA)

    def key(self, user_id: Any) -> str:
        return f"{self._prefix}:sockets:{user_id}"

    async def open(self, *, user_id: Any, socket_id: str, limit: int) -> bool:
        """Register a socket if the user has fewer than `limit` (0: unlimited) open; False if not."""
        uid = str(user_id)
        mine = self.local.get(uid, {})
        admitted = True
        if self._redis is not None:
            try:
                ok, _ = await self._open(keys=[self.key(uid)], args=[socket_id, self._ttl_s, limit])
                admitted = bool(ok)
            except REDIS_DOWN as exc:
                log.warning("socket quota: Redis unreachable (%s); admitting the socket", exc)
        else:
            # In process, a socket lives exactly as long as its entry: nothing can expire.
            admitted = socket_admit(
                mine, socket_id=socket_id, now=self._clock(), ttl=math.inf, limit=limit
            ).admitted
        if admitted:
            self.local.setdefault(uid, {})[socket_id] = self._clock()
            self._ensure_beating()
        return admitted

    async def close(self, *, user_id: Any, socket_id: str) -> None:
        uid = str(user_id)
        mine = self.local.get(uid, {})
        if mine.pop(socket_id, None) is None:
            return
        if not mine:
            self.local.pop(uid, None)
        if self._redis is not None:
            try:
                await self._redis.zrem(self.key(uid), socket_id)
            except REDIS_DOWN as exc:  # the entry lapses after SOCKET_TTL_S without heartbeats
                log.warning("socket quota: Redis unreachable (%s); the slot frees itself later", exc)

    async def beat(self) -> None:
        """Re-stamp this process's sockets in Redis (no-op in process)."""
        if self._redis is None:
            return
        for uid, sockets in list(self.local.items()):
            await self._beat(keys=[self.key(uid)], args=[self._ttl_s, *sockets])

    def _ensure_beating(self) -> None:
        if self._redis is not None and self._beater is None:
            self._beater = asyncio.create_task(self._beat_forever())

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self.beat()
            except REDIS_DOWN as exc:
                log.warning("socket quota: heartbeat failed (%s); retrying in %.0f s", exc, self._heartbeat_s)

    async def aclose(self) -> None:
        if self._beater is not None:
            self._beater.cancel()
            # asyncio.wait: the heartbeat's own cancellation ends it quietly, while a cancellation of
            # this caller still propagates (never swallowed).
            await asyncio.wait({self._beater})
            self._beater = None


def socket_registry() -> SocketRegistry:
    """The running loop's registry: Redis-backed when REDIS_URL is set."""
    q = _quotas()
    if q.sockets is None:
        redis = redis_for_loop() if settings.REDIS_URL else None
        q.sockets = SocketRegistry(redis=redis, prefix=settings.REDIS_KEY_PREFIX)
    return q.sockets


async def socket_open(*, user_id: Any, socket_id: str) -> bool:
    return await socket_registry().open(
        user_id=user_id, socket_id=socket_id, limit=settings.MAX_SOCKETS_PER_USER
    )


async def stream_open(*, user_id: Any) -> str:
    """Count an SSE stream with the user's sockets; its id, for `socket_close`. Raises TooManyStreams."""
    stream_id = f"sse-{uuid.uuid4().hex}"
    if not await socket_open(user_id=user_id, socket_id=stream_id):
        raise TooManyStreams(settings.MAX_SOCKETS_PER_USER)
    return stream_id


async def socket_close(*, user_id: Any, socket_id: str) -> None:
    await socket_registry().close(user_id=user_id, socket_id=socket_id)


async def _close_quotas() -> None:
    """Stop the running loop's heartbeat and close its Redis bucket client."""
    q = _per_loop.pop(asyncio.get_running_loop(), None)
    if q is None:
        return
    if q.sockets is not None:
        await q.sockets.aclose()
    if q.redis is not None:
        await q.redis.aclose()
