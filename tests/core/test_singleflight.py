"""Singleflight: concurrent loads of one key share one load."""

from __future__ import annotations

import asyncio

import pytest

from core.singleflight import Singleflight


async def test_cancelled_first_caller_does_not_cancel_the_others() -> None:
    gate, flight = asyncio.Event(), Singleflight[str]()

    async def load() -> str:
        await gate.wait()
        return "v"

    first = asyncio.create_task(flight.do("k", load))
    second = asyncio.create_task(flight.do("k", load))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == "v"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failed_load_fails_every_waiter_and_the_next_call_loads_again() -> None:
    gate, flight, calls = asyncio.Event(), Singleflight[int](), []

    async def load() -> int:
        calls.append(1)
        await gate.wait()
        if len(calls) == 1:
            raise RuntimeError("down")
        return 2

    waiters = [asyncio.create_task(flight.do("k", load)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await flight.do("k", load) == 2 and len(calls) == 2
