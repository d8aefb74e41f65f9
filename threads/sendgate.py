"""Leader first: in each process, the first send to a thread runs ahead of the sends that arrive with it.

A burst of identical sends lands in one turn of the event loop, and asyncio runs ready work first come,
first served: every await on the first send's way to the provider (the claim, the rows, the request)
waited behind every other arrival's parsing, authentication and coalescing, so its provider call began
only once the process had taken in most of the burst (benchmarks/coalesce_bench.py). Here the first
send to a thread takes the thread's turn; sends to that thread arriving meanwhile wait, doing nothing,
until it has started its generation or joined another's (`release_turn`), then all go on together and
follow it. A turn is never held longer than MAX_WAIT_S, whatever its holder is waiting for.

The holder is also urgent while it holds the turn (core/urgent.py): the arrivals still being read and
parsed run after each of its steps, not before. And once someone waits on its turn (a burst) and the
holder has been vouched for (`vouch`: signed in, and allowed to send to the thread), the process reads
no more requests until it lets go (core/intake.py), so its awaits are not answered only after the loop
has read the rest of the burst.

Only the HTTP send route takes turns: it is where a crowd of separate clients lands at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import weakref
from dataclasses import dataclass, field

from core import intake, urgent

__all__ = ["MAX_WAIT_S", "release_turn", "send_thread_id", "take_turn", "vouch"]

# The longest a send waits for the thread's first one (its claim, two writes and a request, normally
# a few ms): past it, it goes on anyway and is simply not ahead of the others.
MAX_WAIT_S = 0.5

_SEND_PATH = re.compile(r"/api/threads/(\d+)/messages")


@dataclass(eq=False, slots=True)
class _Turn:
    """A thread's turn: set when its holder lets go. A crowd on it holds the intake only once its
    holder is vouched for, so that no anonymous or refused request can stop the process's reading."""

    thread_id: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    crowded: bool = False  # someone waits on it
    vouched: bool = False


# Per event loop (tests run many): thread id -> its turn, while held.
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Turn]] = weakref.WeakKeyDictionary()
# The turn this request holds, if any, for `vouch` and `release_turn` further down the same request.
_held: contextvars.ContextVar[_Turn | None] = contextvars.ContextVar("sendgate_held", default=None)


def send_thread_id(method: str, path: str) -> int | None:
    """The thread a request sends to, if it is a send (POST /api/threads/<id>/messages)."""
    if method != "POST":
        return None
    match = _SEND_PATH.fullmatch(path)
    return int(match.group(1)) if match else None


async def take_turn(thread_id: int, *, max_wait_s: float = MAX_WAIT_S) -> bool:
    """Hold the thread's turn if nobody does (True), else wait until its holder lets go or `max_wait_s`
    passes (False: go on without holding it; those released together run side by side)."""
    turns = _turns.setdefault(asyncio.get_running_loop(), {})
    held = turns.get(thread_id)
    if held is None:
        turn = turns[thread_id] = _Turn(thread_id)
        _held.set(turn)
        urgent.mark()
        return True
    held.crowded = True
    if held.vouched:  # a crowd: the loop is the leader's until it lets go (at most intake.MAX_HOLD_S)
        intake.hold(held)
    try:
        async with asyncio.timeout(max_wait_s):
            await held.done.wait()
    except TimeoutError:
        pass
    return False


def vouch() -> None:
    """The turn this request holds (if any) is a signed-in user's send to a thread they may send to: a
    crowd on it may now hold the intake."""
    turn = _held.get()
    if turn is None:
        return
    turn.vouched = True
    if turn.crowded:
        intake.hold(turn)


def release_turn() -> None:
    """Let go of the turn this request holds (no-op if it holds none, or let go already)."""
    turn = _held.get()
    if turn is None:
        return
    _held.set(None)
    urgent.mark(False)
    turns = _turns.get(asyncio.get_running_loop(), {})
    if turns.get(turn.thread_id) is turn:
        del turns[turn.thread_id]
    turn.done.set()
    intake.let_go(turn)
