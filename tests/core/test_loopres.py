"""The per-loop resource registry: one close-all, in stage order, every closer run once, failures
raised together, cancellation never swallowed, loops kept apart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from core import loopres
from core.loopres import Stage, aclose_all, register


def _recorder(log: list[str], name: str) -> Callable[[], None]:
    def close() -> None:
        log.append(name)

    return close


async def test_closes_by_stage_then_latest_first_and_forgets() -> None:
    log: list[str] = []
    register(_recorder(log, "redis"), stage=Stage.CONNECTION)
    register(_recorder(log, "pacer"), stage=Stage.CLIENT)
    register(_recorder(log, "service"), stage=Stage.WORKER)
    register(_recorder(log, "quotas"), stage=Stage.CLIENT)

    async def listener() -> None:  # an async closer is awaited
        await asyncio.sleep(0)
        log.append("listener")

    register(listener, stage=Stage.WORKER)
    await aclose_all()
    assert log == ["listener", "service", "quotas", "pacer", "redis"]
    await aclose_all()  # forgotten: nothing runs twice
    assert len(log) == 5


async def test_every_closer_runs_and_the_failures_are_raised_together() -> None:
    log: list[str] = []

    def broken(message: str) -> Callable[[], None]:
        def close() -> None:
            raise RuntimeError(message)

        return close

    register(_recorder(log, "redis"), stage=Stage.CONNECTION)
    register(broken("pacer"), stage=Stage.CLIENT)
    with pytest.raises(RuntimeError, match="pacer"):
        await aclose_all()
    assert log == ["redis"]

    register(broken("a"), stage=Stage.WORKER)
    register(broken("b"), stage=Stage.CLIENT)
    with pytest.raises(ExceptionGroup) as caught:
        await aclose_all()
    assert [str(e) for e in caught.value.exceptions] == ["a", "b"]


async def test_a_cancelled_close_propagates_and_keeps_the_rest_registered() -> None:
    log: list[str] = []
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()  # until cancelled

    register(_recorder(log, "redis"), stage=Stage.CONNECTION)
    register(slow, stage=Stage.WORKER)
    task = asyncio.create_task(aclose_all())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == []
    await aclose_all()  # the Redis client is still closed later
    assert log == ["redis"]


async def test_a_resource_made_while_closing_is_closed_too() -> None:
    log: list[str] = []

    def rebuilds() -> None:  # a closing worker whose last act builds a client again
        log.append("worker")
        register(_recorder(log, "client"), stage=Stage.CLIENT)

    register(rebuilds, stage=Stage.WORKER)
    await aclose_all()
    assert log == ["worker", "client"]


async def test_a_closer_that_always_registers_again_does_not_loop_forever() -> None:
    calls: list[int] = []

    def again() -> None:
        calls.append(1)
        register(again, stage=Stage.CLIENT)

    register(again, stage=Stage.CLIENT)
    with pytest.raises(RuntimeError, match="kept registering"):
        await aclose_all()
    assert len(calls) == loopres.MAX_ROUNDS
    loopres._registry.pop(asyncio.get_running_loop(), None)  # leave nothing for the autouse teardown


async def test_loops_are_kept_apart() -> None:
    log: list[str] = []
    register(_recorder(log, "here"), stage=Stage.CLIENT)

    def in_thread() -> None:
        async def main() -> None:
            register(_recorder(log, "there"), stage=Stage.CLIENT)
            await aclose_all()

        asyncio.run(main())

    await asyncio.to_thread(in_thread)
    assert log == ["there"]
    await aclose_all()
    assert log == ["there", "here"]


def test_register_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        register(lambda: None, stage=Stage.CLIENT)
