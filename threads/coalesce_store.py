"""Request coalescing (singleflight): identical concurrent sends share one provider call.

Two backends behind one Protocol (`CoalesceBackend`): `InProcessCoalescer` (asyncio, one process) and
`RedisCoalescer` (used whenever REDIS_URL is set; several daphne processes share it). The decisions live
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
import json
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict

from django.conf import settings

from core import loopres
from core.redisbatch import RedisBatch
from core.redisconn import redis_for_loop
from core.singleflight import Singleflight
from threads.coalesce_math import retention_s

if TYPE_CHECKING:
    from redis.asyncio import Redis

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


class RedisCoalescer:
    """Cross-process backend. Values are JSON: {"state": "pending"|"running"|"done"|"failed", ...}."""

    POLL_S = 0.005

    def __init__(self, client: Redis, prefix: str = "chatapp") -> None:
        self._redis = client
        self._prefix = prefix
        self._info_waits: Singleflight[Info] = Singleflight()
        self._batch = RedisBatch(client)  # followers' request_id records: one pipeline per loop turn
        self._alias_claims = _ClaimBatch(client)  # every send's request_id claim: likewise
        self._alias_drop = client.register_script(_DROP_PENDING_LUA)
        # This process's side of a burst: one Redis claim per key at a time (its other senders here
        # share it), and the keys this process leads, until `finish`/`fail`/`release` (their followers
        # here get the leader's info from memory). In a burst of 500 sends per process this saves
        # about 1000 Redis round trips, each some CPU on the loop that the leader needs. `_won`: keys
        # whose shared claim won the lease, until one of the senders sharing it takes the lead.
        self._claims: Singleflight[Claim] = Singleflight()
        self._won: set[str] = set()
        self._leading: dict[str, asyncio.Future[Info]] = {}

    def _k(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    async def claim(self, key: str) -> Claim:
        led = self._leading.get(key)
        if led is None:
            claim = await self._claims.do(key, lambda: self._claim_redis(key))
            if claim.role == "follower":
                return claim
            if key in self._won:  # the first of this process's senders to hear it leads
                self._won.discard(key)
                self._leading[key] = asyncio.get_running_loop().create_future()
                return claim
            return await self.claim(key)  # another sender here leads (or did: then ask again)
        return Claim("follower", led.result() if led.done() and not led.exception() else None)

    async def _claim_redis(self, key: str) -> Claim:
        if await self._redis.set(
            self._k(key), json.dumps({"state": "pending"}), nx=True, px=int(LEASE_S * 1000)
        ):
            self._won.add(key)
            return Claim("leader")
        raw = await self._redis.get(self._k(key))
        if raw is None:  # expired between SET and GET: try once more
            return await self._claim_redis(key)
        value = json.loads(raw)
        if value["state"] == "failed":
            return Claim("follower", error=value["error"])
        return Claim("follower", value.get("info") if value["state"] in ("running", "done") else None)

    async def publish(self, key: str, info: Info) -> None:
        led = self._leading.get(key)
        if led is not None and not led.done():
            led.set_result(info)
        value = json.dumps({"state": "running", "info": info})
        await self._redis.set(self._k(key), value, px=int(LEASE_S * 1000))

    async def renew(self, key: str) -> None:
        await self._redis.pexpire(self._k(key), int(LEASE_S * 1000))

    async def fail(self, key: str, error: Mapping[str, Any]) -> None:
        led = self._leading.pop(key, None)
        if led is not None and not led.done():
            led.set_exception(CoalesceFailed(error))
            led.exception()  # retrieved: no "never retrieved" warning when nobody waited
        value = json.dumps({"state": "failed", "error": error})
        await self._redis.set(self._k(key), value, px=int(settings.COALESCE_ERROR_TTL_S * 1000))

    def release(self, key: str) -> None:
        """No `finish` will come for this key (see InProcessCoalescer.release): this process stops
        answering it from memory; the entry lapses in Redis with its lease, and Redis answers until then."""
        self._leading.pop(key, None)

    async def finish(self, key: str, *, ok: bool, keep: bool = True) -> None:
        self._leading.pop(key, None)  # from now on Redis answers (kept for the result's TTL)
        if not keep:
            await self._redis.delete(self._k(key))
            return
        raw = await self._redis.get(self._k(key))
        if raw is None:
            return
        value = json.loads(raw)
        value["state"] = "done"
        await self._redis.set(self._k(key), json.dumps(value), px=max(1, int(_retention(ok) * 1000)))

    async def wait_info(self, key: str) -> Info:
        led = self._leading.get(key)
        if led is not None:  # this process leads: its info comes from memory
            async with asyncio.timeout(WAIT_INFO_TIMEOUT_S):
                return await asyncio.shield(led)
        # The followers of one key in this process share one poll: 500 followers each polling every
        # 5 ms would send Redis 100,000 reads a second while the leader writes its rows.
        return await self._info_waits.do(key, lambda: self._poll_info(key))

    async def _poll_info(self, key: str) -> Info:
        # The leader publishes a few milliseconds after it claims (one transaction): poll briefly.
        async with asyncio.timeout(WAIT_INFO_TIMEOUT_S):
            while True:
                raw = await self._redis.get(self._k(key))
                if raw is None:
                    raise CoalesceFailed(_LOST)
                value = json.loads(raw)
                if value["state"] == "failed":
                    raise CoalesceFailed(value["error"])
                if value.get("info"):
                    return dict(value["info"])
                await asyncio.sleep(self.POLL_S)

    async def alive(self, key: str) -> bool:
        return bool(await self._redis.exists(self._k(key)))

    async def alias_get(self, alias: str) -> AliasRecord | None:
        return _alias_record(await self._batch.get(self._k(alias)))

    async def alias_claim(self, alias: str, fingerprint: str) -> AliasRecord | None:
        return _alias_record(await self._alias_claims.claim(self._k(alias), _pending(fingerprint)))

    async def alias_set(self, alias: str, fingerprint: str, ref: Ref) -> None:
        value = json.dumps({"fp": fingerprint, "ref": ref}, separators=(",", ":"))
        await self._batch.set_ex(self._k(alias), value, ALIAS_TTL_S)

    async def alias_drop(self, alias: str, fingerprint: str) -> None:
        await self._alias_drop(keys=[self._k(alias)], args=[_pending(fingerprint)])


def _pending(fingerprint: str) -> str:
    return json.dumps({"fp": fingerprint}, separators=(",", ":"))


def _alias_record(raw: bytes | str | None) -> AliasRecord | None:
    if raw is None:
        return None
    value = json.loads(raw)
    return value["fp"], value.get("ref")


# Delete a request_id's record only if it is still the pending one this send wrote: a twin send with
# the same body may have recorded its rows meanwhile.
_DROP_PENDING_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _ClaimBatch:
    """`SET key value NX GET EX` (Redis 7) of one loop turn in one pipeline: the record already there,
    or None when this call wrote `value`. In a burst every send claims its request_id in the same turn."""

    def __init__(self, client: Redis) -> None:
        self._redis = client
        self._queued: list[tuple[str, str, asyncio.Future[bytes | str | None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def claim(self, key: str, value: str) -> bytes | str | None:
        fut: asyncio.Future[bytes | str | None] = asyncio.get_running_loop().create_future()
        self._queued.append((key, value, fut))
        if self._flushing is None:  # runs on the next turn, when every caller of this one has queued
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        queued, self._queued, self._flushing = self._queued, [], None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value, _ in queued:
                    pipe.set(key, value, nx=True, get=True, ex=ALIAS_PENDING_S)
                found = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for *_, fut in queued:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): no caller may wait forever
            for *_, fut in queued:
                fut.cancel()
            raise
        for (*_, fut), value in zip(queued, found, strict=True):
            if fut.done():
                continue
            if isinstance(value, Exception):
                fut.set_exception(value)
            else:
                fut.set_result(value)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CoalesceBackend] = weakref.WeakKeyDictionary()


def coalescer() -> CoalesceBackend:
    """The coalescer of the running event loop: Redis when REDIS_URL is set, else in-process."""
    loop = asyncio.get_running_loop()
    found = _per_loop.get(loop)
    if found is None:
        prefix = f"{settings.REDIS_KEY_PREFIX}:co"
        found = RedisCoalescer(redis_for_loop(), prefix) if settings.REDIS_URL else InProcessCoalescer()
        _per_loop[loop] = found
        loopres.register(_forget_coalescer, stage=loopres.Stage.CLIENT)
    return found


def _forget_coalescer() -> None:
    """Forget the running loop's coalescer (the loop's Redis client closes after it)."""
    _per_loop.pop(asyncio.get_running_loop(), None)
