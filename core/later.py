"""Bookkeeping that no client waits for runs a moment after the answers (`call`), in batches per loop.

When a burst's generation ends, every process answers its hundreds of followers at once while the
client reads them, on the same few cores. An answer's bookkeeping done then (its counters, Django's
request_finished) takes CPU from the answers still leaving, in this process and in the others. Here it
waits DELAY_S after the first of its batch: one timer per batch, not one per answer. What still waits
when the loop's resources close (core/loopres.py: a stopping process, the end of a test) runs then.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from core import loopres

__all__ = ["DELAY_S", "call", "pending", "run_now"]

log = logging.getLogger(__name__)

# Longer than a burst's answering takes (1000 followers over 2 processes: the 95th answer of a hundred
# leaves ~0.07 s after the first); short enough that counters stay current to the eye.
DELAY_S = 0.15


class _Batch:
    # Nothing here may refer to the loop (its timer does): the loop is this batch's weak key.
    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batch] = weakref.WeakKeyDictionary()
_registered: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def call(fn: Callable[..., Any], *args: Any) -> None:
    """Run `fn(*args)` on this loop once the current batch is due (at most DELAY_S from now)."""
    loop = asyncio.get_running_loop()
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = _Batch()
        loop.call_later(DELAY_S, _run, loop, batch)
        if loop not in _registered:
            _registered.add(loop)
            loopres.register(_close, stage=loopres.Stage.WORKER)
    batch.calls.append((fn, args))


def pending() -> int:
    """How many calls wait on this loop."""
    batch = _batches.get(asyncio.get_running_loop())
    return 0 if batch is None else len(batch.calls)


def run_now() -> None:
    """Run what waits on this loop now (a stopping process keeps its bookkeeping)."""
    loop = asyncio.get_running_loop()
    batch = _batches.get(loop)
    if batch is not None:
        _run(loop, batch)


def _close() -> None:
    _registered.discard(asyncio.get_running_loop())  # a loop that goes on registers again
    run_now()


def _run(loop: asyncio.AbstractEventLoop, batch: _Batch) -> None:
    """The batch's calls, once (its timer finds it empty after `run_now`)."""
    if _batches.get(loop) is batch:
        del _batches[loop]  # what the calls defer goes to the next batch
    calls, batch.calls = batch.calls, []
    for fn, args in calls:
        try:
            fn(*args)
        except Exception:  # one failed record must not lose the others'
            log.exception("deferred bookkeeping %r failed", fn)
