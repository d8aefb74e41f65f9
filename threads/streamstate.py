"""What a viewer who connects mid-stream needs: the text of every generation in flight, and its seq.

One process (no REDIS_URL): the generation service's own records. Several processes: Redis, written by
the leader *before* it sends each delta, so a snapshot that reports seq N has every text up to N and
the viewer (already in the thread's group) receives every delta after N: no gap, no repeat.
"""

from __future__ import annotations

import asyncio
import weakref

from django.conf import settings
from redis.asyncio import Redis

from core import loopres
from core.redisconn import redis_for_loop
from threads.events import InFlight

# An entry outlives a crashed leader by at most this long; the message itself is then failed by the
# coalescer's lease watchdog or the stale-message sweep.
ENTRY_TTL_S = 3600

# KEYS: text, meta, thread set. ARGV: offset, text, seq, first, request_id, thread_id, message_id, ttl.
# The text goes at its byte offset, not at the end: a write that Redis executed but whose reply was lost
# is written again by the next one, and must not be doubled. A text shorter than the offset (Redis lost
# the entry) is appended to, never padded with NUL bytes.
_APPEND_LUA = """
local offset, text = tonumber(ARGV[1]), ARGV[2]
if text ~= '' and redis.call('STRLEN', KEYS[1]) >= offset then
    redis.call('SETRANGE', KEYS[1], offset, text)
else
    redis.call('APPEND', KEYS[1], text)
end
if ARGV[4] == '1' then
    redis.call('HSET', KEYS[2], 'seq', ARGV[3], 'request_id', ARGV[5], 'thread_id', ARGV[6])
    redis.call('SADD', KEYS[3], ARGV[7])
    for i = 1, 3 do
        redis.call('EXPIRE', KEYS[i], ARGV[8])
    end
else
    redis.call('HSET', KEYS[2], 'seq', ARGV[3])
end
"""


class RedisStreamState:
    def __init__(self, client: Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._append = client.register_script(_APPEND_LUA)

    # Keyed by the assistant message id: request_ids are chosen by clients and unique only per thread.
    def _meta_key(self, message_id: int) -> str:
        return f"{self._prefix}:streaming:msg:{message_id}"

    def _text_key(self, message_id: int) -> str:
        return f"{self._meta_key(message_id)}:text"

    def _thread_key(self, thread_id: int) -> str:
        return f"{self._prefix}:streaming:thread:{thread_id}"

    def _keys(self, message_id: int, thread_id: int) -> tuple[str, str, str]:
        return self._text_key(message_id), self._meta_key(message_id), self._thread_key(thread_id)

    async def append(
        self,
        *,
        request_id: str,
        thread_id: int,
        message_id: int,
        seq: int,
        text: str,
        offset: int,
        first: bool,
    ) -> None:
        """Record the text up to delta `seq`, `text` being what follows its first `offset` bytes (UTF-8),
        atomically with the seq. The first write also registers the generation (its thread's set, its
        request_id, the keys' expiry). One script call: writing again what a write whose reply was lost
        already wrote changes nothing."""
        await self._append(
            keys=list(self._keys(message_id, thread_id)),
            args=[offset, text, seq, int(first), request_id, thread_id, message_id, ENTRY_TTL_S],
        )

    async def remove(self, *, message_id: int, thread_id: int) -> None:
        text_key, meta_key, set_key = self._keys(message_id, thread_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.srem(set_key, message_id)
            pipe.delete(text_key, meta_key)
            await pipe.execute()

    async def text_of(self, *, message_id: int) -> str | None:
        """The text streamed so far into `message_id` (kept after its process died, until the TTL)."""
        raw = await self._redis.get(self._text_key(message_id))
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))

    async def in_flight(self, thread_id: int) -> list[InFlight]:
        message_ids = sorted(int(m) for m in await self._redis.smembers(self._thread_key(thread_id)))
        out: list[InFlight] = []
        for mid in message_ids:
            text_key, meta_key = self._text_key(mid), self._meta_key(mid)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(text_key)
                pipe.hgetall(meta_key)
                text, meta = await pipe.execute()
            if not meta:  # finished between SMEMBERS and here
                continue
            out.append(
                {
                    "request_id": meta[b"request_id"].decode(),
                    "message_id": mid,
                    "text": (text or b"").decode(),
                    "seq": int(meta[b"seq"]),
                }
            )
        return out


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisStreamState] = (
    weakref.WeakKeyDictionary()
)


def stream_state() -> RedisStreamState | None:
    """The shared stream state of the running loop, or None without REDIS_URL (one process)."""
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    found = _per_loop.get(loop)
    if found is None:
        found = _per_loop[loop] = RedisStreamState(redis_for_loop(), settings.REDIS_KEY_PREFIX)
        loopres.register(_forget_stream_state, stage=loopres.Stage.CLIENT)
    return found


def _forget_stream_state() -> None:
    """Forget the running loop's state object (the loop's Redis client closes after it)."""
    _per_loop.pop(asyncio.get_running_loop(), None)
