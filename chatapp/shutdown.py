"""Graceful shutdown of a daphne process on SIGTERM (a rolling restart, `systemctl stop`, `docker stop`).

daphne has no ASGI lifespan, and Twisted's own SIGTERM handler stops the reactor at once (daphne then
cancels every application instance: generations die mid-stream). So, once the reactor runs, SIGTERM gets
this module's handler instead, which drains on the event loop:

1. stop listening (a proxy in front sends new connections to the other processes);
2. close this process's WebSockets with 1012 (Service Restart): pages reconnect elsewhere and resume
   from a snapshot, while the generations keep running here, broadcasting through Redis;
3. wait, at most SHUTDOWN_GRACE_S, for the generations and the HTTP requests (a send waiting for its
   reply, an SSE stream) to end; a generation still running then is saved with its text as
   `interrupted` (threads/drain.py), which the page offers to Retry;
4. stop the generation service's background tasks and the reactor: daphne cancels what is left of the
   connections and returns; the process exits 0.

A second SIGTERM (or SIGINT) during the drain ends the grace period at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core import later

log = logging.getLogger(__name__)

CLOSE_SERVICE_RESTART = 1012
# After the deadline, how long the requests whose generation was just interrupted get to send its end.
FLUSH_S = 2.0


async def close_websocket(send: Any, code: int) -> None:
    """Close a WebSocket with `code`. autobahn (daphne's WebSocket layer) lets an application close only
    with 1000 or 3000-4999, so for daphne's `send` (`functools.partial(server.handle_reply, protocol)`)
    the close frame goes through the protocol's own sendCloseFrame, which takes any code and then runs
    the close handshake as usual (the application hears websocket.disconnect). Elsewhere: ASGI's close."""
    protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
    send_close_frame = getattr(protocol, "sendCloseFrame", None)
    if callable(send_close_frame) and getattr(protocol, "state", None) == getattr(protocol, "STATE_OPEN", 0):
        send_close_frame(code=code, isReply=False)
        return
    await send({"type": "websocket.close", "code": code})


@dataclass(eq=False)
class _Conn:
    kind: str  # "http" or "websocket"
    send: Any
    closed: bool = False  # a websocket.close was sent: nothing more goes out


@dataclass(eq=False)
class ConnectionTracker:
    """ASGI middleware that knows this process's open connections: it closes the WebSockets with 1012
    when the process drains (and refuses new ones), and tells when no request is left. It must sit
    inside core.writebuffer.WriteBufferProbe, which looks for daphne's own `send`."""

    inner: Any
    live: set[_Conn] = field(default_factory=set)
    draining: bool = False
    _changed: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] not in ("http", "websocket"):
            return await self.inner(scope, receive, send)
        if self.draining and scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": CLOSE_SERVICE_RESTART})
            return None
        conn = _Conn(scope["type"], send)

        async def guarded_send(message: dict[str, Any]) -> None:
            if conn.closed:  # closed by the drain: the consumer's later frames have nowhere to go
                return
            if message["type"] == "websocket.close":
                conn.closed = True
            await send(message)

        self.live.add(conn)
        try:
            return await self.inner(scope, receive, guarded_send)
        finally:
            self.live.discard(conn)
            if self._changed is not None:
                self._changed.set()

    async def close_websockets(self, code: int = CLOSE_SERVICE_RESTART) -> int:
        """Close every open WebSocket of this process with `code`; returns how many."""
        self.draining = True
        closed = 0
        for conn in list(self.live):
            if conn.kind != "websocket" or conn.closed:
                continue
            conn.closed = True
            try:
                await close_websocket(conn.send, code)
                closed += 1
            except Exception:  # already gone
                log.warning("closing a socket failed", exc_info=True)
        return closed

    def count(self, kind: str | None = None) -> int:
        return sum(1 for c in self.live if kind is None or c.kind == kind)

    async def wait_idle(self, *, kind: str | None, deadline: float, clock: Callable[[], float]) -> bool:
        """Wait until no connection of `kind` (None: any) is left, or `deadline` passes. True if idle."""
        self._changed = self._changed or asyncio.Event()
        while self.count(kind):
            left = deadline - clock()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=left)
        return True


@dataclass
class Drain:
    """One process's drain: started by the first SIGTERM, cut short by a second."""

    tracker: ConnectionTracker
    grace_s: float
    stop_listening: Callable[[], int]
    stop_reactor: Callable[[], None]
    clock: Callable[[], float] = time.monotonic
    deadline: float | None = None
    task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        """On the loop: start draining, or, if already draining, end the grace period now."""
        if self.task is not None:
            log.warning("second SIGTERM: not waiting for generations any longer")
            self.deadline = self.clock()
            return
        self.deadline = self.clock() + self.grace_s
        self.task = asyncio.get_running_loop().create_task(self.run(), name="graceful-shutdown")

    def current_deadline(self) -> float:
        assert self.deadline is not None
        return self.deadline

    async def run(self) -> None:
        try:
            await self._drain()
        except BaseException:  # whatever happens, the process must still stop
            log.exception("SIGTERM: the drain failed; stopping now")
            raise
        finally:
            later.run_now()  # the last answers' counters and request_finished, before the loop stops
            self.stop_reactor()

    async def _drain(self) -> None:
        from threads.drain import generations_finish
        from threads.generation import generation_service

        ports = self.stop_listening()
        sockets = await self.tracker.close_websockets()
        log.warning(
            "SIGTERM: stopped listening on %d port(s), closed %d socket(s) with 1012; "
            "waiting up to %.0f s for generations",
            ports,
            sockets,
            self.grace_s,
        )
        interrupted = await generations_finish(deadline=self.current_deadline, clock=self.clock)
        # The requests whose generation ran elsewhere, or was just interrupted, get to send its end.
        until = max(self.current_deadline(), self.clock() + FLUSH_S)
        idle = await self.tracker.wait_idle(kind="http", deadline=until, clock=self.clock)
        # The sockets' consumers leave their groups (through Redis) as their close handshakes end.
        idle = (
            await self.tracker.wait_idle(kind=None, deadline=self.clock() + FLUSH_S, clock=self.clock)
            and idle
        )
        # The service's background tasks (sweep, cancel listener) end here; daphne cancels what is left
        # of the connections once the reactor stops.
        await generation_service().aclose()
        log.warning(
            "SIGTERM: drained (%d generation(s) interrupted%s); stopping",
            interrupted,
            "" if idle else f", {self.tracker.count()} connection(s) still open",
        )


def install_graceful_shutdown(tracker: ConnectionTracker, *, grace_s: float) -> bool:
    """Under daphne (Twisted's reactor already imported), drain on SIGTERM instead of stopping at once.
    False elsewhere (tests, another ASGI server): nothing is installed."""
    if "twisted.internet.reactor" not in sys.modules:
        return False
    from twisted.internet import reactor as twisted_reactor
    from twisted.internet import tcp

    reactor: Any = twisted_reactor  # the module-level reactor is typed as a module

    def stop_listening() -> int:
        ports = [r for r in reactor.getReaders() if isinstance(r, tcp.Port)]
        for port in ports:
            port.stopListening()
        return len(ports)

    drain = Drain(tracker, grace_s, stop_listening, reactor.stop)

    def on_signal(signum: int, frame: Any) -> None:
        # A signal handler may not touch the loop: hand over to it (this also wakes it).
        reactor.callFromThread(drain.begin)

    def take_over_signals() -> None:
        # Runs once the reactor has installed its own handlers (which it does as it starts running).
        signal.signal(signal.SIGTERM, on_signal)

    reactor.callWhenRunning(take_over_signals)
    return True
