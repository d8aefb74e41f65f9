"""chatapp/shutdown.py's pieces without a server process (tests/deploy/test_rolling_restart.py drives the
whole drain through nginx and real daphne processes)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from chatapp.shutdown import CLOSE_SERVICE_RESTART, ConnectionTracker, Drain, close_websocket
from threads.drain import time_left


class Peer:
    """The server's side of one ASGI connection: what the app sent, and a way to feed it messages."""

    def __init__(self, *first: dict[str, Any]) -> None:
        self.sent: list[dict[str, Any]] = []
        self.spoke = asyncio.Event()
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in first:
            self.inbox.put_nowait(message)

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.spoke.set()


async def socket_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accepts, then sends a frame whenever it receives one, until it hears websocket.disconnect."""
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        await send({"type": "websocket.send", "text": "late"})


async def test_the_drain_closes_open_sockets_with_1012_and_drops_what_the_app_sends_after() -> None:
    tracker = ConnectionTracker(socket_app)
    peer = Peer({"type": "websocket.connect"})
    task = asyncio.create_task(tracker({"type": "websocket"}, peer.receive, peer.send))
    await peer.spoke.wait()
    assert tracker.count("websocket") == 1
    assert await tracker.close_websockets() == 1
    assert peer.sent[-1] == {"type": "websocket.close", "code": CLOSE_SERVICE_RESTART}
    peer.inbox.put_nowait({"type": "websocket.receive", "text": "x"})  # the app answers: nowhere to go
    peer.inbox.put_nowait({"type": "websocket.disconnect", "code": 1012})
    await task
    assert [m["type"] for m in peer.sent] == ["websocket.accept", "websocket.close"]
    assert tracker.count() == 0


async def test_a_draining_process_refuses_new_sockets_with_1012() -> None:
    tracker = ConnectionTracker(socket_app)
    await tracker.close_websockets()
    peer = Peer({"type": "websocket.connect"})
    await tracker({"type": "websocket"}, peer.receive, peer.send)
    assert peer.sent == [{"type": "websocket.close", "code": CLOSE_SERVICE_RESTART}]


async def test_wait_idle_returns_when_the_last_request_ends_or_at_the_deadline() -> None:
    release = asyncio.Event()

    async def slow_http(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await release.wait()

    tracker = ConnectionTracker(slow_http)
    peer = Peer()
    task = asyncio.create_task(tracker({"type": "http"}, peer.receive, peer.send))
    await asyncio.sleep(0)
    now = asyncio.get_running_loop().time
    assert not await tracker.wait_idle(kind="http", deadline=now() + 0.01, clock=now)
    asyncio.get_running_loop().call_soon(release.set)
    assert await tracker.wait_idle(kind="http", deadline=now() + 5, clock=now)
    await task


class FakeAutobahnProtocol:
    STATE_OPEN = 3
    state = 3

    def __init__(self) -> None:
        self.frames: list[tuple[int, bool]] = []

    def sendCloseFrame(self, code: int, isReply: bool) -> None:  # noqa: N802 (autobahn's name)
        self.frames.append((code, isReply))


async def test_under_daphne_the_close_frame_goes_through_autobahn_which_refuses_1012_from_asgi() -> None:
    protocol = FakeAutobahnProtocol()

    async def handle_reply(protocol: Any, message: dict[str, Any]) -> None:
        raise AssertionError("autobahn's sendClose raises for 1012: the frame must not go this way")

    await close_websocket(functools.partial(handle_reply, protocol), 1012)
    assert protocol.frames == [(1012, False)]


@pytest.mark.parametrize(
    ("deadline", "now", "left"), [(10.0, 4.0, 6.0), (10.0, 10.0, 0.0), (10.0, 12.5, 0.0)]
)
def test_time_left(deadline: float, now: float, left: float) -> None:
    assert time_left(deadline=deadline, now=now) == left


async def test_a_second_sigterm_ends_the_grace_period_at_once() -> None:
    clock = [100.0]
    drain = Drain(ConnectionTracker(socket_app), 30.0, lambda: 0, lambda: None, clock=lambda: clock[0])
    drain.task = asyncio.get_running_loop().create_future()  # type: ignore[assignment]  # already draining
    drain.deadline = 130.0
    clock[0] = 105.0
    drain.begin()
    assert drain.current_deadline() == 105.0


@pytest.mark.parametrize("fails", [False, True])
async def test_a_stopping_process_runs_its_deferred_bookkeeping_before_the_reactor_stops(
    fails: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last answers' counters and request_finished (core/later.py) are not lost with the loop."""
    from core import later

    order: list[str] = []

    async def drained(self: Drain) -> None:
        if fails:
            raise RuntimeError("the drain broke")

    monkeypatch.setattr(Drain, "_drain", drained)
    later.call(order.append, "bookkeeping")
    drain = Drain(ConnectionTracker(socket_app), 30.0, lambda: 0, lambda: order.append("reactor stopped"))
    if fails:
        with pytest.raises(RuntimeError):
            await drain.run()
    else:
        await drain.run()
    assert order == ["bookkeeping", "reactor stopped"]
