"""Intake held for a burst's leader: while it is on its way to the provider, the server reads no request.

A burst of sends lands at once. The send turn (threads/sendgate.py) parks the sends that arrive with a
thread's first one, but the loop still read and parsed every arrival meanwhile, and each await on the
leader's way (its Redis claims, its rows) was answered only after the turn of the loop that read them:
its provider call began 0.1 s after its request, at 1000 sends over two processes. While a turn has
someone waiting on it, the server stops reading requests on its idle HTTP connections (the kernel keeps
their bytes) and reads them once the leader lets go, or MAX_HOLD_S after the hold began at the latest.

The server installs how to stop and restart its reading (`install`; chatapp/daphne_tuning.py for
daphne); without one, holding does nothing. Its observer hears of each hold once it ends: how long the
reading stood still, and whether MAX_HOLD_S ended it (a leader that slow is worth an operator's look).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Protocol

__all__ = ["MAX_HOLD_S", "Observer", "Server", "hold", "install", "let_go"]

# The leader's way with the intake held takes 20-35 ms (its claims, its rows, its request); a hold never
# outlasts this, whatever it waits for, so other requests wait at most this long.
MAX_HOLD_S = 0.1


class Server(Protocol):
    """Stops and restarts reading requests (never WebSocket frames: a Stop must not wait)."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


# Told of each hold as it ends: (seconds the reading stood still, whether MAX_HOLD_S ended it).
Observer = Callable[[float, bool], None]


class _Hold:
    """Which holders the current hold serves, and those whose hold is spent (timed out): a holder holds
    once, so a leader stuck past MAX_HOLD_S does not stop the reading again with each new arrival."""

    def __init__(self) -> None:
        self.server: Server | None = None
        self.holders: set[Hashable] = set()
        self.spent: set[Hashable] = set()
        self.deadline: asyncio.TimerHandle | None = None
        self.observe: Observer | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.began = 0.0


_hold = _Hold()


def install(
    server: Server | None, *, observe: Observer | None = None, clock: Callable[[], float] = time.monotonic
) -> None:
    """The server whose reading holds stop (None: holds do nothing), and who hears of each hold's end."""
    if _hold.holders:
        _end()
    _hold.server, _hold.observe, _hold.clock = server, observe, clock
    _hold.spent.clear()


def hold(holder: Hashable) -> None:
    """`holder` (a crowded send turn) needs the loop: stop reading requests, unless stopped already;
    for at most MAX_HOLD_S (as it is when the hold begins)."""
    if _hold.server is None or holder in _hold.holders or holder in _hold.spent:
        return
    _hold.holders.add(holder)
    if len(_hold.holders) == 1:
        _hold.server.pause()
        _hold.began = _hold.clock()
        _hold.deadline = asyncio.get_running_loop().call_later(MAX_HOLD_S, _expire)


def let_go(holder: Hashable) -> None:
    """`holder` is done (or gave up): read again once no holder is left."""
    _hold.spent.discard(holder)
    if holder not in _hold.holders:
        return
    _hold.holders.discard(holder)
    if not _hold.holders:
        _end()


def _expire() -> None:
    _hold.spent |= _hold.holders
    _end(expired=True)


def _end(*, expired: bool = False) -> None:
    if _hold.deadline is not None:
        _hold.deadline.cancel()
        _hold.deadline = None
    _hold.holders.clear()
    if _hold.server is not None:
        _hold.server.resume()
        if _hold.observe is not None:
            _hold.observe(_hold.clock() - _hold.began, expired)  # the metric clamps a negative one
