"""One way to call the ORM from async code on the hot path."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async


# One wrapper per function: building a SyncToAsync inspects the function (a few per cent of the CPU of
# a burst of sends when rebuilt on every call). Only module-level services and selectors pass here.
@functools.cache
def db_async(fn: Callable[..., Any]) -> Any:
    """`fn` as a coroutine function run in a worker thread, closing stale connections like Channels does.

    Not thread-sensitive on purpose: each call is one whole service (its own transaction), so it may
    run on any thread. Thread-sensitive calls would queue behind the request's sync middleware thread,
    or, from tasks that outlive their request (generations), on an executor that has already quit.
    """
    return database_sync_to_async(fn, thread_sensitive=False)
