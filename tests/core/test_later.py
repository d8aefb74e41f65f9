"""core/later.py: bookkeeping deferred until a batch is due, DELAY_S after its first call."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core import later


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_calls_wait_for_their_batch_then_run_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(later, "DELAY_S", 0.05)
    loop = asyncio.get_running_loop()
    ran: list[tuple[str, float]] = []
    done = asyncio.Event()
    began = loop.time()
    later.call(lambda: ran.append(("first", loop.time())))
    later.call(ran.append, ("second", 0.0))
    later.call(done.set)
    await _turns()
    assert ran == [] and later.pending() == 3
    await asyncio.wait_for(done.wait(), 5)
    assert [name for name, _ in ran] == ["first", "second"]
    assert ran[0][1] - began >= 0.05 - loop._clock_resolution  # type: ignore[attr-defined]
    assert later.pending() == 0


async def test_what_a_batch_defers_waits_for_the_next_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(later, "DELAY_S", 0.01)
    ran: list[str] = []
    first_ran, done = asyncio.Event(), asyncio.Event()

    def first() -> None:
        ran.append("first")
        later.call(ran.append, "deferred by it")
        later.call(done.set)
        first_ran.set()

    later.call(first)
    await asyncio.wait_for(first_ran.wait(), 5)
    assert ran == ["first"] and later.pending() == 2
    await asyncio.wait_for(done.wait(), 5)
    assert ran == ["first", "deferred by it"]


async def test_a_failing_call_is_logged_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(later, "DELAY_S", 0.01)
    ran: list[str] = []
    done = asyncio.Event()

    def broken() -> None:
        raise ValueError("a counter's bug")

    later.call(broken)
    later.call(ran.append, "after")
    later.call(done.set)
    with caplog.at_level(logging.ERROR, logger="core.later"):
        await asyncio.wait_for(done.wait(), 5)
    assert ran == ["after"]
    assert "deferred bookkeeping" in caplog.text and "a counter's bug" in caplog.text


async def test_run_now_runs_what_waits_once() -> None:
    ran: list[int] = []
    later.call(ran.append, 1)
    later.call(ran.append, 2)
    later.run_now()
    assert ran == [1, 2] and later.pending() == 0
    later.run_now()  # nothing waits: nothing runs
    await _turns()
    assert ran == [1, 2]


async def test_what_waits_runs_when_the_loops_resources_close() -> None:
    """The end of a test, or of a process (core/loopres.py): nothing recorded is lost with the loop."""
    from core import loopres

    ran: list[str] = []
    later.call(ran.append, "kept")
    await loopres.aclose_all()
    assert ran == ["kept"] and later.pending() == 0
    later.call(ran.append, "again")  # a loop that goes on registers again
    await loopres.aclose_all()
    assert ran == ["kept", "again"]


def test_a_closed_loop_is_not_kept_alive_by_a_batch_that_never_came_due() -> None:
    """Fails on the first version, whose batch held its timer (and so its loop, the batch's weak key)."""
    import gc
    import weakref

    async def defer() -> None:
        later.call(print, "never")

    loop = asyncio.new_event_loop()
    loop.run_until_complete(defer())
    loop.close()
    closed = weakref.ref(loop)
    del loop
    gc.collect()
    assert closed() is None
