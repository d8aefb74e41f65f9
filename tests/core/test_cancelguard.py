"""core/cancelguard.py: a cancel a library swallowed still stops the loops that check for it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from core.cancelguard import raise_if_cancelling
from threads import sweep


async def _swallowing_call(entered: asyncio.Event) -> None:
    """What redis-py sometimes does with a cancel that lands mid-command: returns as if done."""
    entered.set()
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        pass


async def test_a_swallowed_cancel_is_raised_again() -> None:
    entered, after = asyncio.Event(), []

    async def work() -> None:
        await _swallowing_call(entered)
        after.append("ran on")
        raise_if_cancelling()
        after.append("ran past the check")

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert after == ["ran on"]


async def test_no_cancel_asked_nothing_raised() -> None:
    raise_if_cancelling()
    task = asyncio.create_task(asyncio.sleep(0))
    await task


async def test_the_sweeper_stops_when_its_pass_swallowed_the_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails on the old code: the sweep went round again and slept, so a service's close waited forever
    (CI's pass 2 timed out at 120 s in a teardown, twice)."""
    entered = asyncio.Event()
    calls: list[int] = []

    async def nothing(*args: Any, **kwargs: Any) -> Any:
        return set() if args else 0

    class Retention:
        async def prune_if_due(self) -> None:
            calls.append(1)
            if len(calls) == 1:  # the first pass's Redis call swallows the cancel; later ones do not
                await _swallowing_call(entered)

    monkeypatch.setattr(sweep, "sweep_orphans", nothing)
    monkeypatch.setattr(sweep, "sweep_stale", nothing)
    monkeypatch.setattr(sweep, "audit_retention", Retention)
    task = asyncio.create_task(sweep.sweep_forever(SimpleNamespace(running={})))  # type: ignore[arg-type]
    try:
        await entered.wait()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert task in done and task.cancelled()
    finally:
        task.cancel()  # the old code's loop: this cancel lands in its sleep
        await asyncio.gather(task, return_exceptions=True)
