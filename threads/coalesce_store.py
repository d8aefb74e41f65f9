"""Request coalescing (singleflight): identical concurrent sends share one provider call.

Two backends behind one Protocol (`CoalesceBackend`): `InProcessCoalescer` (asyncio, one process) and
`RedisCoalescer` (threads/coalesce_redis.py, used whenever REDIS_URL is set; several daphne processes share it). The decisions live
in `threads.coalesce_math` (pure) and a key's life is driven by `threads.coalescing`; these classes
only store and wait.

Lifecycle of a key: `claim` (first caller leads) -> `publish` (the leader's rows exist: followers can
answer with them) -> `finish(ok)` (kept COALESCE_RESULT_TTL_S after success, COALESCE_ERROR_TTL_S after
a failure, then forgotten so the next identical send leads a fresh call). A leader that fails before
publishing calls `fail`, and its followers get that error. In Redis the key is a lease the leader
renews while it generates; if its process dies the lease lapses and waiters notice (`alive`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict

from django.conf import settings

from core import loopres
from core.redisconn import redis_for_loop
from threads.coalesce_math import retention_s

Info = dict[str, Any]
ALIAS_TTL_S = 24 * 3600  # request_id idempotency window (Stripe keeps keys 24 h)
# A send holds its request_id from its first step until its rows exist; a follower waits at most
# WAIT_INFO_TIMEOUT_S for them, a leader a few seconds: a minute leaves a wide margin.
ALIAS_PENDING_S = 60


class Ref(TypedDict):
    """What a request_id's record names: the rows a send got (read back from the database on a
    replay). Never the content: a flood of identical 32,000-character sends with fresh request_ids
    wrote 192 KB of Redis per send, for 24 h."""

    request_id: str
    user_message_id: int
    assistant_message_id: int


# A request_id's record: the body's fingerprint, and the rows once the send has them (None while it runs).
AliasRecord = tuple[str, Ref | None]
LEASE_S = 5.0  # a dead leader is noticed within about this long
WAIT_INFO_TIMEOUT_S = 15.0
_LOST = {"code": "coalesce_lost", "message": "The identical request went away."}


class CoalesceFailed(Exception):
    """The leader failed before its rows existed; `error` is the {code, message, status} it failed with."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        super().__init__(error.get("message", "the identical request failed"))
        self.error = dict(error)


def _retention(ok: bool) -> float:
    return retention_s(
        ok=ok, result_ttl_s=settings.COALESCE_RESULT_TTL_S, error_ttl_s=settings.COALESCE_ERROR_TTL_S
    )


@dataclass(slots=True)
class Claim:
    role: Literal["leader", "follower"]
    info: Info | None = None
    # A follower of a leader that already failed (a failure is kept COALESCE_ERROR_TTL_S): its error,
    # answered at once. Polling for it instead could find the key expired and report a lost leader.
    error: dict[str, Any] | None = None


class CoalesceBackend(Protocol):
    """Where a coalesce key's state lives; threads/coalescing.py drives it through a key's life."""

    async def claim(self, key: str) -> Claim:
        """The first caller leads; later ones follow (with the leader's info or failure, if known)."""

    async def publish(self, key: str, info: Info) -> None:
        """The leader's rows exist: followers answer with `info`."""

    async def fail(self, key: str, error: Mapping[str, Any]) -> None:
        """The leader failed before publishing: followers get `error` (kept COALESCE_ERROR_TTL_S)."""

    async def finish(self, key: str, *, ok: bool, keep: bool = True) -> None:
        """The generation ended: keep the result for its TTL, then forget the key (at once when not
        `keep`: a regenerate is never answered from a finished result)."""

    def release(self, key: str) -> None:
        """No `finish` will come: let the key lapse like an unrenewed lease (after `finish`, a no-op)."""

    async def wait_info(self, key: str) -> Info:
        """A follower's wait for its leader's `publish`; raises CoalesceFailed."""

    async def alive(self, key: str) -> bool:
        """Whether the key's leader still holds its lease."""

    async def renew(self, key: str) -> None:
        """The leader is generating: extend its lease."""

    async def alias_get(self, alias: str) -> AliasRecord | None:
        """The record of a request_id alias, if any."""

    async def alias_claim(self, alias: str, fingerprint: str) -> AliasRecord | None:
        """At once: the alias's record if it has one, else None, and the alias is then held by this
        send (for ALIAS_PENDING_S) so that a concurrent send with another body sees the fingerprint."""

    async def alias_set(self, alias: str, fingerprint: str, ref: Ref) -> None:
        """Record a request_id alias's rows for ALIAS_TTL_S."""

    async def alias_drop(self, alias: str, fingerprint: str) -> None:
        """Free an alias held by a send with `fingerprint` that failed before it had rows."""


@dataclass(slots=True)
class _Entry:
    info: asyncio.Future[Info]
    expires: float | None = None  # None while the leader works


@dataclass
class InProcessCoalescer:
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _aliases: dict[str, tuple[float, str, Ref | None]] = field(default_factory=dict)
    # (expires, n, key) of every expiry set, soonest first: each call forgets what has expired, so
    # nothing waits for its own key to be claimed again (stale items, of a key set again, are skipped).
    _expiring: list[tuple[float, int, str]] = field(default_factory=list)
    _expiring_aliases: list[tuple[float, int, str]] = field(default_factory=list)
    _n: itertools.count[int] = field(default_factory=itertools.count)

    def _expire(self) -> None:
        now = self.clock()
        while self._expiring and self._expiring[0][0] <= now:
            key = heapq.heappop(self._expiring)[2]
            entry = self._entries.get(key)
            if entry is not None and entry.expires is not None and entry.expires <= now:
                del self._entries[key]
        while self._expiring_aliases and self._expiring_aliases[0][0] <= now:
            alias = heapq.heappop(self._expiring_aliases)[2]
            found = self._aliases.get(alias)
            if found is not None and found[0] <= now:
                del self._aliases[alias]

    def _expires(self, key: str, entry: _Entry, at: float) -> None:
        entry.expires = at
        heapq.heappush(self._expiring, (at, next(self._n), key))

    def _live(self, key: str) -> _Entry | None:
        self._expire()
        return self._entries.get(key)

    async def claim(self, key: str) -> Claim:
        entry = self._live(key)
        if entry is None:
            self._entries[key] = _Entry(info=asyncio.get_running_loop().create_future())
            return Claim("leader")
        info = entry.info.result() if entry.info.done() and not entry.info.exception() else None
        return Claim("follower", info)

    async def publish(self, key: str, info: Info) -> None:
        entry = self._entries.get(key)
        if entry is not None and not entry.info.done():
            entry.info.set_result(info)

    async def fail(self, key: str, error: Mapping[str, Any]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and not entry.info.done():
            entry.info.set_exception(CoalesceFailed(error))
            entry.info.exception()  # retrieved: no "never retrieved" warning when nobody waited

    async def finish(self, key: str, *, ok: bool, keep: bool = True) -> None:
        entry = self._entries.get(key)
        if entry is not None and not keep:
            del self._entries[key]
        elif entry is not None:
            self._expires(key, entry, self.clock() + _retention(ok))

    def release(self, key: str) -> None:
        """No `finish` will come for this key (a leader that replayed rows it did not generate, or a
        generation that ended without a terminal event): the entry lapses like an unrenewed lease.
        After a `finish`, nothing changes."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires is None:
            self._expires(key, entry, self.clock() + LEASE_S)

    async def wait_info(self, key: str) -> Info:
        entry = self._entries.get(key)
        if entry is None:
            raise CoalesceFailed(_LOST)
        async with asyncio.timeout(WAIT_INFO_TIMEOUT_S):
            # Shielded: a follower that gives up must not cancel the future other followers share.
            return await asyncio.shield(entry.info)

    async def alive(self, key: str) -> bool:
        return True  # the leader runs in this process: it cannot die without us

    async def renew(self, key: str) -> None:
        return None

    async def alias_get(self, alias: str) -> AliasRecord | None:
        self._expire()
        found = self._aliases.get(alias)
        return None if found is None else (found[1], found[2])

    async def alias_claim(self, alias: str, fingerprint: str) -> AliasRecord | None:
        found = await self.alias_get(alias)
        if found is None:
            self._alias_put(alias, fingerprint, None, ALIAS_PENDING_S)
        return found

    async def alias_set(self, alias: str, fingerprint: str, ref: Ref) -> None:
        self._expire()
        self._alias_put(alias, fingerprint, ref, ALIAS_TTL_S)

    async def alias_drop(self, alias: str, fingerprint: str) -> None:
        if self._aliases.get(alias, (0.0, "", None))[1:] == (fingerprint, None):
            del self._aliases[alias]

    def _alias_put(self, alias: str, fingerprint: str, ref: Ref | None, ttl_s: float) -> None:
        expires = self.clock() + ttl_s
        self._aliases[alias] = (expires, fingerprint, ref)
        heapq.heappush(self._expiring_aliases, (expires, next(self._n), alias))


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CoalesceBackend] = weakref.WeakKeyDictionary()


def coalescer() -> CoalesceBackend:
    """The coalescer of the running event loop: Redis when REDIS_URL is set, else in-process."""
    loop = asyncio.get_running_loop()
    found = _per_loop.get(loop)
    if found is None:
        prefix = f"{settings.REDIS_KEY_PREFIX}:co"
        if settings.REDIS_URL:
            from threads.coalesce_redis import RedisCoalescer  # it builds on this module's types

            found = RedisCoalescer(redis_for_loop(), prefix)
        else:
            found = InProcessCoalescer()
        _per_loop[loop] = found
        loopres.register(_forget_coalescer, stage=loopres.Stage.CLIENT)
    return found


def _forget_coalescer() -> None:
    """Forget the running loop's coalescer (the loop's Redis client closes after it)."""
    _per_loop.pop(asyncio.get_running_loop(), None)
