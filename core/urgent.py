"""Urgent work first: an event loop's ready callbacks from an urgent context run before the others.

asyncio runs ready callbacks first come, first served. When a burst of a thousand sends lands, each
turn of the loop runs every arrival's next step, so each await on the way of the one send that matters
(the burst's leader: its claim, its rows, its provider request) waited a whole turn, tens of
milliseconds. Here a callback whose context is marked urgent (`mark`, `urgent_context`) goes ahead of
the unmarked ones already waiting, behind the urgent ones (so urgent work keeps its own order).
Unmarked work is never held back for long: at most MAX_URGENT_RUN urgent callbacks run between two of
its own.

What is urgent follows contexts: a task's steps and the futures it awaits carry the task's context,
and a connection's reads carry the context it was opened in (a provider connection opened by a
generation is urgent). Hand-written: asyncio has no priorities and no kept library adds them (qloop is
a proof of concept); this is one deque subclass, measured in benchmarks/coalesce_bench.py (README).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
from typing import Any

__all__ = ["install", "installed", "is_urgent", "mark", "urgent_context"]

# At most this many urgent callbacks run in a row: an urgent task that yields without waiting (a loop
# of sleep(0), as the fast demo provider's) must not stop everything else.
MAX_URGENT_RUN = 32

_URGENT: contextvars.ContextVar[bool] = contextvars.ContextVar("urgent", default=False)


def mark(urgent: bool = True) -> None:
    """Mark (or unmark) the current context: this task's later steps, and tasks it starts."""
    _URGENT.set(urgent)


def is_urgent() -> bool:
    return _URGENT.get()


def urgent_context(urgent: bool = True) -> contextvars.Context:
    """A fresh context (nothing of the caller's), marked urgent or not: for a detached task."""
    ctx = contextvars.Context()
    if urgent:
        ctx.run(_URGENT.set, True)
    return ctx


_append = collections.deque.append
_popleft = collections.deque.popleft
_len = collections.deque.__len__


class _UrgentFirst(collections.deque):
    """The loop's ready queue, as asyncio uses it (append, popleft, len, clear), in two queues: urgent
    handles are taken first, unless MAX_URGENT_RUN have been taken since the last ordinary one. Every
    callback of the loop passes here: written for speed (about 0.15 us more a callback than a plain deque)."""

    __slots__ = ("_first", "_run")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._first: collections.deque[Any] = collections.deque()
        self._run = 0  # urgent handles taken since the last ordinary one

    def append(self, handle: Any) -> None:
        ctx = handle._context  # every asyncio Handle has one (its creator's copy when none was given)
        if ctx is not None and ctx.get(_URGENT, False):
            _append(self._first, handle)
        else:
            _append(self, handle)

    def popleft(self) -> Any:
        first = self._first
        if first and (self._run < MAX_URGENT_RUN or not _len(self)):
            self._run += 1
            return _popleft(first)
        self._run = 0
        return _popleft(self)

    def __len__(self) -> int:
        return _len(self) + _len(self._first)

    def __bool__(self) -> bool:
        return _len(self) > 0 or _len(self._first) > 0

    def clear(self) -> None:
        self._first.clear()
        collections.deque.clear(self)


def install(loop: asyncio.AbstractEventLoop) -> bool:
    """Make `loop` run urgent callbacks first; before it runs (another thread may be appending to a
    running loop's queue). False for a loop without asyncio's ready queue (uvloop): nothing changes."""
    if installed(loop):
        return True
    if loop.is_running() or not isinstance(getattr(loop, "_ready", None), collections.deque):
        return False
    loop._ready = _UrgentFirst(loop._ready)  # type: ignore[attr-defined]
    return True


def installed(loop: asyncio.AbstractEventLoop) -> bool:
    return isinstance(getattr(loop, "_ready", None), _UrgentFirst)
