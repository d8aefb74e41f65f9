"""Redis reads and writes of one event-loop turn, sent as one round trip.

In a burst, hundreds of requests reach the same step in the same turn (every send looks up its
request_id, every follower records its own). One command each means hundreds of round trips, pool
checkouts and replies to parse, queued on the loop the burst's leader needs; batched, each turn's
GETs are one MGET and its SETs one pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis


class RedisBatch:
    """`get` and `set_ex` whose calls of one loop turn share one command. Per event loop (its futures)."""

    def __init__(self, client: Redis) -> None:
        self._redis = client
        self._gets: dict[str, list[asyncio.Future[bytes | str | None]]] = {}
        self._sets: list[tuple[str, str, int, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    def _schedule(self) -> None:
        # The flush runs on the next turn: every caller of this turn has queued its command by then.
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def get(self, key: str) -> bytes | str | None:
        fut: asyncio.Future[bytes | str | None] = asyncio.get_running_loop().create_future()
        self._gets.setdefault(key, []).append(fut)
        self._schedule()
        return await fut

    async def set_ex(self, key: str, value: str, seconds: int) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sets.append((key, value, seconds, fut))
        self._schedule()
        await fut

    async def _flush(self) -> None:
        gets, sets = self._gets, self._sets
        self._gets, self._sets, self._flushing = {}, [], None
        try:
            await asyncio.gather(self._flush_gets(gets), self._flush_sets(sets))
        except BaseException:  # cancelled (the loop is closing): no caller may wait forever
            waiting: list[asyncio.Future[Any]] = [f for futs in gets.values() for f in futs]
            for fut in waiting + [fut for *_, fut in sets]:
                fut.cancel()
            raise

    async def _flush_gets(self, gets: dict[str, list[asyncio.Future[bytes | str | None]]]) -> None:
        if not gets:
            return
        keys = list(gets)
        try:
            values = await self._redis.mget(keys)
        except Exception as exc:
            _fail([f for futs in gets.values() for f in futs], exc)
            return
        for key, value in zip(keys, values, strict=True):
            for fut in gets[key]:
                if not fut.done():
                    fut.set_result(value)

    async def _flush_sets(self, sets: list[tuple[str, str, int, asyncio.Future[None]]]) -> None:
        if not sets:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value, seconds, _ in sets:
                    pipe.set(key, value, ex=seconds)
                await pipe.execute()
        except Exception as exc:
            _fail([fut for *_, fut in sets], exc)
            return
        for *_, fut in sets:
            if not fut.done():
                fut.set_result(None)


def _fail(futures: Sequence[asyncio.Future[Any]], exc: Exception) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_exception(exc)
