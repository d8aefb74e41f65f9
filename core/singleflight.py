"""Concurrent loads of one key share one load (Go's `singleflight`), per event loop.

async-lru shares in-flight calls only inside its `alru_cache` decorator (keyed by the arguments, tied to
its cache); the coalescer and the remote waits need the bare primitive, with no cache behind it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Singleflight(Generic[V]):
    """Concurrent loads of one key share one load: the first caller starts it, later callers await the
    same result (or exception). Per event loop, since a future belongs to one loop."""

    def __init__(self) -> None:
        self._pending: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Hashable, asyncio.Task[V]]
        ] = weakref.WeakKeyDictionary()

    async def do(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        pending = self._pending.setdefault(asyncio.get_running_loop(), {})
        task = pending.get(key)
        if task is None:

            async def run() -> V:
                return await load()

            # A task of its own: the first caller going away (client disconnect) must not cancel the
            # load that the other callers wait on.
            task = asyncio.ensure_future(run())
            pending[key] = task
            task.add_done_callback(lambda t: pending.pop(key, None) if pending.get(key) is t else None)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even if unawaited
        # Shielded for the same reason: cancelling one waiter must not cancel the shared task.
        return await asyncio.shield(task)
