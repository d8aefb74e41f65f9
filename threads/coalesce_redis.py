"""The coalescer's Redis backend (`CoalesceBackend` of threads/coalesce_store.py): several daphne
processes share one key space. Values are JSON; a leader's key is a lease it renews while it generates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings

from core.redisbatch import RedisBatch
from core.singleflight import Singleflight
from threads.coalesce_store import (
    _LOST,
    ALIAS_PENDING_S,
    ALIAS_TTL_S,
    LEASE_S,
    WAIT_INFO_TIMEOUT_S,
    AliasRecord,
    Claim,
    CoalesceFailed,
    Info,
    Ref,
    _retention,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis


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
        if not keep:  # a regenerate's: never answers a later one
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
