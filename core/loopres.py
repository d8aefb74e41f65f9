"""Resources that belong to one event loop (a Redis client, httpx clients, a listener task) and ONE
`aclose_all()` that closes the running loop's, dependents before what they depend on.

    def client_for_loop() -> Client:                   # made on first use in each loop
        ...
        loopres.register(_close_client, stage=Stage.CONNECTION)

    async def _close_client() -> None:                 # runs on the loop being closed
        client = _per_loop.pop(asyncio.get_running_loop(), None)
        ...

    await loopres.aclose_all()                         # where the loop ends (tests: after each test)

A closer acts on the running loop (`asyncio.get_running_loop()`) rather than capturing it, so a loop
that ends without `aclose_all()` is not kept alive by its registrations.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Closer", "Stage", "aclose_all", "register"]


class Stage(enum.IntEnum):
    """When a resource closes, first to last; within a stage, the last registered closes first."""

    WORKER = 0  # owns tasks that may use anything below (a background service, a listener)
    CLIENT = 1  # used by workers, built on a connection (the pacer, quota buckets, provider clients)
    CONNECTION = 2  # shared by everything above (the per-loop Redis client)


Closer = Callable[[], Awaitable[object] | None]

# A closer that registers again while it closes (a task that rebuilds its client on the way out) gets
# closed in a later round; a closer that always does would otherwise keep aclose_all() running forever.
MAX_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class _Entry:
    stage: Stage
    seq: int
    close: Closer


_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Entry]] = weakref.WeakKeyDictionary()
# Loops of other threads (asgiref's, a test's asyncio.run in a thread) register too.
_lock = threading.Lock()
_seq = 0


def register(close: Closer, *, stage: Stage) -> None:
    """Have `close()` (sync or async) run, on the running loop, when that loop's resources close."""
    global _seq
    loop = asyncio.get_running_loop()
    with _lock:
        _seq += 1
        _registry.setdefault(loop, []).append(_Entry(stage, _seq, close))


def closing_order(entries: list[_Entry]) -> list[_Entry]:
    """By stage, then the latest registered first (a resource made later may use one made earlier)."""
    return sorted(entries, key=lambda e: (e.stage, -e.seq))


async def aclose_all() -> None:
    """Close every resource registered for the running loop and forget them; safe to call twice.

    Every closer runs even when one fails; the failures are raised together at the end. A cancellation
    is not a failure: it propagates at once, and the closers not yet run stay registered."""
    loop = asyncio.get_running_loop()
    errors: list[Exception] = []
    for _ in range(MAX_ROUNDS):
        with _lock:
            entries = _registry.pop(loop, [])
        if not entries:
            break
        await _close_round(loop, closing_order(entries), errors)
    with _lock:
        if _registry.get(loop):
            errors.append(RuntimeError(f"resources kept registering while closing ({MAX_ROUNDS} rounds)"))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup("closing the event loop's resources", errors)


async def _close_round(
    loop: asyncio.AbstractEventLoop, entries: list[_Entry], errors: list[Exception]
) -> None:
    for i, entry in enumerate(entries):
        try:
            result = entry.close()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            with _lock:  # never swallowed; what is left can still be closed by a later call
                _registry.setdefault(loop, []).extend(entries[i + 1 :])
            raise
        except Exception as exc:  # one failed close must not leak the others
            errors.append(exc)
