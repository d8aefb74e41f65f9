"""Leader first (threads/sendgate.py): the first send to a thread in a process runs ahead of the sends
arriving with it; they wait, doing nothing, until it lets go (or MAX_WAIT_S), then go on together."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
from django.urls import resolve

from core import urgent
from tests.conftest import RecordingIntake
from threads import api, sendgate


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("POST", "/api/threads/12/messages", 12),
        ("GET", "/api/threads/12/messages", None),
        ("POST", "/api/threads/12", None),
        ("POST", "/api/threads/12/messages/3/regenerate", None),
        ("POST", "/api/threads/x/messages", None),
        ("POST", "/api/threads/12/messagesX", None),
    ],
)
def test_only_the_http_send_route_takes_turns(method: str, path: str, expected: int | None) -> None:
    assert sendgate.send_thread_id(method, path) == expected


def test_the_route_read_before_routing_is_the_url_confs_send() -> None:
    """The turn is taken before Django routes the request, so sendgate keeps its own pattern: it must
    name the URL the URLconf sends to `thread_messages` (a route renamed there would lose the turn)."""
    match = resolve("/api/threads/12/messages")
    assert match.func is api.thread_messages and match.kwargs == {"thread_id": 12}
    assert sendgate.send_thread_id("POST", "/api/threads/12/messages") == 12


def _in_own_context(coro: Any) -> asyncio.Task[Any]:
    """A task with a context of its own, as each request has."""
    return asyncio.create_task(coro, context=contextvars.Context())


async def test_sends_arriving_with_the_first_wait_until_it_lets_go_then_go_on_together() -> None:
    order: list[str] = []
    let_go = asyncio.Event()

    async def first() -> None:
        assert await sendgate.take_turn(1)
        order.append("first ahead")
        await let_go.wait()
        sendgate.release_turn()

    async def other(name: str) -> None:
        assert not await sendgate.take_turn(1)
        order.append(name)

    tasks = [_in_own_context(first()), *(_in_own_context(other(f"other {i}")) for i in range(3))]
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["first ahead"]  # the others are parked
    let_go.set()
    await asyncio.gather(*tasks)
    assert sorted(order[1:]) == ["other 0", "other 1", "other 2"]
    assert await sendgate.take_turn(1)  # free again: the next send holds it
    sendgate.release_turn()


async def _holding(thread_id: int) -> asyncio.Task[None]:
    """A request that takes the thread's turn and keeps it until cancelled."""
    taken = asyncio.Event()

    async def hold() -> None:
        assert await sendgate.take_turn(thread_id)
        taken.set()
        await asyncio.Event().wait()

    holder = _in_own_context(hold())
    await asyncio.wait_for(taken.wait(), 5)
    return holder


async def test_other_threads_do_not_wait() -> None:
    holder = await _holding(1)
    try:
        assert await asyncio.wait_for(_in_own_context(sendgate.take_turn(2)), 1)
    finally:
        holder.cancel()


async def test_a_turn_held_too_long_lets_the_others_through() -> None:
    holder = await _holding(7)
    try:
        waited = _in_own_context(sendgate.take_turn(7, max_wait_s=0.01))
        assert await asyncio.wait_for(waited, 5) is False
    finally:
        holder.cancel()


async def test_letting_go_twice_or_without_a_turn_is_harmless() -> None:
    sendgate.release_turn()
    assert await sendgate.take_turn(3)
    sendgate.release_turn()
    sendgate.release_turn()
    assert await sendgate.take_turn(3)
    sendgate.release_turn()


async def test_the_turns_holder_is_urgent_until_it_lets_go_and_those_who_waited_are_not() -> None:
    """core/urgent.py: the holder's steps go ahead of the burst's other arrivals."""
    seen: dict[str, bool] = {}

    async def first() -> None:
        assert await sendgate.take_turn(5)
        seen["holding"] = urgent.is_urgent()
        await asyncio.sleep(0)
        sendgate.release_turn()
        seen["let go"] = urgent.is_urgent()

    async def other() -> None:
        assert not await sendgate.take_turn(5)
        seen["waited"] = urgent.is_urgent()

    await asyncio.gather(_in_own_context(first()), _in_own_context(other()))
    assert seen == {"holding": True, "let go": False, "waited": False}


async def test_a_vouched_for_turn_someone_waits_on_holds_the_intake_until_its_holder_lets_go(
    intake_server: RecordingIntake,
) -> None:
    """core/intake.py: a burst's rest is read once its leader is on its way; a lone send holds nothing."""
    calls = intake_server.calls
    assert await sendgate.take_turn(9)
    sendgate.release_turn()
    assert calls == []  # nobody waited
    let_go, vouched, took = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        assert await sendgate.take_turn(9)
        took.set()
        await vouched.wait()
        sendgate.vouch()
        await let_go.wait()
        sendgate.release_turn()

    holder = _in_own_context(first())
    await asyncio.wait_for(took.wait(), 5)
    waiter = _in_own_context(sendgate.take_turn(9))
    for _ in range(3):
        await asyncio.sleep(0)
    assert calls == []  # not before the holder is vouched for (signed in, allowed to send there)
    vouched.set()
    await asyncio.wait_for(intake_server.paused.wait(), 5)
    assert calls == ["pause"]
    let_go.set()
    await holder
    assert await asyncio.wait_for(waiter, 5) is False
    assert calls == ["pause", "resume"]
