"""Waiting for a condition with a deadline, never for a fixed time (STYLE.md: no sleep() in tests).

    from tests.waiting import wait_until, wait_until_async

    wait_until(lambda: server.stats()["calls"] == 1, timeout=5)              # from sync code
    await wait_until_async(lambda: queued in backend.seqs, within=5)         # from a coroutine
    await wait_until_async(lambda: rows.aexists(), within=5)                 # an async predicate

The predicate is polled; its first truthy value is returned. Past the deadline: AssertionError with
the last value. Use an event or a future instead when the code under test offers one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout: float, interval: float = 0.01) -> T:
    """Poll `predicate` until it returns a truthy value (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout} s (last value {value!r})")
        time.sleep(interval)


@overload
async def wait_until_async(
    predicate: Callable[[], Awaitable[T]], *, within: float, interval: float = 0.005
) -> T: ...


@overload
async def wait_until_async(predicate: Callable[[], T], *, within: float, interval: float = 0.005) -> T: ...


async def wait_until_async(predicate: Callable[[], Any], *, within: float, interval: float = 0.005) -> Any:
    """`wait_until` for a coroutine: the event loop runs the code under test between polls. The predicate
    may be async (a database query through sync_to_async). (`within`, not `timeout`: ruff's ASYNC109
    keeps `timeout` parameters off coroutines.)"""
    deadline = time.monotonic() + within
    while True:
        polled = predicate()
        value = await polled if inspect.isawaitable(polled) else polled
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {within} s (last value {value!r})")
        await asyncio.sleep(interval)
