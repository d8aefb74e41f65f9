"""core.urgent: on a loop it is installed in, urgent callbacks run ahead of the ordinary ones waiting."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from core import urgent


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    new = asyncio.new_event_loop()
    assert urgent.install(new)
    yield new
    new.close()


async def _steps(order: list[str], tag: str, n: int, *, marked: bool = False) -> None:
    urgent.mark(marked)
    for i in range(n):
        await asyncio.sleep(0)
        order.append(f"{tag}{i}")


async def _both(*steps: Coroutine[Any, Any, None]) -> None:
    await asyncio.gather(*steps)


def test_urgent_steps_go_ahead_of_the_ordinary_ones_waiting_and_keep_their_own_order(
    loop: asyncio.AbstractEventLoop,
) -> None:
    order: list[str] = []

    async def main() -> None:
        def start(tag: str, marked: bool) -> asyncio.Task[None]:
            return asyncio.create_task(
                _steps(order, tag, 2, marked=marked), context=urgent.urgent_context(marked)
            )

        await asyncio.gather(start("a", False), start("U", True), start("b", False), start("V", True))

    loop.run_until_complete(main())
    assert order == ["U0", "V0", "U1", "V1", "a0", "b0", "a1", "b1"]


def test_without_it_the_same_steps_take_turns(loop: asyncio.AbstractEventLoop) -> None:
    order: list[str] = []
    plain = asyncio.new_event_loop()
    try:
        plain.run_until_complete(_both(_steps(order, "a", 2), _steps(order, "U", 2, marked=True)))
    finally:
        plain.close()
    assert order == ["a0", "U0", "a1", "U1"]


def test_an_urgent_task_that_never_waits_does_not_stop_the_others(loop: asyncio.AbstractEventLoop) -> None:
    order: list[str] = []
    loop.run_until_complete(
        _both(_steps(order, "o", 3), _steps(order, "U", 10 * urgent.MAX_URGENT_RUN, marked=True))
    )
    ordinary = [i for i, step in enumerate(order) if step.startswith("o")]
    assert ordinary[-1] < 3 * (urgent.MAX_URGENT_RUN + 1)  # not after all the urgent steps


def test_a_tasks_wait_on_a_future_resumes_it_first_when_the_future_is_set(
    loop: asyncio.AbstractEventLoop,
) -> None:
    order: list[str] = []

    async def main() -> None:
        fut = loop.create_future()
        waiting = asyncio.Event()

        async def waiter() -> None:
            urgent.mark()
            waiting.set()  # and in the same step, waits on the future
            await fut
            order.append("urgent waiter")

        task = asyncio.create_task(waiter())
        await waiting.wait()
        loop.call_soon(order.append, "queued first")
        fut.set_result(None)
        await task

    loop.run_until_complete(main())
    assert order == ["urgent waiter", "queued first"]


@pytest.mark.parametrize("opened_urgent", [True, False])
def test_the_reads_of_a_connection_opened_in_an_urgent_context_come_first(
    loop: asyncio.AbstractEventLoop, opened_urgent: bool
) -> None:
    """A provider connection opened by a generation: its bytes are handled before the queued work. One
    opened by ordinary work is read in its turn, even by an urgent task."""
    order: list[str] = []
    ours, theirs = socket.socketpair()

    async def main() -> None:
        async def open_reader() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection(sock=ours)

        opening = asyncio.create_task(open_reader(), context=urgent.urgent_context(opened_urgent))
        reader, writer = await opening

        waiting = asyncio.Event()

        async def read() -> None:
            waiting.set()  # and in the same step, waits for bytes
            await reader.read(10)
            order.append("read")

        reading = asyncio.create_task(read(), context=urgent.urgent_context())
        await waiting.wait()
        theirs.send(b"data")
        for i in range(5):  # ordinary work queued before the bytes are seen
            loop.call_soon(order.append, f"queued {i}")
        await reading
        writer.close()

    try:
        loop.run_until_complete(main())
    finally:
        theirs.close()
    assert (order.index("read") == 0) is opened_urgent, order


def test_urgent_context_is_fresh_and_marked_as_asked() -> None:
    urgent.mark()
    try:
        assert urgent.urgent_context().run(urgent.is_urgent) is True
        assert urgent.urgent_context(False).run(urgent.is_urgent) is False
    finally:
        urgent.mark(False)


def test_install_is_once_and_never_on_a_running_loop(loop: asyncio.AbstractEventLoop) -> None:
    assert urgent.install(loop) and urgent.installed(loop)

    async def inside() -> bool:
        return urgent.install(asyncio.get_running_loop())

    plain = asyncio.new_event_loop()
    try:
        assert plain.run_until_complete(inside()) is False  # another thread may append meanwhile
        assert not urgent.installed(plain)
    finally:
        plain.close()
