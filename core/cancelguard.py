"""A task's cancel that a library swallowed, raised again where a loop can act on it.

redis-py (8.1.0 here) sometimes swallows a cancel that lands during a command: the command returns
normally and the task runs on, while `Task.cancelling()` still counts the request (measured: 89 of
3,000 cancels during a `SET`). A loop that catches `Exception` and goes round again then never stops
(the sweeper hung a service's close for 120 s in CI). Each loop that talks to Redis checks here once
a turn; a cancel that was not swallowed is raised by the await itself, as usual.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task was asked to cancel and has not been (uncancelled)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
